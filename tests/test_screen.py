"""Screening at scale (issue 24): the pool format, the funnel's graphs, Ray screens that resume.

One local Ray instance serves the module (started and shut down by a module fixture); the
composition model is fitted once per module into a shared cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from surrogates.screening import FunnelSettings, PoolError
from surrogates.screening import pool as poolmod

ray = pytest.importorskip("ray", reason="the optional 'scale' extra (ray, pyarrow) is not installed")
pytest.importorskip("pyarrow")

POOL_LINES = [
    "# a small pool: two generators and one explicit candidate",
    json.dumps({"prototype": "perovskite SrTiO3", "substitute": {
        "Sr": ["Ca", "Sr", "Ba", "La", "Na", "K"], "Ti": ["Ti", "Zr", "Mn", "Al", "Nb"], "O": ["O", "S", "F"]}}),
    json.dumps({"prototype": "spinel", "substitute": {"Mg": ["Mg", "Zn", "Co"], "Al": ["Al", "Cr", "Fe", "Ga"]},
                "id": "sp"}),
    "",
]


def _write_pool(path: Path, extra: list[str] | None = None) -> Path:
    path.write_text("\n".join(POOL_LINES + (extra or [])) + "\n")
    return path


# --------------------------------------------------------------------------- pool format (no Ray)


@pytest.mark.parametrize(("line", "needle"), [
    ('{"prototype": "perovskite SrTiO3", "substitute": {"Sr": ["Ca"]}', "line 2: not JSON"),
    ('{"prototype": "no-such-thing"}', "line 2: field 'prototype': unknown prototype 'no-such-thing'"),
    ('{"prototype": "perovskite SrTiO3", "substitute": {"Sr": ["Ca", "Xx"]}}', "field 'substitute.Sr': 'Xx'"),
    ('{"prototype": "perovskite SrTiO3", "substitute": {"Fe": ["Ca"]}}', "field 'substitute.Fe': 'Fe' is not an element"),
    ('{"prototype": "perovskite SrTiO3", "limit": 0}', "field 'limit'"),
    ('{"id": "x"}', "line 2: an explicit candidate needs exactly one of 'structure'"),
    ('{"id": "x", "structure": {"a": 1}}', "field 'structure'"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_pool_line_is_named_by_line_and_field(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text("# header\n" + line + "\n")
    with pytest.raises(PoolError) as err:
        poolmod.scan(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_chunks_cover_every_candidate_once_and_skip_is_exact(tmp_path: Path) -> None:
    path = _write_pool(tmp_path / "pool.jsonl")
    info = poolmod.scan(path)
    assert info.n_candidates == 6 * 5 * 3 + 3 * 4
    chunks = list(poolmod.chunks(path, 7))
    assert [c.start for c in chunks] == list(range(0, info.n_candidates, 7))
    covered = [seg.first_index + k for c in chunks for seg in c.segments for k in range(seg.hi - seg.lo)]
    assert covered == list(range(info.n_candidates))
    again = list(poolmod.chunks(path, 7, skip={0, 3}))
    assert [c.number for c in again] == [c.number for c in chunks if c.number not in (0, 3)]
    assert again[0] == chunks[1]
    # the generator's mixed radix enumerates every combination exactly once
    line = chunks[0].segments[0].line
    combos = {tuple(sorted(poolmod.generated_elements(line, j).items())) for j in range(line.count)}
    assert len(combos) == line.count == 90


def test_vectorised_charge_balance_is_the_descriptor_rule() -> None:
    """The funnel's numpy charge balance must agree with ``descriptors.charge_balanced``."""
    from pymatgen.core import Composition

    from surrogates.descriptors import charge_balanced as one_by_one
    from surrogates.screening.composition import CompositionBatch, charge_balanced

    rng = np.random.default_rng(0)
    symbols = ["Li", "Na", "Mg", "Ca", "Ti", "Mn", "Fe", "Co", "Ni", "Cu", "Al", "La", "Nb", "W", "O", "S", "F",
               "N", "Cl", "P", "Xe"]
    comps = [{el: float(rng.integers(1, 5)) for el in rng.choice(symbols, size=rng.integers(1, 5), replace=False)}
             for _ in range(300)]
    got = charge_balanced(CompositionBatch.from_dicts(comps))
    want = np.array([one_by_one(Composition(c)) > 0.5 for c in comps])
    assert 20 < want.sum() < 280  # both kinds present
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- models (module scope)


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    """A small real ensemble trained on public formation energies (2 members, 2 epochs)."""
    from surrogates.screening import pretrain_model

    return pretrain_model(members=2, epochs=2, hidden=16, limit=24, seed=3).to_bytes()


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screen-models")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    temp = Path("/tmp") / f"sl-ray-test-{os.getpid()}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 1024 * 1024,
             _temp_dir=str(temp), runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def test_decorated_template_graph_is_the_graph_of_the_decorated_structure(model_bytes: bytes) -> None:
    """The fast path (template graph with scaled distances) must score exactly what building the
    decorated structure's graph from scratch scores."""
    from surrogates import Ensemble, build_graph
    from surrogates.screening.composition import MAX_Z
    from surrogates.screening.funnel import ChunkScreener

    screener = ChunkScreener(model_bytes, {"element_weights": np.zeros((MAX_Z + 1, 3)),
                                           "global_weights": np.zeros(5), "intercept": np.zeros(1)},
                             np.zeros(0, dtype=np.int64), FunnelSettings(hull=False).to_dict())
    ens = Ensemble.from_bytes(model_bytes)
    cfg = ens.config
    for tid, zs in [("perovskite SrTiO3", [8, 56, 40]), ("perovskite SrTiO3", [16, 11, 41]),
                    ("spinel MgAl2O4", [24, 30, 8]), ("rocksalt MgO", [38, 8])]:
        tpl = screener._template(tid)
        fast = screener._generated_graph(tpl, np.array(zs))
        structure = screener.decorated_structure(tid, np.array(zs))
        slow = build_graph(structure, cfg.cutoff, cfg.max_neighbors, cfg.angular)
        a, b = ens.predict_graphs([fast]).mean, ens.predict_graphs([slow]).mean
        np.testing.assert_allclose(a, b, atol=1e-4)


