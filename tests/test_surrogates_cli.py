"""``synthloop bench surrogate`` as a user runs it: one JSON object, clear errors."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from controller.cli.app import app


def toy_set(n: int, seed: int) -> tuple[list[Structure], np.ndarray]:
    rng = np.random.default_rng(seed)
    structures, y = [], []
    for _ in range(n):
        a, b = rng.choice(["Sr", "Ba", "Ca", "La"]), rng.choice(["Ti", "Zr", "Nb", "Mn"])
        lat = rng.uniform(3.7, 4.3)
        structures.append(Structure(Lattice.cubic(lat), [a, b, "O", "O", "O"],
                                    [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]))
        y.append(0.5 * (lat - 4.0) + (0.2 if a == "La" else 0.0))
    return structures, np.array(y)


def write_table(path: Path, n: int, seed: int) -> None:
    structures, y = toy_set(n, seed)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["material_id", "cif", "heat"])
        for i, (s, v) in enumerate(zip(structures, y, strict=True)):
            w.writerow([f"m{i}", s.to(fmt="cif"), f"{v:.6f}"])


def test_bench_surrogate_prints_one_json_object(tmp_path: Path) -> None:
    write_table(tmp_path / "train.csv.gz", 20, 0)
    write_table(tmp_path / "test.csv", 6, 1)
    result = CliRunner().invoke(app, [
        "bench", "surrogate", "--train", str(tmp_path / "train.csv.gz"), "--test",
        str(tmp_path / "test.csv"), "--target", "heat", "--json", "--epochs", "2",
        "--members", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    for key in ("mae", "rmse", "coverage_90", "train_s", "predict_per_s", "baseline_mae"):
        assert isinstance(out[key], float), key
    assert out["n_train"] == 20 and out["n_test"] == 6
    assert 0.0 <= out["coverage_90"] <= 1.0 and out["rmse"] >= out["mae"] > 0


def test_bench_surrogate_names_a_missing_column_and_file(tmp_path: Path) -> None:
    write_table(tmp_path / "t.csv", 6, 0)
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "surrogate", "--train", str(tmp_path / "t.csv"), "--test",
                              str(tmp_path / "t.csv"), "--target", "gap", "--json"])
    assert bad.exit_code == 2
    assert "no target column 'gap'" in bad.output
    missing = runner.invoke(app, ["bench", "surrogate", "--train", str(tmp_path / "nope.csv"),
                                  "--test", str(tmp_path / "t.csv"), "--target", "heat"])
    assert missing.exit_code == 2 and "nope.csv: no such file" in missing.output
