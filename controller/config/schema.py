"""The campaign file's schema: one strict pydantic model per YAML section, and
:class:`CampaignConfig` holding them.

Why strict: a typo in a lab configuration (``yeild_threshold``) that is silently ignored means a
campaign runs with a default nobody chose, and furnace time is spent on it. Every model here
forbids unknown keys; ``controller.config.loading`` turns pydantic's errors into messages.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

_ELEMENTS = frozenset(
    """H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge
    As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu
    Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu
    Am Cm Bk Cf Es Fm Md No Lr""".split()
)


class _Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Budget(_Strict):
    """When the campaign stops for lack of resources (whichever limit is reached first)."""

    max_experiments: int = Field(100, ge=1, le=1_000_000)
    max_lab_days: float | None = Field(None, gt=0)
    max_targets: int | None = Field(None, ge=1)


class CampaignSection(_Strict):
    name: str = Field(..., min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    budget: Budget = Budget()
    approval_mode: bool = False
    description: str = ""


_SYSTEM_RE = re.compile(r"^[A-Z][a-z]?(-[A-Z][a-z]?)+$")


class SubstitutionSource(_Strict):
    """GNoME-style ion substitution on seed structures of known phases."""

    kind: Literal["substitution"]
    threshold: float = Field(1e-3, gt=0, lt=1, description="pymatgen substitution probability cutoff")
    generator: Literal["whole_site", "pool"] = Field(
        "whole_site", description="'pool': also prototype enumeration, isovalent and aliovalent partial "
        "substitution, radius and odd-chemistry rules (surrogates.build_candidate_pool)")


class CifDirSource(_Strict):
    """Candidates read from a folder of CIF files (e.g. from a collaborator)."""

    kind: Literal["cif_dir"]
    path: str = Field(..., min_length=1)


class PrototypeSource(_Strict):
    """Decoration of the shipped library of public prototype structures (perovskite, spinel,
    rocksalt, layered oxides, ...) for compositions without a structure of their own."""

    kind: Literal["prototypes"]
    relax: Literal["none", "sevenn", "auto"] = Field("none", description="relax predicted structures "
                                                      "with offline SevenNet-0 ('auto': if installed)")


class ScreenSource(_Strict):
    """The best survivors of a ``synthloop screen`` output folder (Parquet chunks + manifest),
    best first by optimistic decomposition energy; needs the ``scale`` extra (pyarrow)."""

    kind: Literal["screen"]
    path: str = Field(..., min_length=1)
    top: int = Field(1000, ge=1, le=1_000_000, description="survivors taken into the pool")


CandidateSource = Annotated[
    SubstitutionSource | CifDirSource | PrototypeSource | ScreenSource, Field(discriminator="kind")
]


class ChemicalSpace(_Strict):
    systems: list[str] = Field(..., min_length=1)
    candidate_sources: list[CandidateSource] = Field(
        default_factory=lambda: [SubstitutionSource(kind="substitution")]
    )
    max_candidates: int = Field(5000, ge=1, le=10_000_000)

    @field_validator("systems")
    @classmethod
    def _systems_are_element_lists(cls, systems: list[str]) -> list[str]:
        for system in systems:
            if not _SYSTEM_RE.match(system):
                raise ValueError(
                    f"{system!r} is not a chemical system; write element symbols joined by '-', e.g. 'Li-Mn-O'"
                )
            unknown = [el for el in system.split("-") if el not in _ELEMENTS]
            if unknown:
                raise ValueError(f"{system!r} names unknown element(s) {', '.join(unknown)}")
            if len(set(system.split("-"))) != len(system.split("-")):
                raise ValueError(f"{system!r} repeats an element")
        return systems


class SurrogateSection(_Strict):
    # one of surrogates' architectures, or several joined by '+' (members alternate):
    # schnet+cgcnn was best on held-out polymorphs, cgcnn alone on perov_5 (docs/benchmarks.md)
    architecture: Literal["cgcnn", "megnet", "schnet", "angular", "schnet+cgcnn",
                          "cgcnn+megnet"] = "cgcnn"
    ensemble_size: int = Field(5, ge=1, le=64)
    hidden: int = Field(64, ge=4, le=1024)
    layers: int = Field(3, ge=1, le=12)
    cutoff_angstrom: float = Field(8.0, gt=1.0, le=15.0)
    max_neighbors: int = Field(12, ge=1, le=64)
    edge_activation: Literal["softplus", "relu", "hard"] = Field(
        "softplus",
        description="CGCNN message activations: 'softplus' (the published sigmoid-gate x softplus, "
        "default); 'hard' (hardsigmoid x ReLU) with hidden 48 and max_neighbors 8 is the light model "
        "for pools of ~100-atom cells: ~2.2x the inference rate, 5-20 % higher MAE "
        "(docs/benchmarks.md)",
    )
    epochs: int = Field(150, ge=1, le=10_000)
    learning_rate: float = Field(3e-3, gt=0, lt=1)
    retrain_every: int = Field(8, ge=1, description="retrain after this many new XRD-verified results")
    auxiliary_targets: list[
        Literal["mean_electronegativity", "electronegativity_spread", "charge_balanced"]
    ] = Field(
        default_factory=lambda: ["mean_electronegativity", "charge_balanced"],
        description="expert descriptors learned as extra outputs in training only (free at prediction)",
    )
    # where ensemble members train: "local" (in process / spawn pool) or "ray" (one Ray task per
    # member; the optional scale extra; ray_address joins a cluster, else a local instance starts)
    training: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    prior: Literal["none", "sevennet_kernel"] = Field(
        "none",
        description="'sevennet_kernel': the formation-energy output is a kernel-ridge (GP) prior on "
        "site-pooled features of the offline SevenNet-0 potential plus the ensemble trained on its "
        "out-of-fold residual, with the prior's spread added to the members' (perov_5 held-out MAE "
        "0.0525 eV/atom against 0.083 for the ensemble alone); needs the optional 'sevenn' package "
        "and ~30 ms of CPU per pool structure once per process. 'none' (default): the ensemble alone, "
        "no optional package",
    )

    @field_validator("prior")
    @classmethod
    def _prior_installed(cls, v: str) -> str:
        # why here: a campaign that asks for the prior must fail at config check, not after
        # hours of pretraining; find_spec looks for the package without importing torch
        import importlib.util

        if v != "none" and importlib.util.find_spec("sevenn") is None:
            raise ValueError(f"prior {v!r} needs the optional 'sevenn' package, which is not "
                             "installed (pip install 'synthloop[pretrained]'); or set prior: none")
        return v


class AcquisitionSection(_Strict):
    # qehvi: expected hypervolume improvement over stability and (once learned) predicted yield
    strategy: Literal["qlogei", "qucb", "thompson", "greedy", "random", "qehvi"] = "qlogei"
    objective: Literal["stable_and_makeable", "stability", "expected_yield"] = "stable_and_makeable"
    batch_size: int = Field(4, ge=1, le=1024)
    ucb_beta: float = Field(2.0, gt=0)
    stability_threshold_ev: float = Field(
        0.05, ge=0, le=1, description="decomposition energy (eV/atom) below which a phase counts as stable"
    )


class RecipeSection(_Strict):
    max_recipes_per_target: int = Field(5, ge=1, le=50)
    yield_threshold: float = Field(0.5, gt=0, le=1)
    stock: list[str] | str | None = Field(
        None, description="precursor formulas on the shelf, or a file listing them; None = whole library"
    )
    extra_precursors: str | None = Field(None, description="YAML file of additional precursors")
    min_temperature_c: float = Field(300, ge=20, le=2000)
    max_temperature_c: float = Field(1300, ge=20, le=2000)
    min_driving_force_mev: float = Field(50, ge=0, le=2000)

    @model_validator(mode="after")
    def _temperature_window(self) -> RecipeSection:
        if self.min_temperature_c >= self.max_temperature_c:
            raise ValueError(
                f"min_temperature_c ({self.min_temperature_c}) must be below max_temperature_c ({self.max_temperature_c})"
            )
        return self


class AnalysisSection(_Strict):
    """How patterns are analysed and when a target counts as made.

    Why a lower bound: a weight fraction from whole-pattern fitting carries a fit sigma that is
    too small (systematic misfit, minor phases below detection) and, for a partly amorphous
    sample, an estimated amorphous share; claiming on the point estimate made false claims.
    """

    workers: int = Field(1, ge=0, le=64, description="processes fitting XRD patterns beside the "
                         "controller; 0 = in the controller's own worker threads")
    claim_sigma: float = Field(2.0, ge=0, le=10, description="made only when yield - claim_sigma x "
                               "sigma reaches the threshold")
    systematic_yield_std: float = Field(0.03, ge=0, le=0.5, description="added in quadrature to the "
                                        "fit's yield sigma")
    amorphous_threshold: float = Field(4.0, gt=0, le=1000, description="chi^2 per point a broad "
                                       "hump must remove, in units of the fit's reduced chi^2, to count "
                                       "as amorphous content")
    verify_repeats: int = Field(1, ge=0, le=5, description="repeats of a recipe whose yield clears the "
                                "threshold but whose lower bound does not")
    screen_iterations: int = Field(6, ge=1, le=100, description="function evaluations of each "
                                   "screening refit while phases are added and dropped (the final "
                                   "fit runs to convergence); 6 costs 25 % less CPU than the "
                                   "library's 12 at the same yields on simulated campaign patterns")
    preset: Literal["simulated", "real_samples"] = Field(
        "simulated", description="analysis settings of the XRD instrument: 'simulated' (the "
        "library's defaults, measured on the simulated lab) or 'real_samples' (tuned on real A-Lab "
        "products: fixed-slit spill-over, look-alike and cell rules, systematic sigma)")
    instrument_profile: str | None = Field(
        None, description="instrument profile YAML from `synthloop xrd calibrate` (peak widths, zero "
        "shift, spill-over angle learned from a reference scan); overrides the preset's instrument part")


class FaultSection(_Strict):
    """Faults a simulated lab injects on purpose, to rehearse recovery."""

    instrument_error_rate: float = Field(0.0, ge=0, le=1)
    drop_rate: float = Field(0.0, ge=0, le=1)
    duplicate_rate: float = Field(0.0, ge=0, le=1)
    delay_ms: float = Field(0.0, ge=0, le=60_000)


class AuthSection(_Strict):
    enabled: bool = False
    keys_dir: str | None = None

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> AuthSection:
        if self.enabled and not self.keys_dir:
            raise ValueError("auth.enabled is true but auth.keys_dir is not set")
        return self


class LabSection(_Strict):
    kind: Literal["simulated", "drivers"] = "simulated"
    world: str | None = Field("demo", description="bundled world name or path to a world file")
    bind: str = Field("tcp://127.0.0.1:*", description="ROUTER endpoint the controller binds")
    speedup: float = Field(1e6, gt=0, description="simulated seconds per wall second")
    heartbeat_s: float = Field(1.0, gt=0, le=600)
    lost_after_heartbeats: int = Field(5, ge=1, le=1000)
    step_retries: int = Field(2, ge=0, le=20)
    driver_wait_s: float = Field(
        60.0, gt=0, le=86_400,
        description="how long run waits for instrument drivers covering every step to connect "
                    "(a log line every 10 s names what is missing) before it gives up; the "
                    "campaign is left as it was, a later run waits again")
    auth: AuthSection = AuthSection()
    faults: FaultSection = FaultSection()
    id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
        description="this lab's name when several labs (one controller each) share a campaign on "
                    "PostgreSQL; unset = the campaign's only controller")
    lease_s: float = Field(30.0, gt=0, le=3600,
                           description="a lab's claim on an experiment lasts this long without a heartbeat")
    abandon_after_s: float = Field(
        600.0, gt=0, description="an experiment already on a silent lab's instruments is given up "
                                 "(instrument failure, recipe re-queued) after this long")

    @field_validator("bind")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not re.match(r"^(tcp://[^\s:]+:(\d+|\*)|ipc://\S+|inproc://\S+)$", value):
            raise ValueError(
                f"{value!r} is not a ZeroMQ endpoint; use tcp://HOST:PORT, tcp://HOST:* or ipc://PATH"
            )
        return value

    @model_validator(mode="after")
    def _world_when_simulated(self) -> LabSection:
        if self.kind == "simulated" and not self.world:
            raise ValueError("lab.kind is 'simulated' but no lab.world is given")
        return self


class StoreSection(_Strict):
    url: str = Field(
        "sqlite:///campaign.db",
        description="SQLAlchemy URL; a relative sqlite path is relative to the campaign directory",
    )

    @field_validator("url")
    @classmethod
    def _supported_url(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
            raise ValueError(
                f"{value!r} is not a supported database URL; use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            )
        return value


class WebSection(_Strict):
    token: str | None = Field(None, min_length=8, description="bearer token for write actions")
    read_only: bool = False


class CampaignConfig(_Strict):
    """The whole campaign, as written in one YAML file."""

    campaign: CampaignSection
    chemical_space: ChemicalSpace
    surrogate: SurrogateSection = SurrogateSection()
    acquisition: AcquisitionSection = AcquisitionSection()
    recipes: RecipeSection = RecipeSection()
    analysis: AnalysisSection = AnalysisSection()
    lab: LabSection = LabSection()
    store: StoreSection = StoreSection()
    web: WebSection = WebSection()