# --------------------------------------------------------------------------- Ray screens


def _options(**kw):
    from surrogates.screening import ScreenOptions

    return ScreenOptions(**{"chunk": 16, "workers": 2, "funnel": FunnelSettings(hull=False,
                                                                               composition_max_ev=0.0,
                                                                               gnn_max_ev=5.0), **kw})


def _rows(out: Path) -> dict[int, dict]:
    import pyarrow.parquet as pq

    rows = {}
    for f in sorted((out / "chunks").glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            assert r["index"] not in rows, f"candidate {r['index']} written twice"
            rows[r["index"]] = r
    return rows


def _explicit_lines() -> list[str]:
    from pymatgen.core import Lattice, Structure

    good = Structure(Lattice.cubic(4.2), ["Ca", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    broken = good.as_dict()
    broken["sites"][0]["species"] = [{"element": "Qq", "occu": 1}]
    return [json.dumps({"id": "cto", "structure": good.as_dict()}), json.dumps({"id": "bad", "structure": broken})]


def test_screen_resumes_after_a_stop_and_matches_one_pass(tmp_path: Path, local_ray, model_bytes: bytes,
                                                          model_cache: Path) -> None:
    from surrogates.screening import ScreenError, read_survivors, run_screen

    pool = _write_pool(tmp_path / "pool.jsonl", _explicit_lines())
    n = poolmod.scan(pool).n_candidates
    one = run_screen(pool, tmp_path / "one", model_bytes, _options(model_cache=model_cache), progress=False)
    assert one["status"] == "complete" and one["candidates_done"] == n
    stages = {s["stage"]: s for s in one["stages"]}
    assert list(stages) == ["expand", "charge_balance", "novelty", "composition", "gnn"]
    assert stages["expand"]["n_in"] == n
    for a, b in zip(one["stages"], one["stages"][1:], strict=False):
        assert b["n_in"] == a["n_out"]  # each stage sees exactly the survivors of the one before
    assert stages["gnn"]["n_in"] > 0, "the test pool must reach the graph network"
    r1 = _rows(tmp_path / "one")
    assert sorted(r1) == list(range(n))
    # the explicit candidates: the good one scored, the broken one reported with its line
    cto, bad = r1[n - 2], r1[n - 1]
    assert cto["id"] == "cto" and cto["error"] is None and cto["charge_balanced"]
    assert bad["dropped_at"] == "expand" and "pool line 6" in bad["error"]

    # a screen stopped after 2 chunks, then a crash's debris: a torn log line, a half-written file
    out = tmp_path / "two"
    part = run_screen(pool, out, model_bytes, _options(model_cache=model_cache, max_chunks=2, workers=1),
                      progress=False)
    assert part["status"] == "partial" and part["chunks_done"] == 2
    with (out / "chunks.jsonl").open("a") as fh:
        fh.write('{"chunk": 5, "file": "chunks/chunk-0000')
    (out / "chunks" / "chunk-000005.parquet.tmp").write_bytes(b"PAR1 torn")
    with pytest.raises(ScreenError, match="--resume"):
        run_screen(pool, out, model_bytes, _options(model_cache=model_cache), progress=False)
    done = run_screen(pool, out, None, _options(model_cache=model_cache, resume=True), progress=False)
    assert done["status"] == "complete" and done["candidates_done"] == n
    assert done["runs"][-1]["chunks"] == done["n_chunks"] - 2  # finished chunks were not redone
    # resuming a finished screen does nothing, without starting Ray workers, and says so
    from surrogates.screening.runner import format_summary

    again = run_screen(pool, out, None, _options(model_cache=model_cache, resume=True), progress=False)
    assert again["status"] == "complete" and again["runs"][-1]["nothing_left"]
    assert again["runs"][-1]["workers"] == 0 and "startup_s" not in again["runs"][-1]
    assert "nothing left to screen" in format_summary(again) and "workers ," not in format_summary(again)
    r2 = _rows(out)
    assert sorted(r2) == list(range(n))
    for i in range(n):
        for col in ("id", "dropped_at", "gnn_e_form", "comp_e_form"):
            assert r1[i][col] == r2[i][col] or (r1[i][col] != r1[i][col] and r2[i][col] != r2[i][col])

    # the survivors come back as campaign candidates with structures, best first
    cands = read_survivors(out, top=3)
    assert 0 < len(cands) <= 3
    assert all(c.structure.composition.reduced_formula == c.formula for c in cands)
    scores = [c.provenance["gnn_e_form"] - c.provenance["gnn_e_form_std"] for c in cands]
    assert scores == sorted(scores)  # no hull stage here: ranked by the ensemble's optimistic E_form
    best = min((r["gnn_e_form"] - r["gnn_e_form_std"], i) for i, r in r2.items() if r["survived"])
    assert cands[0].provenance["index"] == best[1]
    # a campaign takes its pool from the screen (candidate source kind "screen")
    from controller.config import CampaignConfig, preflight
    from controller.loop.brain import Brain

    cfg = CampaignConfig.model_validate({
        "campaign": {"name": "from-screen"}, "chemical_space": {
            "systems": ["Ca-Ti-O"], "candidate_sources": [{"kind": "screen", "path": str(out), "top": 3}]}})
    pool_ids = [c.id for c in Brain(cfg).candidates()]
    assert pool_ids and set(pool_ids) <= {c.id for c in cands}
    assert not [e for e in preflight(cfg, tmp_path)[0] if "candidate_sources" in e]
    cfg.chemical_space.candidate_sources[0].path = str(tmp_path)  # not a screen output
    assert any("is not a screen output" in e for e in preflight(cfg, tmp_path)[0])
    # resuming against a changed pool is refused, naming what changed
    _write_pool(pool, ['{"prototype": "rocksalt MgO", "substitute": {"Mg": ["Ca"]}}'])
    with pytest.raises(ScreenError, match="pool file changed"):
        run_screen(pool, out, None, _options(model_cache=model_cache, resume=True), progress=False)


def test_ensemble_members_train_as_ray_tasks_like_inline(local_ray) -> None:
    from surrogates import EnsembleConfig, train_ensemble
    from surrogates.screening import ray_member_map
    from surrogates.screening.model import pretraining_set

    structures, energies = pretraining_set(limit=12, seed=1)
    cfg = EnsembleConfig(members=2, epochs=2, hidden=8, layers=1, batch_size=4, workers=1, seed=5)
    inline = train_ensemble(structures, {"e_form": energies}, cfg)
    remote = train_ensemble(structures, {"e_form": energies}, cfg, member_map=ray_member_map())
    np.testing.assert_allclose(inline.predict(structures).values, remote.predict(structures).values,
                               rtol=1e-5, atol=1e-5)


def test_cli_names_the_bad_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from controller.cli.app import app

    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"prototype": "perovskite SrTiO3"}\n{"prototype": "nope"}\n')
    result = CliRunner().invoke(app, ["screen", str(pool), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "pool.jsonl line 2: field 'prototype': unknown prototype 'nope'" in text


def test_cli_refuses_a_kernel_prior_checkpoint_with_a_reason(tmp_path: Path) -> None:
    """A campaign trained with ``surrogate.prior: sevennet_kernel`` stores a DeltaEnsemble; the
    funnel cannot featurise 10^6 cells with SevenNet, so ``--model`` says so instead of failing
    inside a worker with "not a saved surrogates.Ensemble"."""
    from typer.testing import CliRunner

    from controller.cli.app import app
    from surrogates.pretrained import DELTA_MAGIC

    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"prototype": "perovskite SrTiO3"}\n')
    ckpt = tmp_path / "delta.bin"
    ckpt.write_bytes(DELTA_MAGIC + b"rest of an npz")
    result = CliRunner().invoke(app, ["screen", str(pool), "--out", str(tmp_path / "out"), "--model", str(ckpt)])
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "surrogate.prior: sevennet_kernel" in text and "plain ensemble" in text
    assert not (tmp_path / "out").exists()
