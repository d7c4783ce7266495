"""Recorded outcomes for a replay, and the candidate space they restrict a planner to.

Why: a lab checks a planner before spending furnace time by replaying it on experiments that
were already run (the ARROWS3 paper did this on its YBCO, NTMO and LTOPO data): the planner may
only choose (precursor set, temperature) pairs that are in the record, and the record answers.

``OUTCOMES.csv`` — one row per recorded experiment:

- ``precursors``: formulas joined by ``;`` (e.g. ``BaCO3;TiO2``);
- ``temperature_c``: the firing temperature;
- ``dwell_min`` (optional): the dwell at that temperature (default 240);
- ``products``: ``FORMULA:FRACTION`` joined by ``;`` (weight fractions, e.g. ``BaTiO3:0.82;TiO2:0.18``).

A malformed table raises :class:`OutcomeTableError` naming the file, the row and the problem.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .library import reduced_formula
from .types import RecipeError

DEFAULT_DWELL_MIN = 240.0
REQUIRED = ("precursors", "temperature_c", "products")


class OutcomeTableError(RecipeError):
    """A recorded-outcomes table that cannot be read; the message names file, row, problem."""


@dataclass(frozen=True)
class Outcome:
    """One recorded experiment."""

    precursors: tuple[str, ...]  # reduced formulas, sorted
    temperature_c: float
    dwell_min: float
    products: dict[str, float] = field(hash=False, compare=False)
    row: int = 0

    def yield_of(self, target: str) -> float:
        key = reduced_formula(target)
        return float(sum(w for f, w in self.products.items() if f == key))


def parse_outcomes(path: str | Path) -> list[Outcome]:
    """Read ``OUTCOMES.csv`` (module docstring); raise :class:`OutcomeTableError` if malformed."""
    path = Path(path)
    if not path.exists():
        raise OutcomeTableError(f"{path}: no such outcomes file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OutcomeTableError(f"{path}: cannot read the outcomes file ({exc})") from None
    return outcomes_from_rows(csv.DictReader(text.splitlines()), str(path))


def outcomes_from_rows(reader: Iterable[dict[str, str]] | csv.DictReader, source: str = "<table>") -> list[Outcome]:
    fields = getattr(reader, "fieldnames", None)
    if fields is not None:
        missing = [c for c in REQUIRED if c not in [f.strip() for f in fields]]
        if missing:
            raise OutcomeTableError(
                f"{source}: missing column(s) {', '.join(missing)} (have: {', '.join(fields)}); "
                "expected precursors, temperature_c, optional dwell_min, products")
    out: list[Outcome] = []
    for i, raw in enumerate(reader, start=2):  # row 1 is the header
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"{source} row {i}"
        if None in raw:
            raise OutcomeTableError(f"{where}: more cells than columns (a ',' inside a cell? join with ';')")
        if not any(row.values()):
            continue
        precs = [p.strip() for p in row.get("precursors", "").split(";") if p.strip()]
        if not precs:
            raise OutcomeTableError(f"{where}: no precursors (formulas joined by ';')")
        keys = []
        for p in precs:
            try:
                keys.append(reduced_formula(p))
            except RecipeError as exc:
                raise OutcomeTableError(f"{where}: precursor {p!r}: {exc}") from None
        temp = _number(row.get("temperature_c", ""), "temperature_c", where)
        if not (0 < temp < 3000):
            raise OutcomeTableError(f"{where}: temperature_c {temp:g} is not a firing temperature in °C")
        dwell_text = row.get("dwell_min", "")
        dwell = DEFAULT_DWELL_MIN if not dwell_text else _number(dwell_text, "dwell_min", where)
        if not (math.isfinite(dwell) and dwell > 0):  # float() accepts 'nan' and 'inf'
            raise OutcomeTableError(f"{where}: dwell_min must be a positive finite number of minutes, "
                                    f"got {dwell_text!r}")
        products: dict[str, float] = {}
        for item in (x.strip() for x in row.get("products", "").split(";")):
            if not item:
                continue
            if ":" not in item:
                raise OutcomeTableError(f"{where}: product {item!r} is not FORMULA:FRACTION")
            f, w = item.rsplit(":", 1)
            try:
                key = reduced_formula(f.strip())
            except RecipeError as exc:
                raise OutcomeTableError(f"{where}: product {f.strip()!r}: {exc}") from None
            frac = _number(w, f"fraction of {f.strip()}", where)
            if not (0.0 <= frac <= 1.0):
                raise OutcomeTableError(f"{where}: fraction of {f.strip()} is {frac:g}, expected a weight fraction in [0, 1]")
            products[key] = products.get(key, 0.0) + frac
        if sum(products.values()) > 1.05:
            raise OutcomeTableError(f"{where}: product fractions sum to {sum(products.values()):.2f} > 1")
        out.append(Outcome(tuple(sorted(set(keys))), float(temp), float(dwell), products, i))
    if not out:
        raise OutcomeTableError(f"{source}: no recorded experiments")
    seen: dict[tuple[tuple[str, ...], float, float], int] = {}
    for o in out:
        k = (o.precursors, round(o.temperature_c, 1), round(o.dwell_min, 1))
        if k in seen:
            raise OutcomeTableError(
                f"{source} row {o.row}: the same experiment ({' + '.join(o.precursors)} at "
                f"{o.temperature_c:g} °C for {o.dwell_min:g} min) is already in row {seen[k]}")
        seen[k] = o.row
    return out


def _number(text: str, name: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise OutcomeTableError(f"{where}: {name} {text!r} is not a number") from None


class CandidateSpace:
    """The experiments a planner may choose for a target: (precursor set, temperature, dwell).

    Given to :class:`RecipePlanner` (``candidate_space=``), it restricts every proposal to a
    recorded row: sets outside it are never enumerated, and conditions snap to the row's.
    """

    def __init__(self, target: str, rows: Sequence[tuple[Sequence[str], float, float]]) -> None:
        self.target = reduced_formula(target)
        self.conditions: dict[tuple[str, ...], list[tuple[float, float]]] = {}
        for precs, t, d in rows:
            key = tuple(sorted({reduced_formula(p) for p in precs}))
            self.conditions.setdefault(key, [])
            if (float(t), float(d)) not in self.conditions[key]:
                self.conditions[key].append((float(t), float(d)))
        for v in self.conditions.values():
            v.sort()

    @classmethod
    def from_outcomes(cls, target: str, outcomes: Sequence[Outcome]) -> CandidateSpace:
        return cls(target, [(o.precursors, o.temperature_c, o.dwell_min) for o in outcomes])

    def covers(self, target: str) -> bool:
        return reduced_formula(target) == self.target

    @property
    def precursors(self) -> list[str]:
        return sorted({p for s in self.conditions for p in s})

    def __len__(self) -> int:
        return sum(len(v) for v in self.conditions.values())
