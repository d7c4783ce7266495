"""Instrument profile from a reference scan (`synthloop xrd calibrate`), stored and reused.

A LaB6-like standard is simulated with a known instrument (zero shift, Caglioti widths,
fixed-slit spill-over below 2theta = 35 deg, K-alpha2) by the test generator, which does not
share the fit's profile code; the calibration must give that instrument back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pymatgen.core import Lattice, Structure

from controller.xrd import (
    AnalysisSettings,
    CalibrationError,
    InstrumentProfile,
    ReferencePhase,
    calibrate,
)
from controller.xrd.simulate import simulate_mixture

CAGLIOTI = (0.01, -0.004, 0.004)
EXE = shutil.which("synthloop", path=str(Path(sys.executable).parent)) or "synthloop"


def _lab6() -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.1569), ["La", "B"],
                                     [[0, 0, 0], [0.1996, 0.5, 0.5]])


def _scan(footprint: float | None, kalpha2: bool = True):
    std = ReferencePhase.from_structure(_lab6(), "LaB6")
    pattern = simulate_mixture([std], [1.0], seed=5, two_theta=(10.0, 120.0, 0.02), zero_shift=-0.03,
                               caglioti=CAGLIOTI, eta=0.5, footprint_two_theta=footprint, kalpha2=kalpha2)
    return std, pattern


def _true_fwhm(two_theta: float) -> float:
    t = np.tan(np.radians(two_theta) / 2)
    u, v, w = CAGLIOTI
    return float(np.sqrt(u * t**2 + v * t + w))


@pytest.fixture(scope="module")
def learned() -> InstrumentProfile:
    std, pattern = _scan(35.0)
    return calibrate(pattern, std)


def test_calibration_gives_back_the_instrument(learned: InstrumentProfile) -> None:
    assert learned.zero_shift_deg == pytest.approx(-0.03, abs=0.005)
    for tt in (30.0, 60.0, 100.0):
        assert float(learned.fwhm(tt)) == pytest.approx(_true_fwhm(tt), rel=0.05)
    assert learned.footprint_two_theta == pytest.approx(35.0, abs=2.6)
    assert learned.peaks_used >= 5


def test_no_spillover_is_not_invented() -> None:
    std, pattern = _scan(None)
    assert calibrate(pattern, std).footprint_two_theta is None


def test_profile_is_stored_reused_and_checked(learned: InstrumentProfile, tmp_path: Path) -> None:
    path = learned.save(tmp_path / "profile.yaml")
    again = InstrumentProfile.load(path)
    assert again.footprint_two_theta == learned.footprint_two_theta
    settings = again.apply(AnalysisSettings.real_samples())
    assert settings.footprint_two_theta == learned.footprint_two_theta
    assert settings.zero_shift_deg == pytest.approx(learned.zero_shift_deg)
    assert settings.initial_fwhm_deg == pytest.approx(float(learned.fwhm(30.0)))
    assert settings.systematic_floor == AnalysisSettings.real_samples().systematic_floor
    # side phases' width bound from this instrument: its FWHM at 30 deg + 84 nm Scherrer
    t = np.radians(15.0)
    scherrer = np.degrees(0.9 * learned.wavelength_angstrom / (840.0 * np.cos(t)))
    bound = settings.side_width_max_deg
    assert bound / np.cos(t) + bound * np.tan(t) == pytest.approx(
        float(learned.fwhm(30.0)) + scherrer, abs=2e-4)
    assert again.apply(AnalysisSettings()).side_width_max_deg is None  # no bound asked for
    shaped = again.apply(AnalysisSettings(side_width_max_deg=0.15, side_eta=0.4))
    assert shaped.side_eta == pytest.approx(min(max(learned.eta, 0.0), 1.0))
    assert again.apply(AnalysisSettings()).side_eta is None
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"format": "something else"}))
    with pytest.raises(CalibrationError, match="not an instrument profile"):
        InstrumentProfile.load(bad)
    data = yaml.safe_load(path.read_text())
    data["caglioti_w"] = "wide"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(CalibrationError, match="caglioti_w must be a finite number"):
        InstrumentProfile.load(bad)
    with pytest.raises(CalibrationError, match="no such instrument profile"):
        InstrumentProfile.load(tmp_path / "missing.yaml")


def test_calibrate_command_writes_a_profile_analyze_reads(tmp_path: Path) -> None:
    # a plain .xy file cannot say whether K-alpha2 is in it: the scan is a single-line one
    std, pattern = _scan(35.0, kalpha2=False)
    scan = tmp_path / "lab6.xy"
    np.savetxt(scan, np.column_stack([pattern.two_theta, pattern.intensities]),
               header="wavelength = 1.540598")
    cif = tmp_path / "LaB6.cif"
    _lab6().to(filename=str(cif))
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([EXE, "xrd", "calibrate", str(scan), "--cif", str(cif), "--out",
                          str(tmp_path / "p.yaml")], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "zero shift" in out.stdout and (tmp_path / "p.yaml").is_file()
    prof = InstrumentProfile.load(tmp_path / "p.yaml")
    assert prof.footprint_two_theta == pytest.approx(35.0, abs=2.6)
    ana = subprocess.run([EXE, "xrd", "analyze", str(scan), "--phases", str(cif), "--profile",
                          str(tmp_path / "p.yaml"), "--json"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert ana.returncode == 0, ana.stderr
    bad = subprocess.run([EXE, "xrd", "analyze", str(scan), "--phases", str(cif), "--preset", "lab"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "simulated, real_samples" in bad.stderr
