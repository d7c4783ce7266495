"""The campaign's analysis preset: which AnalysisSettings the loop's fits use (issue 21 item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.config import ConfigError, example_config_text, parse_config
from controller.loop.assess import analysis_settings
from controller.xrd import AnalysisSettings, InstrumentProfile


def _config(**analysis):
    data = yaml.safe_load(example_config_text())
    data["analysis"].update(analysis)
    return parse_config(data)


def test_default_preset_keeps_the_simulated_settings() -> None:
    cfg = _config()
    assert cfg.analysis.preset == "simulated"
    s = analysis_settings(cfg.analysis)
    assert s.footprint_two_theta is None and s.systematic_floor == 0.0
    assert s.screen_nfev == cfg.analysis.screen_iterations
    assert s.allow_structureless_target  # the loop's targets are real formulas


def test_real_samples_preset_uses_the_tuned_settings() -> None:
    s = analysis_settings(_config(preset="real_samples").analysis)
    real = AnalysisSettings.real_samples()
    assert s.footprint_two_theta == real.footprint_two_theta
    assert s.systematic_floor == real.systematic_floor > 0


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"analysis\.preset.*'simulated' or 'real_samples'"):
        _config(preset="aeris")


def test_instrument_profile_overrides_the_instrument_part(tmp_path: Path) -> None:
    prof = InstrumentProfile(zero_shift_deg=0.021, caglioti_u=0.01, caglioti_v=-0.004,
                             caglioti_w=0.004, eta=0.5, footprint_two_theta=30.0,
                             wavelength_angstrom=1.5406, standard="LaB6")
    path = prof.save(tmp_path / "aeris.yaml")
    s = analysis_settings(_config(preset="real_samples", instrument_profile=str(path)).analysis)
    assert s.footprint_two_theta == 30.0 and s.zero_shift_deg == pytest.approx(0.021)
    assert s.systematic_floor == AnalysisSettings.real_samples().systematic_floor
