"""Regenerate ``recipes/data/literature.json.xz`` from the text-mined solid-state reactions.

Source: Kononova et al., "Text-mined dataset of inorganic materials synthesis recipes",
Scientific Data 6, 203 (2019); CederGroupHub/text-mined-synthesis_public, release 2019-12-03
(the copy under ``../shared/data/recipes/solid-state_reactions.json.xz``). The shipped file
keeps, for the TRAINING targets only, each reaction's target formula, precursor formulas,
firing temperature (°C, the highest heating step) and time (h), and the calcination
temperature (°C, the first heating step the paper calls a calcination; None when no step is
so named) — no text, no DOI list.

The split is by target, once, seeded (``literature.held_out``): a target whose hash falls in
the held-out share is left out of the shipped file entirely, so the benchmark
(``benchmarks/recipes_literature.py``) can score the planner on papers it never saw.

Parsing is defensive: variables (x, y) take their first reported value, an oxygen deficiency
(δ) is 0, a mixture of compositions is summed by amount, a dopant named apart (additives,
"Ca0.98Al2O4:Eu") joins the target at 0.01 per formula unit; anything else that is not a number
(element variables, unknown symbols) drops the whole reaction. Temperatures outside 200-2000 °C
and times outside 0.05-500 h are treated as missing (text-mining errors).

Run: ``.venv/bin/python -m recipes._prepare_literature [--data PATH]``
"""

from __future__ import annotations

import argparse
import json
import lzma
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pymatgen.core import Element

from .literature import DATA_FILE, HELD_OUT_FRACTION, SPLIT_SEED, held_out

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "recipes" / "solid-state_reactions.json.xz"
ATTRIBUTION = (
    "Derived from Kononova, O. et al., Text-mined dataset of inorganic materials synthesis "
    "recipes, Scientific Data 6, 203 (2019), CederGroupHub/text-mined-synthesis_public, "
    "release 2019-12-03; training targets only (see recipes/data/README.md)."
)


_EXPR = re.compile(r"^[0-9a-zA-Z_.+\-*/() ]+$")


def _value(expr: str, variables: dict[str, float]) -> float | None:
    """A text-mined amount ("1-x", "1.5*z+26", "3 - del_O"): variables take their first
    reported value, an oxygen-deficiency symbol (del_O) 0; anything else is None."""
    try:
        return float(expr)
    except (TypeError, ValueError):
        pass
    if not isinstance(expr, str) or not _EXPR.match(expr):
        return None
    names = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", expr))
    env = {}
    for n in names:
        if n in variables:
            env[n] = variables[n]
        elif n.startswith("del"):
            env[n] = 0.0
        else:
            return None
    try:
        return float(eval(expr, {"__builtins__": {}}, env))  # noqa: S307 - filtered to arithmetic
    except Exception:  # noqa: BLE001
        return None


def _formula(material: dict[str, Any]) -> str | None:
    """Reduced formula of a material: variables at their first reported value, a mixture of
    compositions summed by amount; None when anything is not a number."""
    from surrogates import reduced_formula

    if material.get("elements_vars"):
        return None
    variables: dict[str, float] = {}
    for name, spec in (material.get("amounts_vars") or {}).items():
        vals = (spec or {}).get("values") or []
        if not vals:
            return None
        variables[name] = float(vals[0])
    amounts: dict[str, float] = {}
    for comp in material.get("composition") or []:
        k = _value(comp.get("amount", "1"), variables)
        if k is None or k <= 0:
            return None
        for el, v in (comp.get("elements") or {}).items():
            x = _value(v, variables)
            if x is None or x < 0:
                return None
            if x > 0:
                amounts[el] = amounts.get(el, 0.0) + k * x
    if not amounts:
        return None
    # dopants the paper names apart ("Ca0.98Al2O4:Eu"): part of the compound made, at 1 %
    for add in material.get("additives") or []:
        m = re.fullmatch(r"x?([A-Z][a-z]?)\d*[+-]?", str(add).strip())
        if m is None or not Element.is_valid_symbol(m.group(1)):
            return None
        amounts[m.group(1)] = amounts.get(m.group(1), 0.0) + 0.01
    try:
        text = "".join(f"{el}{amounts[el]:.4g}" for el in sorted(amounts))
        return reduced_formula(text)
    except Exception:  # noqa: BLE001 - text-mined: anything odd is dropped
        return None


