"""The precursor library: what powders exist, how they behave on heating, what is on the shelf.

Why a data file and not code: the shelf of a real lab changes weekly. The bundled YAML
(``data/precursors.yaml``) lists common commercial powders with melting / decomposition
temperatures, released gases, volatility and handling flags; a campaign adds its own with
``extra_precursors`` (same format) and restricts proposals to ``stock``. A precursor not in
stock is never proposed. Any formula on the Materials Project table may be stocked (e.g. a
pre-reacted BaCuO2); if the library does not describe it, it gets neutral properties and a
note saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pymatgen.core import Composition

from surrogates import UnknownCompositionError
from surrogates import reduced_formula as _reduced_formula

from .types import RecipeError

_ALLOWED_KEYS = {
    "formula",
    "name",
    "kind",
    "melting_c",
    "decomposition_c",
    "decomposes_to",
    "gases",
    "volatile_above_c",
    "handling",
}
_KINDS = {
    "oxide",
    "carbonate",
    "hydroxide",
    "nitrate",
    "phosphate",
    "ammonium",
    "fluoride",
    "oxalate",
    "peroxide",
    "acid",
    "ternary",
    "other",
}
_HANDLING = {
    "hygroscopic",
    "deliquescent",
    "oxidizer",
    "toxic",
    "carcinogen",
    "corrosive",
    "air_sensitive",
    "irritant",
}
# Used when a stocked formula is not described by the library: a middle-of-the-road oxide.
UNKNOWN_MELTING_C = 1200.0


@lru_cache(maxsize=65536)
def reduced_formula(formula: str) -> str:
    """``surrogates.reduced_formula`` (the canonical reduced formula) raising RecipeError, the
    error the planner's callers catch."""
    try:
        return _reduced_formula(formula)
    except UnknownCompositionError as exc:
        raise RecipeError(str(exc)) from None


@dataclass(frozen=True)
class Precursor:
    """One powder. ``formula`` is as written on the bottle; ``key`` is the reduced formula."""

    formula: str
    name: str = ""
    kind: str = "other"
    melting_c: float | None = None
    decomposition_c: float | None = None
    decomposes_to: str | None = None
    gases: tuple[str, ...] = ()
    volatile_above_c: float | None = None
    handling: tuple[str, ...] = ()
    described: bool = True
    elements: frozenset[str] = field(default_factory=frozenset)

    @property
    def key(self) -> str:
        return reduced_formula(self.formula)

    @property
    def reactive_temperature_c(self) -> float:
        """Temperature where the powder stops being its inert self: decomposition or melting,
        whichever comes first (the residue of a decomposition is fresh and reactive)."""
        temps = [t for t in (self.melting_c, self.decomposition_c) if t is not None]
        return min(temps) if temps else UNKNOWN_MELTING_C

    def residue_at(self, temperature_c: float) -> str | None:
        """Formula of the solid present at ``temperature_c`` if the powder decomposed, else None."""
        if (
            self.decomposes_to
            and self.decomposition_c is not None
            and temperature_c >= self.decomposition_c
        ):
            return reduced_formula(self.decomposes_to)
        return None

    def volatile_at(self, temperature_c: float) -> bool:
        return self.volatile_above_c is not None and temperature_c > self.volatile_above_c

    def to_dict(self) -> dict[str, Any]:
        return {
            "formula": self.formula,
            "name": self.name,
            "kind": self.kind,
            "melting_c": self.melting_c,
            "decomposition_c": self.decomposition_c,
            "decomposes_to": self.decomposes_to,
            "gases": list(self.gases),
            "volatile_above_c": self.volatile_above_c,
            "handling": list(self.handling),
            "described": self.described,
        }


