"""The temperature-floor study (``benchmarks/recipes_temperature_floor.py``, issue 20): its
estimators recover known spreads on synthetic groups, and its DOI-aware parse reads the same
reactions and values as the shipped table's parser.

Why these checks: the study's figures decide whether the ≤ 90 °C goal is reachable at all, so
the k → ∞ extrapolation and the variance decomposition must give σ√(2/π) on Gaussian data, and
a paper's several reactions on one target must count once."""

from __future__ import annotations

import importlib.util
import json
import lzma
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _floor_module():
    spec = importlib.util.spec_from_file_location("recipes_temperature_floor",
                                                  ROOT / "benchmarks" / "recipes_temperature_floor.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, mod)
    spec.loader.exec_module(mod)
    return mod


def _gaussian_groups(n_groups: int, per_group: int, sigma_w: float, sigma_b: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    centres = 900.0 + sigma_b * rng.standard_normal(n_groups)
    return {(f"T{i}",): list(c + sigma_w * rng.standard_normal(per_group)) for i, c in enumerate(centres)}


def test_curve_limit_and_variance_components_recover_a_gaussian_floor() -> None:
    floor = _floor_module()
    sigma_w, sigma_b = 100.0, 150.0
    groups = _gaussian_groups(400, 14, sigma_w, sigma_b, seed=0)
    curve = floor.mae_curve(groups, (1, 2, 3, 5, 8, 13), draws=5, seed=0)
    truth = sigma_w * math.sqrt(2 / math.pi)  # E|y − centre|: a perfect centre predictor's MAE
    # one other paper: E|y − y'| = 2σ/√π, the loose figure the study replaces
    assert abs(curve[1][0] - 2 * sigma_w / math.sqrt(math.pi)) < 0.05 * curve[1][0]
    assert curve[1][0] > curve[3][0] > curve[13][0] > truth  # more papers, a better centre
    lim = floor.fit_limit(curve)
    assert abs(lim["a sqrt(1 + c/k)"] - truth) < 0.05 * truth
    vc = floor.variance_components(groups)
    assert abs(vc["sigma_within"] - sigma_w) < 0.05 * sigma_w
    assert abs(vc["sigma_between"] - sigma_b) < 0.15 * sigma_b
    assert abs(vc["mae_vs_group_mean_corrected"] - truth) < 0.05 * truth


def test_clip_rounds_the_median_to_the_planner_grid() -> None:
    floor = _floor_module()
    groups = {("A",): [1500.0, 1500.0]}  # a planner capped at 1300 °C is 200 °C off at best
    assert floor.mae_curve(groups, (1,), draws=2, seed=0)[1][0] == 0.0
    assert floor.mae_curve(groups, (1,), draws=2, seed=0, clip=True)[1][0] == 200.0


def test_a_papers_reactions_on_one_target_count_once() -> None:
    floor = _floor_module()
    rows = [("BaTiO3", ("BaCO3", "TiO2"), 1200.0, 900.0, "doi/a"),
            ("BaTiO3", ("BaO", "TiO2"), 1200.0, 900.0, "doi/a"),
            ("BaTiO3", ("BaCO3", "TiO2"), 1000.0, None, "doi/b"),
            ("SrTiO3", ("SrCO3", "TiO2"), None, 1100.0, "doi/a")]
    by_target = floor.papers_by_group(rows, "firing")
    assert sorted(by_target[("BaTiO3",)]) == [1000.0, 1200.0]
    assert ("SrTiO3",) not in by_target  # no firing temperature reported
    by_set = floor.papers_by_group(rows, "firing", by_set=True)
    assert sorted(by_set[("BaTiO3", ("BaCO3", "TiO2"))]) == [1000.0, 1200.0]
    assert floor.papers_by_group(rows, "calcination")[("BaTiO3",)] == [900.0]


def _op(kind: str, token: str, temps: list[float]) -> dict:
    return {"type": kind, "token": token,
            "conditions": {"heating_temperature": [{"values": temps, "units": "C", "max_value": None}],
                           "heating_time": []}}


def test_parse_with_doi_matches_the_shipped_parser(tmp_path: Path) -> None:
    from recipes._prepare_literature import parse_reactions_full

    floor = _floor_module()

    def material(elements: dict[str, str]) -> dict:
        return {"composition": [{"amount": "1", "elements": elements}], "additives": []}

    def rx(doi: str, target: dict[str, str], precs: list[dict[str, str]], ops: list[dict]) -> dict:
        return {"doi": doi, "target": material(target), "precursors": [material(p) for p in precs],
                "operations": ops}

    doc = {"release_date": "test", "reactions": [
        rx("d/1", {"Ba": "1", "Ti": "1", "O": "3"}, [{"Ba": "1", "C": "1", "O": "3"}, {"Ti": "1", "O": "2"}],
           [_op("HeatingOperation", "calcined", [900.0]), _op("HeatingOperation", "sintered", [1250.0])]),
        rx("d/2", {"Li": "1", "Co": "1", "O": "2"}, [{"Li": "2", "C": "1", "O": "3"}, {"Co": "3", "O": "4"}],
           [_op("HeatingOperation", "heated", [800.0])]),
    ]}
    path = tmp_path / "reactions.json.xz"
    with lzma.open(path, "wt") as fh:
        json.dump(doc, fh)
    shipped = list(parse_reactions_full(path))
    mine = list(floor.parse_with_doi(path))
    assert len(mine) == len(shipped) == 2
    assert mine[0][2:4] == (1250.0, 900.0)  # firing = highest step, calcination = the calcined step
    for (t, ps, fire, _, calc), (t2, ps2, fire2, calc2, doi) in zip(shipped, mine, strict=True):
        assert (t, ps, fire, calc) == (t2, ps2, fire2, calc2)
        assert doi.startswith("d/")
