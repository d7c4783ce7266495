"""`synthloop recipes propose` as a user runs it (a real console-script process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXE = shutil.which("synthloop", path=str(Path(sys.executable).parent)) or "synthloop"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, env=env)


def test_propose_json_shape_with_a_ternary_precursor(tmp_path: Path) -> None:
    stock = tmp_path / "shelf.txt"
    stock.write_text("# our shelf\nY2O3\nBaCO3, CuO\nBaCuO2\n")
    out = run("recipes", "propose", "YBa2Cu3O7", "--stock", str(stock), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # exactly one JSON object on stdout
    assert set(data) == {"recipes"}
    assert 1 <= len(data["recipes"]) <= 5
    for r in data["recipes"]:
        assert {"precursors", "temperature_c", "dwell_min", "driving_force_mev_per_atom", "rationale"} <= set(r)
        assert set(r["precursors"]) <= {"Y2O3", "BaCO3", "CuO", "BaCuO2"}
        assert isinstance(r["temperature_c"], float) and isinstance(r["dwell_min"], float)
        assert isinstance(r["driving_force_mev_per_atom"], float) and r["rationale"]
    assert any("BaCuO2" in r["precursors"] for r in data["recipes"])


def test_propose_missing_element_and_human_output() -> None:
    bad = run("recipes", "propose", "LiCoO2", "--stock", "Li2CO3,TiO2", "--json")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "Co" in bad.stderr and "LiCoO2" in bad.stderr
    ok = run("recipes", "propose", "BaTiO3", "--stock", "BaCO3,TiO2")
    assert ok.returncode == 0, ok.stderr
    assert "BaCO3 + TiO2 -> BaTiO3 + CO2" in ok.stdout and "weigh:" in ok.stdout


def test_propose_skips_an_unusable_stock_item_with_a_warning_naming_it() -> None:
    out = run("recipes", "propose", "BaTiO3", "--stock", "BaCO3,TiO2,Xe3Kr2O9", "--json")
    assert out.returncode == 0, out.stderr
    assert "warning: stocked precursor Xe3Kr2O9 skipped" in out.stderr
    assert json.loads(out.stdout)["recipes"][0]["precursors"] == ["BaCO3", "TiO2"]