def _firing(operations: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Highest heating temperature (°C) of the heating operations, and its time (h)."""
    best_t, best_h = None, None
    for op in operations:
        if op.get("type") != "HeatingOperation":
            continue
        cond = op.get("conditions") or {}
        temps = []
        for t in cond.get("heating_temperature") or []:
            vals = [v for v in (t.get("values") or []) if isinstance(v, int | float)]
            if t.get("max_value") is not None:
                vals.append(t["max_value"])
            if t.get("units") == "K":
                vals = [v - 273.15 for v in vals]
            temps.extend(v for v in vals if 200 <= v <= 2000)
        if not temps:
            continue
        t = max(temps)
        hours = []
        for h in cond.get("heating_time") or []:
            vals = [v for v in (h.get("values") or []) if isinstance(v, int | float)]
            if h.get("max_value") is not None:
                vals.append(h["max_value"])
            scale = {"h": 1.0, "min": 1 / 60, "day": 24.0, "days": 24.0, "s": 1 / 3600}.get(h.get("units"), None)
            if scale is not None:
                hours.extend(v * scale for v in vals if 0.05 <= v * scale <= 500)
        if best_t is None or t > best_t:
            best_t, best_h = t, (max(hours) if hours else None)
    return best_t, best_h


def _calcination(operations: list[dict[str, Any]]) -> float | None:
    """Temperature (°C) of the first heating step the paper names a calcination ("calcined",
    "calcination", "pre-calcined"...). Why apart from :func:`_firing`: the highest step is
    often a sintering of a pressed pellet, 100-300 °C above the step that forms the phase, and
    published temperature models (SyntMTE 2025) report the two separately."""
    for op in operations:
        if op.get("type") != "HeatingOperation" or "calc" not in str(op.get("token") or "").lower():
            continue
        t, _ = _firing([op])
        if t is not None:
            return t
    return None


def parse_reactions(path: Path) -> Iterator[tuple[str, tuple[str, ...], float | None, float | None]]:
    """(target, sorted precursors, firing °C, hours) for every usable reaction of the file."""
    for t, ps, temp, h, _ in parse_reactions_full(path):
        yield t, ps, temp, h


def usable_reactions(path: Path) -> Iterator[tuple[dict[str, Any], str, tuple[str, ...]]]:
    """(raw record, target, sorted precursors) for every reaction whose target and precursors
    all parse and whose target is not among its precursors — the one definition of a usable
    reaction; the raw record rides along for the fields a caller needs (operations, DOI)."""
    data = json.load(lzma.open(path))
    for r in data["reactions"]:
        target = _formula(r["target"])
        if target is None:
            continue
        precs = []
        for p in r.get("precursors") or []:
            f = _formula(p)
            if f is None:
                break
            precs.append(f)
        else:
            if not precs or target in precs:
                continue
            yield r, target, tuple(sorted(set(precs)))


def parse_reactions_full(
    path: Path,
) -> Iterator[tuple[str, tuple[str, ...], float | None, float | None, float | None]]:
    """(target, sorted precursors, firing °C, hours, calcination °C) for every usable reaction."""
    for r, target, precs in usable_reactions(path):
        ops = r.get("operations") or []
        t, h = _firing(ops)
        yield target, precs, t, h, _calcination(ops)


def build(source: Path, out: Path) -> dict[str, Any]:
    rows = list(parse_reactions_full(source))
    train = [r for r in rows if not held_out(r[0])]
    precursors = sorted({p for _, ps, _, _, _ in train for p in ps})
    index = {p: i for i, p in enumerate(precursors)}
    doc = {
        "attribution": ATTRIBUTION,
        "split": {"seed": SPLIT_SEED, "held_out_fraction": HELD_OUT_FRACTION,
                  "rule": "crc32(f'{seed}:{reduced target formula}') % 10000 < fraction * 10000"},
        "counts": {"parsed_reactions": len(rows), "training_reactions": len(train),
                   "training_targets": len({r[0] for r in train}),
                   "held_out_targets": len({r[0] for r in rows if held_out(r[0])})},
        "precursors": precursors,
        "columns": ["target", "precursor indices", "firing °C (highest step)", "hours", "calcination °C"],
        "reactions": [
            [t, [index[p] for p in ps], None if temp is None else round(temp), None if h is None else round(h, 2),
             None if calc is None else round(calc)]
            for t, ps, temp, h, calc in train
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(out, "wt", preset=9) as fh:
        json.dump(doc, fh, separators=(",", ":"))
    return doc["counts"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=DATA_FILE)
    args = ap.parse_args()
    counts = build(args.data, args.out)
    print(json.dumps(counts), f"-> {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
