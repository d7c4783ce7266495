"""`synthloop xrd analyze|plot|calibrate` as a new user tries them: an output path that cannot
be written fails before any fitting (it used to be a traceback after the work), a results table
left in the scanned folder is not read back as a pattern, --out is honoured for one scan too.

Found in a user trial (session 3, h11). In-process through the real Typer app (CliRunner) on a
real A-Lab scan (one spinel phase: a fit of a second or two).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import shared_data
from typer.testing import CliRunner

from controller.cli.app import app


def invoke(*args: str):  # noqa: ANN201 - click Result
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture()
def scans(tmp_path: Path) -> Path:
    """A folder in the A-Lab layout with one real scan (000_Li2MgCl4: the spinel alone)."""
    src = next(shared_data("xrd", "alab_gpss").glob("000_*"))
    out = tmp_path / "scans" / src.name
    (out / "phases").mkdir(parents=True)
    shutil.copy(src / "pattern.xrdml", out / "pattern.xrdml")
    shutil.copy(src / "phases" / "spinel.cif", out / "phases" / "spinel.cif")
    return tmp_path / "scans"


def _no_traceback(out) -> None:  # noqa: ANN001
    assert isinstance(out.exception, SystemExit), out.exception


def test_unwritable_outputs_fail_first_with_one_line(scans: Path, tmp_path: Path) -> None:
    scan = next(scans.glob("*/pattern.xrdml"))
    cif = str(next(scans.glob("*/phases/spinel.cif")))
    missing = tmp_path / "no-such-folder"
    cases = [
        (["xrd", "analyze", str(scans), "--out", str(missing / "t.csv")], "does not exist"),
        (["xrd", "analyze", str(scans), "--out", str(tmp_path / "t.xlsx")], ".csv / .json"),
        (["xrd", "plot", str(scan), "--phases", cif, "--out", str(tmp_path / "fit.txt")], ".png"),
        (["xrd", "plot", str(scan), "--phases", cif, "--out", str(missing / "fit.png")], "does not exist"),
        (["xrd", "calibrate", str(scan), "--cif", cif, "--out", str(missing / "p.yaml")], "does not exist"),
    ]
    for args, words in cases:
        out = invoke(*args)
        assert out.exit_code == 2, (args, out.output)
        _no_traceback(out)
        assert "--out" in out.stderr and words in out.stderr, (args, out.stderr)


def test_a_table_left_in_the_folder_is_not_read_as_a_pattern(scans: Path) -> None:
    table = scans / "table.csv"
    first = invoke("xrd", "analyze", str(scans), "--out", str(table))
    assert first.exit_code == 0, first.output
    again = invoke("xrd", "analyze", str(scans))  # the old table.csv is still there
    assert again.exit_code == 0, again.output
    assert "1 patterns, 0 failed" in again.stdout
    rows = list(csv.DictReader(table.open()))
    assert [r["pattern"] for r in rows] == ["000_Li2MgCl4/pattern.xrdml"]


def test_one_scan_writes_its_row_to_out_and_a_lone_phase_has_no_nan(scans: Path, tmp_path: Path) -> None:
    scan = next(scans.glob("*/pattern.xrdml"))
    cif = str(next(scans.glob("*/phases/spinel.cif")))
    table = tmp_path / "one.csv"
    out = invoke("xrd", "analyze", str(scan), "--phases", cif, "--target", "spinel", "--out", str(table))
    assert out.exit_code == 0, out.output
    assert "nan" not in out.stdout  # Δχ² of a lone phase: nothing to drop it against
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 1 and rows[0]["pattern"] == "pattern.xrdml"
    assert rows[0]["phases"].startswith("spinel 100.0") and float(rows[0]["target_yield"]) == 1.0


def test_folder_names_scans_it_cannot_read_and_reads_dat(scans: Path) -> None:
    import numpy as np

    from controller.xrd import read_pattern

    (scans / "old-instrument.raw").write_bytes(b"\x00binary")
    pat = read_pattern(next(scans.glob("*/pattern.xrdml")))
    dat = scans / "exported" / "scan.dat"
    dat.parent.mkdir()
    (dat.parent / "phases").mkdir()
    shutil.copy(next(scans.glob("*/phases/spinel.cif")), dat.parent / "phases" / "spinel.cif")
    np.savetxt(dat, np.column_stack([pat.two_theta, pat.intensities]))
    out = invoke("xrd", "analyze", str(scans))
    assert out.exit_code == 0, out.output
    assert "old-instrument.raw" in out.stderr and "2 patterns, 0 failed" in out.stdout
    assert ".dat" in invoke("xrd", "analyze", "--help").stdout