def _num(value: Any, key: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecipeError(f"{where}: key {key!r} must be a number of °C or null, got {value!r}")
    if not (-273 < float(value) < 5000):
        raise RecipeError(f"{where}: key {key!r} = {value!r} is not a plausible temperature in °C")
    return float(value)


def _parse_entry(raw: Any, where: str) -> Precursor:
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: each precursor must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _ALLOWED_KEYS
    if unknown:
        raise RecipeError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_ALLOWED_KEYS))}"
        )
    if "formula" not in raw or not isinstance(raw["formula"], str):
        raise RecipeError(f"{where}: key 'formula' is missing or not a string")
    formula = raw["formula"]
    where = f"{where} ({formula})"
    comp = Composition(reduced_formula(formula))
    kind = raw.get("kind", "other")
    if kind not in _KINDS:
        raise RecipeError(f"{where}: kind {kind!r} is not one of {', '.join(sorted(_KINDS))}")
    handling = tuple(raw.get("handling") or ())
    bad = [h for h in handling if h not in _HANDLING]
    if bad:
        raise RecipeError(
            f"{where}: handling flag(s) {', '.join(map(str, bad))} unknown; allowed: "
            f"{', '.join(sorted(_HANDLING))}"
        )
    residue = raw.get("decomposes_to")
    if residue is not None:
        residue_elems = {e.symbol for e in Composition(reduced_formula(residue)).elements}
        if not residue_elems <= {e.symbol for e in comp.elements}:
            raise RecipeError(
                f"{where}: decomposes_to {residue!r} contains elements {formula} does not have"
            )
    return Precursor(
        formula=formula,
        name=str(raw.get("name", "")),
        kind=kind,
        melting_c=_num(raw.get("melting_c"), "melting_c", where),
        decomposition_c=_num(raw.get("decomposition_c"), "decomposition_c", where),
        decomposes_to=residue,
        gases=tuple(str(g) for g in raw.get("gases") or ()),
        volatile_above_c=_num(raw.get("volatile_above_c"), "volatile_above_c", where),
        handling=handling,
        described=True,
        elements=frozenset(e.symbol for e in comp.elements),
    )


def _parse_document(data: Any, source: str) -> list[Precursor]:
    if isinstance(data, dict) and "precursors" in data:
        data = data["precursors"]
    if not isinstance(data, list):
        raise RecipeError(f"{source}: expected a list under key 'precursors'")
    return [_parse_entry(raw, f"{source}: precursors[{i}]") for i, raw in enumerate(data)]


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such precursor file") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None


class PrecursorLibrary:
    """Known precursors by reduced formula, optionally restricted to a stock list."""

    def __init__(self, precursors: Iterable[Precursor]) -> None:
        self._by_key: dict[str, Precursor] = {}
        self._undescribed: dict[str, Precursor] = {}
        for p in precursors:
            self._by_key[p.key] = p  # later entries (campaign extras) override bundled ones

    @classmethod
    def bundled(cls, extra: str | Path | None = None) -> PrecursorLibrary:
        """The shipped library, extended by a campaign's ``extra_precursors`` YAML file."""
        text = resources.files("recipes").joinpath("data/precursors.yaml").read_text("utf-8")
        items = _parse_document(yaml.safe_load(text), "recipes/data/precursors.yaml")
        if extra is not None:
            path = Path(extra)
            items += _parse_document(_read_yaml(path), str(path))
        return cls(items)

    def __contains__(self, formula: str) -> bool:
        return reduced_formula(formula) in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, formula: str) -> Precursor | None:
        return self._by_key.get(reduced_formula(formula))

    def all(self) -> list[Precursor]:
        return list(self._by_key.values())

    def describe(self, formula: str) -> Precursor:
        """The library's entry, or a neutral description of an undescribed stocked formula."""
        hit = self.get(formula)
        if hit is not None:
            return hit
        key = reduced_formula(formula)
        if key in self._undescribed:
            return self._undescribed[key]
        comp = Composition(key)
        self._undescribed[key] = Precursor(
            formula=formula,
            name="(not in the precursor library: neutral properties assumed)",
            kind="other",
            melting_c=None,
            described=False,
            elements=frozenset(e.symbol for e in comp.elements),
        )
        return self._undescribed[key]

    def stocked(self, stock: Sequence[str] | None) -> list[Precursor]:
        """Precursors on the shelf: the whole library when ``stock`` is None."""
        if stock is None:
            return self.all()
        out: dict[str, Precursor] = {}
        for formula in stock:
            p = self.describe(formula)
            out[p.key] = p
        return list(out.values())


