"""The world file: every phase, precursor, kinetic and instrument parameter of a simulated lab.

Why a data file and not code: a campaign strategy is rehearsed against a *world*; users must be
able to write, diff and share worlds, and any valid world file must run. The format is documented
in docs/sim_lab.md. Validation errors name the key path and the problem, like the campaign config.
"""

from __future__ import annotations

import bz2
import json
import warnings
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pymatgen.core import Composition, Element, Structure

FORMAT = "synthloop-world/1"

#: Gases a precursor may release; they leave the crucible and never need a crystal structure.
GASES: dict[str, str] = {"CO2": "CO2", "H2O": "H2O", "NH3": "NH3", "NO2": "NO2", "O2": "O2", "SO3": "SO3"}
#: Elements that exist in a solid only inside gas-forming groups (carbonate, hydroxide, nitrate, ammonium).
GAS_FORMING = frozenset({"C", "H", "N"})


class WorldError(ValueError):
    """A world file (or name) that cannot be used; the message names the file, key and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_formula(value: str) -> str:
    try:
        comp = Composition(value)
    except Exception as exc:  # pymatgen raises several types for garbage formulas
        raise ValueError(f"{value!r} is not a chemical formula ({exc})") from None
    if comp.num_atoms <= 0:
        raise ValueError(f"{value!r} has no atoms")
    unknown = [str(el) for el in comp if not isinstance(el, Element)]
    if unknown:
        raise ValueError(f"{value!r} contains {', '.join(unknown)}, which are not elements")
    return value


class StructureSpec(_Strict):
    """A crystal structure as CIF text or a pymatgen ``Structure.as_dict()``; exactly one."""

    cif: str | None = None
    pymatgen: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StructureSpec:
        if (self.cif is None) == (self.pymatgen is None):
            raise ValueError("give exactly one of 'cif' (CIF text) or 'pymatgen' (Structure.as_dict())")
        return self


class PhaseSource(_Strict):
    """Provenance: where the energy and the structure came from (a world must say)."""

    energy: str = Field(min_length=1)
    structure: str = Field(min_length=1)


class Phase(_Strict):
    """One solid phase of the world. ``formula`` is its identity (one polymorph per composition)."""

    formula: str
    kind: Literal["known", "hypothetical"] = "known"
    e_form_ev_per_atom: float = Field(ge=-8.0, le=4.0, description="formation energy, eV/atom")
    melting_point_c: float = Field(gt=0, le=4000)
    structure: StructureSpec
    source: PhaseSource
    #: hypothetical phases: what computation predicts (the A-Lab's targets came with DFT
    #: structures); the lab's ``structure`` differs from it as experiment differs from computation.
    #: Published for targets by ``World.computed_structure``; the energy stays hidden.
    computed_structure: StructureSpec | None = None
    computed_e_form_ev_per_atom: float | None = Field(None, ge=-8.0, le=4.0)

    _formula = field_validator("formula")(classmethod(lambda cls, v: _check_formula(v)))


class Decomposition(_Strict):
    """Thermal decomposition: above ``temperature_c`` one formula unit becomes ``products``."""

    temperature_c: float = Field(gt=0, le=2000)
    products: dict[str, float]

    @field_validator("products")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("a decomposition needs at least one product")
        for formula, coeff in value.items():
            _check_formula(formula)
            if coeff <= 0:
                raise ValueError(f"coefficient of {formula} must be > 0, got {coeff}")
        return value


class Precursor(_Strict):
    """A powder on the shelf. Its formula must also be a phase (it shows up in XRD)."""

    formula: str
    decomposition: Decomposition | None = None
    note: str | None = None

    _formula = field_validator("formula")(classmethod(lambda cls, v: _check_formula(v)))


class Volatility(_Strict):
    """Loss of a volatile oxide (Li2O, MoO3, Bi2O3, ...) at high temperature.

    Rate per hour of the element's content: ``rate_per_h * 2**((T - onset_c)/doubling_c)`` above
    ``onset_c``; bound in a compound it evaporates ``bound_factor`` times slower than as a free oxide.
    """

    element: str
    oxide: str
    onset_c: float = Field(gt=0, le=2000)
    rate_per_h: float = Field(ge=0, le=10)
    doubling_c: float = Field(gt=0, le=1000)
    bound_factor: float = Field(0.3, ge=0, le=1)

    _oxide = field_validator("oxide")(classmethod(lambda cls, v: _check_formula(v)))


class Kinetics(_Strict):
    """Parameters of the reaction model (docs/sim_lab.md explains each)."""

    time_step_min: float = Field(10.0, gt=0, le=120)
    rate_prefactor_per_min: float = Field(0.03, gt=0, le=10)
    tamman_ratio: float = Field(0.57, gt=0.2, le=1.0)
    tamman_width_c: float = Field(40.0, gt=0, le=500)
    activation_scale_c: float = Field(150.0, gt=0, le=2000)
    max_thermal_boost: float = Field(8.0, ge=1, le=1000)
    driving_force_half_mev: float = Field(60.0, gt=0, le=1000)
    driving_force_exponent: float = Field(4.0, gt=0, le=10)
    min_driving_force_mev: float = Field(1.0, ge=0, le=100)
    decomposition_rate_per_min: float = Field(0.2, gt=0, le=100)
    oxygen_mu_intercept_ev: float = Field(0.75, ge=-5, le=5)
    oxygen_mu_slope_ev_per_k: float = Field(-0.0019, ge=-0.01, le=0.0)
    oxygen_mu_offset_ev: dict[str, float] = Field(
        default_factory=lambda: {"air": 0.0, "O2": 0.07, "N2": -0.5, "Ar": -0.5}
    )
    amorphous_probability: float = Field(0.08, ge=0, le=1)
    amorphous_fraction_range: tuple[float, float] = (0.4, 0.9)
    amorphous_background_fraction_max: float = Field(0.04, ge=0, le=1)


class DosingParams(_Strict):
    mass_error_rel: float = Field(0.015, ge=0, le=0.2)
    minutes_per_precursor: float = Field(4.0, ge=0)
    mixing_min: float = Field(10.0, ge=0)
    max_mass_g: float = Field(10.0, gt=0)


class FurnaceParams(_Strict):
    count: int = Field(4, ge=1, le=64)
    capacity: int = Field(4, ge=1, le=64)
    cooling_c_per_min: float = Field(5.0, gt=0)
    load_min: float = Field(5.0, ge=0)
    max_temperature_c: float = Field(1500.0, gt=0)


class XrdParams(_Strict):
    counts_per_min: float = Field(2500.0, gt=0, description="peak-max counts per minute of scan")
    background_counts_per_min: float = Field(12.0, ge=0)
    crystallite_nm: float = Field(80.0, gt=1)
    microstrain: float = Field(0.0008, ge=0, le=0.05)
    instrument_fwhm_deg: float = Field(0.06, gt=0, le=2)
    prep_min: float = Field(6.0, ge=0)


class RecoverParams(_Strict):
    duration_min: float = Field(12.0, ge=0)
    loss_fraction: float = Field(0.03, ge=0, le=0.5)


class Instruments(_Strict):
    dosing: DosingParams = DosingParams()
    furnaces: FurnaceParams = FurnaceParams()
    xrd: XrdParams = XrdParams()
    recover: RecoverParams = RecoverParams()


class Faults(_Strict):
    """Seeded faults a world injects by default (a CLI flag or ``FaultConfig`` overrides)."""

    instrument_error_rate: float = Field(0.0, ge=0, le=1)
    drop_rate: float = Field(0.0, ge=0, le=1)
    duplicate_rate: float = Field(0.0, ge=0, le=1)
    delay_ms: float = Field(0.0, ge=0, le=60_000)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    crash_after_commands: int | None = Field(None, ge=1)


class TargetTruth(_Strict):
    """Hidden truth for one target: whether any recipe the builder tried reaches >= 50 %."""

    makeable: bool
    best_yield: float = Field(ge=0, le=1)
    best_recipe: dict[str, Any] | None = None
    recipes_tried: int = Field(0, ge=0)
    #: the exhaustive search (``sim_lab.stats.target_outcomes``): every shelf set's yield at each
    #: truth temperature; ``sim-lab stats`` reads it instead of firing again
    outcomes: dict[str, Any] | None = None


class Target(_Strict):
    formula: str
    truth: TargetTruth | None = None

    _formula = field_validator("formula")(classmethod(lambda cls, v: _check_formula(v)))


class WorldModel(_Strict):
    """The whole world file, as validated."""

    format: Literal["synthloop-world/1"]
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    systems: list[str] = Field(min_length=1)
    provenance: dict[str, Any] = Field(default_factory=dict)
    phases: list[Phase] = Field(min_length=1)
    precursors: list[Precursor] = Field(min_length=1)
    targets: list[Target] = Field(default_factory=list)
    kinetics: Kinetics = Kinetics()
    volatility: list[Volatility] = Field(default_factory=list)
    instruments: Instruments = Instruments()
    faults: Faults = Faults()

    @field_validator("systems")
    @classmethod
    def _systems(cls, value: list[str]) -> list[str]:
        for system in value:
            elements = system.split("-")
            for el in elements:
                try:
                    Composition(el)
                except Exception:
                    raise ValueError(f"system {system!r}: {el!r} is not an element") from None
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> WorldModel:
        problems: list[str] = []
        seen: dict[str, int] = {}
        for i, phase in enumerate(self.phases):
            key = Composition(phase.formula).reduced_formula
            if key in seen:
                problems.append(
                    f"phases[{i}].formula: {phase.formula!r} repeats phases[{seen[key]}] "
                    "(one polymorph per composition)"
                )
            seen[key] = i
        for i, pre in enumerate(self.precursors):
            key = Composition(pre.formula).reduced_formula
            if key not in seen:
                problems.append(f"precursors[{i}].formula: {pre.formula!r} is not among phases")
            if pre.decomposition is not None:
                for prod in pre.decomposition.products:
                    red = Composition(prod).reduced_formula
                    if red not in seen and red not in GASES:
                        problems.append(
                            f"precursors[{i}].decomposition.products: {prod!r} is neither a phase "
                            f"nor a gas ({', '.join(GASES)})"
                        )
                balance: dict[str, float] = {
                    el.symbol: amt for el, amt in Composition(pre.formula).items()
                }
                for prod, coeff in pre.decomposition.products.items():
                    for el, amt in Composition(prod).items():
                        balance[el.symbol] = balance.get(el.symbol, 0.0) - coeff * amt
                off = {el: round(v, 6) for el, v in balance.items() if abs(v) > 1e-6}
                if off:
                    problems.append(
                        f"precursors[{i}].decomposition.products: do not balance {pre.formula} "
                        f"(precursor minus products: {off})"
                    )
        for i, target in enumerate(self.targets):
            key = Composition(target.formula).reduced_formula
            if key not in seen:
                problems.append(f"targets[{i}].formula: {target.formula!r} is not among phases")
        for i, vol in enumerate(self.volatility):
            if vol.element not in Composition(vol.oxide):
                problems.append(f"volatility[{i}].oxide: {vol.oxide!r} does not contain {vol.element}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _describe_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid world file ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        path = _describe_location(err["loc"])
        if not err["loc"] and err["type"] == "value_error":  # cross-reference checks name keys
            for problem in err["msg"].removeprefix("Value error, ").split("; "):
                lines.append(f"  - {problem}")
            continue
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {path}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"  - {path}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
            if len(shown) > 80:
                shown = shown[:77] + "..."
            lines.append(f"  - {path}: bad value {shown}: {msg}")
    return "\n".join(lines)


class World:
    """A validated world with lookups the physics and instruments need.

    Holds the hidden truth: only the lab and scorers should touch ``phases``/``targets[].truth``;
    a campaign may read ``precursors``, ``systems``, ``target_formulas()``, ``known_structure``,
    ``known_formulas()``, ``computed_formulas()`` and ``computed_structure`` (targets only).
    """

    def __init__(self, model: WorldModel, source: str = "<world>") -> None:
        self.model = model
        self.source = source
        self._phases = {Composition(p.formula).reduced_formula: p for p in model.phases}
        self._structures: dict[str, Structure] = {}

    # -- public, campaign-visible ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.model.name

    @property
    def systems(self) -> list[str]:
        return list(self.model.systems)

    @property
    def precursors(self) -> list[str]:
        """Formulas on the lab's shelf (reduced formulas)."""
        return [Composition(p.formula).reduced_formula for p in self.model.precursors]

    def target_formulas(self) -> list[str]:
        """Hypothetical compositions a campaign could aim at (candidates only, no truth)."""
        return [Composition(t.formula).reduced_formula for t in self.model.targets]

    def known_structure(self, formula: str) -> Structure:
        """Public crystallography of a *known* phase (hypothetical ones raise KeyError)."""
        phase = self.phase(formula)
        if phase.kind != "known":
            raise KeyError(f"{formula} is not a known phase of world {self.name!r}")
        return self.structure(formula)

    def known_formulas(self) -> list[str]:
        return [f for f, p in self._phases.items() if p.kind == "known"]

    def computed_formulas(self) -> list[str]:
        """Targets that publish a computed structure (``computed_structure`` answers for these)."""
        return [f for f in self.target_formulas() if self._phases[f].computed_structure is not None]

    def computed_structure(self, formula: str) -> Structure:
        """Public *computed* structure of a hypothetical target (CHGNet-relaxed, as a DFT database
        would give it); KeyError for a non-target or a world without one (older world files).

        The lab's true structure differs from it as experiment from computation: a cell a few per
        cent smaller and strained, displaced atoms, now and then another cation ordering.
        """
        key = Composition(formula).reduced_formula
        if key not in self.target_formulas():
            raise KeyError(f"{formula} is not a target of world {self.name!r}")
        spec = self._phases[key].computed_structure
        if spec is None:
            raise KeyError(f"world {self.name!r} publishes no computed structure for {formula}")
        cache_key = "computed:" + key
        if cache_key not in self._structures:
            index = list(self._phases).index(key)
            where = f"{self.source}: phases[{index}].computed_structure"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    struct = (Structure.from_str(spec.cif, fmt="cif") if spec.cif is not None
                              else Structure.from_dict(spec.pymatgen))
            except Exception as exc:
                raise WorldError(f"{where}: cannot parse the computed structure of {key}: {exc}") from None
            if struct.composition.reduced_formula != key:
                raise WorldError(f"{where}: composition {struct.composition.reduced_formula} is not {key}")
            self._structures[cache_key] = struct
        return self._structures[cache_key].copy()

    # -- hidden ------------------------------------------------------------------------------
    @property
    def kinetics(self) -> Kinetics:
        return self.model.kinetics

    @property
    def instruments(self) -> Instruments:
        return self.model.instruments

    def phase_formulas(self) -> list[str]:
        return list(self._phases)

    def has_phase(self, formula: str) -> bool:
        try:
            return Composition(formula).reduced_formula in self._phases
        except Exception:
            return False

    def phase(self, formula: str) -> Phase:
        key = Composition(formula).reduced_formula
        try:
            return self._phases[key]
        except KeyError:
            raise KeyError(f"{formula} is not a phase of world {self.name!r}") from None

    def structure(self, formula: str) -> Structure:
        """The phase's true structure, parsed once; a bad CIF raises WorldError naming the key."""
        key = Composition(formula).reduced_formula
        if key in self._structures:
            return self._structures[key]
        phase = self.phase(key)
        index = list(self._phases).index(key)
        where = f"{self.source}: phases[{index}].structure"
        try:
            if phase.structure.cif is not None:
                with warnings.catch_warnings():  # rounding notes from real CIFs are noise here
                    warnings.simplefilter("ignore")
                    struct = Structure.from_str(phase.structure.cif, fmt="cif")
            else:
                struct = Structure.from_dict(phase.structure.pymatgen)
        except Exception as exc:
            raise WorldError(f"{where}: cannot parse the structure of {key}: {exc}") from None
        if struct.composition.reduced_formula != key:
            raise WorldError(
                f"{where}: structure composition {struct.composition.reduced_formula} "
                f"does not match formula {key}"
            )
        self._structures[key] = struct
        return struct

    def check_structures(self) -> None:
        """Parse every structure now (the builder and tests do; loading stays fast without it)."""
        for formula in self._phases:
            self.structure(formula)

    def precursor(self, formula: str) -> Precursor:
        key = Composition(formula).reduced_formula
        for pre in self.model.precursors:
            if Composition(pre.formula).reduced_formula == key:
                return pre
        raise KeyError(f"{formula} is not on the shelf of world {self.name!r}")

    @cached_property
    def decompositions(self) -> dict[str, Decomposition]:
        return {
            Composition(p.formula).reduced_formula: p.decomposition
            for p in self.model.precursors
            if p.decomposition is not None
        }

    def truth(self, formula: str) -> TargetTruth | None:
        key = Composition(formula).reduced_formula
        for target in self.model.targets:
            if Composition(target.formula).reduced_formula == key:
                return target.truth
        return None

    def to_dict(self) -> dict[str, Any]:
        return self.model.model_dump(mode="json", exclude_none=False)

    def save(self, path: str | Path) -> Path:
        """Write the world as JSON (``.json`` or ``.json.bz2``) or YAML (``.yaml``/``.yml``)."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix in {".yaml", ".yml"}:
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        elif path.name.endswith(".json.bz2"):
            path.write_bytes(bz2.compress(json.dumps(data).encode()))
        else:
            path.write_text(json.dumps(data, indent=1), encoding="utf-8")
        return path


def parse_world(data: Any, source: str = "<world>") -> World:
    """Validate an already-parsed world document."""
    if not isinstance(data, dict):
        raise WorldError(
            f"{source}: the top level must be a mapping (format, name, systems, phases, ...), "
            f"not {type(data).__name__}"
        )
    try:
        model = WorldModel.model_validate(data)
    except ValidationError as exc:
        raise WorldError(_format_errors(source, exc)) from None
    return World(model, source)


def bundled_worlds() -> list[str]:
    """Names of the worlds that ship with the package."""
    folder = resources.files("sim_lab") / "data" / "worlds"
    return sorted(p.name.split(".")[0] for p in folder.iterdir() if ".json" in p.name)


_CACHE: dict[str, World] = {}


def load_world(name_or_path: str | Path) -> World:
    """Load a bundled world by name ("demo", "alab-like") or a world file (.yaml/.json/.json.bz2)."""
    key = str(name_or_path)
    if key in _CACHE:
        return _CACHE[key]
    path = Path(key)
    if not path.exists() and "/" not in key and not key.endswith((".yaml", ".yml", ".json", ".bz2")):
        folder = resources.files("sim_lab") / "data" / "worlds"
        candidate = None
        for suffix in (".json.bz2", ".json", ".yaml"):
            entry = folder / f"{key}{suffix}"
            if entry.is_file():
                candidate = Path(str(entry))
                break
        if candidate is None:
            raise WorldError(
                f"no world named {key!r}; bundled worlds: {', '.join(bundled_worlds()) or 'none'} "
                "(or give a path to a world file)"
            )
        path = candidate
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorldError(f"{path}: no such world file") from None
    except OSError as exc:
        raise WorldError(f"{path}: cannot read: {exc}") from None
    try:
        if path.name.endswith(".bz2"):
            raw = bz2.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorldError(f"{path}: cannot decode: {exc}") from None
    try:
        if ".json" in path.name:
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise WorldError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise WorldError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    world = parse_world(data, str(path))
    if str(path) != key:  # cache bundled worlds only: a file on disk may change between loads
        _CACHE[key] = world
    return world
