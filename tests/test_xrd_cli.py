"""`synthloop xrd` as a user runs it: a real console-script subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import shared_data

EXE = shutil.which("synthloop", path=str(Path(sys.executable).parent)) or "synthloop"
CIFS = Path(__file__).resolve().parents[1] / "controller" / "xrd" / "data" / "cifs"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=180, env=env)


def test_analyze_json_is_exactly_one_object_with_cif_stems() -> None:
    pattern = shared_data("xrd", "dara_precursor_mixtures", "TiO2_0p4009-ZnO_0p6010--2min.xrdml")
    out = run("xrd", "analyze", str(pattern), "--phases", str(CIFS / "ZnO_186.cif"),
              str(CIFS / "TiO2_141.cif"), str(CIFS / "NiO_225_sym.cif"), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # the whole stdout is one JSON document
    assert isinstance(data, dict)
    names = {p["name"] for p in data["phases"]}
    assert names == {"ZnO_186", "TiO2_141"}
    for p in data["phases"]:
        assert 0.0 <= p["weight_fraction"] <= 1.0
        assert p["weight_fraction_std"] >= 0.0
        assert p["formula"] in {"ZnO", "TiO2"}
    assert abs(sum(p["weight_fraction"] for p in data["phases"]) - 1.0) < 1e-9
    zno = next(p for p in data["phases"] if p["name"] == "ZnO_186")
    assert abs(zno["weight_fraction"] - 0.6) < 0.05
    assert 0 < data["rwp"] < 0.2
    assert "NiO_225_sym" in data["rejected"]
    assert isinstance(data["unexplained_peaks"], list)


def test_analyze_table_target_and_plot(tmp_path: Path) -> None:
    pattern = shared_data("xrd", "dara_precursor_mixtures", "TiO2_0p4009-ZnO_0p6010--2min.xrdml")
    out = run("xrd", "analyze", str(pattern), "--phases", "ZnO_186", "TiO2_141", "--target", "ZnO")
    assert out.returncode == 0, out.stderr
    assert "ZnO_186" in out.stdout and "Rwp" in out.stdout and "target ZnO: yield" in out.stdout
    png = tmp_path / "fit.png"
    out = run("xrd", "plot", str(pattern), "--phases", "ZnO_186", "TiO2_141", "--out", str(png))
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_pattern_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "broken.xrdml"
    bad.write_text("<xrdMeasurements><dataPoints><counts>1 2 3")
    out = run("xrd", "analyze", str(bad), "--phases", "ZnO_186", "--json")
    assert out.returncode != 0
    assert "broken.xrdml" in out.stderr and out.stdout == ""


def test_analyze_takes_the_weighed_composition_and_rejects_a_bad_one() -> None:
    pattern = shared_data("xrd", "dara_precursor_mixtures", "TiO2_0p4009-ZnO_0p6010--2min.xrdml")
    args = ("xrd", "analyze", str(pattern), "--phases", "ZnO_186", "TiO2_141", "--target", "ZnO",
            "--preset", "real_samples")
    out = run(*args, "--composition", "Zn3Ti2O7", "--json")
    assert out.returncode == 0, out.stderr
    assert 0.5 < json.loads(out.stdout)["target_yield"] < 0.7
    out = run(*args, "--composition", "Zz2Q")
    assert out.returncode == 2
    assert "--composition" in out.stderr and "Zz2Q" in out.stderr