def read_stock_file(path: str | Path) -> list[str]:
    """The formulas of a stock file, as written (the dosing station matches these names).

    Accepted formats (why several: labs keep their shelf in whatever their inventory exports):

    * ``.yaml`` / ``.yml``: a list of formulas, or a mapping with a ``stock:`` list;
    * ``.csv`` / ``.tsv``: a table whose FIRST column holds the formulas; further columns
      (amount, lot, supplier, ...) are ignored, a header row (a first cell that is not a
      formula, e.g. ``formula,amount_g``) is skipped, as are blank rows, rows with an empty
      first cell and ``#`` comment lines; the delimiter is a comma, semicolon or tab;
    * anything else: plain text, one or more comma-separated formulas per line, ``#`` comments.

    Every problem is a :class:`RecipeError` naming the file (and the line, or the YAML item):
    a lab's inventory export has hundreds of rows, and "'formula' is not a chemical formula"
    alone did not say where to look.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheet exports carry a BOM
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such stock file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read the stock file: {exc}") from None
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        data = _read_yaml(path)
        if isinstance(data, dict):
            data = data.get("stock")
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise RecipeError(f"{path}: expected a list of formulas (or a 'stock:' list)")
        items = [(f"item {i + 1}", x.strip()) for i, x in enumerate(data) if x.strip()]
    elif suffix in {".csv", ".tsv"}:
        items = _stock_table(path, text, "\t" if suffix == ".tsv" else None)
    else:
        items = []
        for n, line in enumerate(text.splitlines(), start=1):
            items += [(f"line {n}", x.strip()) for x in line.split("#", 1)[0].split(",") if x.strip()]
    if not items:
        raise RecipeError(f"{path}: the stock file lists no formulas")
    for where, formula in items:  # validate now, naming the bad formula and where it is
        try:
            reduced_formula(formula)
        except RecipeError as exc:
            hint = ("" if suffix in {".yaml", ".yml", ".csv", ".tsv"} or "," not in text else
                    " (a table with amounts or a header row? save it as .csv: formulas in the "
                    "first column)")
            raise RecipeError(f"{path}, {where}: {exc}{hint}") from None
    return [formula for _, formula in items]


def on_shelf(stock: list[str], shelf: list[str]) -> tuple[list[str], list[str]]:
    """``(kept, off)``: the shelf's powders that ``stock`` names, in the shelf's spelling and order
    (the dosing station's names), and the stocked powders the shelf lacks, as written.
    Compared by reduced formula, so ``LiOH`` on a list matches ``LiHO`` on a shelf."""
    wanted = {reduced_formula(f) for f in stock}
    have = {reduced_formula(f) for f in shelf}
    kept = [f for f in shelf if reduced_formula(f) in wanted]
    return kept, [f for f in stock if reduced_formula(f) not in have]


def _stock_table(path: Path, text: str, delimiter: str | None) -> list[tuple[str, str]]:
    """``(where, formula)`` of each row of a CSV/TSV stock table: the first cell, header skipped."""
    import csv

    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    if delimiter is None:
        first = lines[0][1]
        delimiter = max((",", ";", "\t"), key=first.count) if any(d in first for d in ",;\t") else ","
    rows = [(n, next(csv.reader([line], delimiter=delimiter), [])) for n, line in lines]
    out: list[tuple[str, str]] = []
    for i, (n, row) in enumerate(rows):
        cell = row[0].strip() if row else ""
        if not cell:
            continue
        if i == 0:
            try:
                reduced_formula(cell)
            except RecipeError:
                continue  # a header row: 'formula', 'precursor', 'name', ...
        out.append((f"line {n}", cell))
    return out
