"""The inline SVG plots: peaks survive decimation, stored text cannot inject markup."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from controller.web.svg import calibration_svg, decimate, parity_svg, xrd_svg


def test_decimation_keeps_a_one_point_peak_and_bounds_the_size() -> None:
    x = np.linspace(10, 80, 7001)
    y = np.zeros_like(x)
    y[4321] = 1000.0  # a single-channel reflection: striding would drop it
    xd, (yd,) = decimate(x, [y], columns=700)
    assert len(xd) <= 1400 and yd.max() == 1000.0 and x[4321] in xd


def test_xrd_plot_is_valid_svg_and_escapes_phase_names() -> None:
    x = np.linspace(10, 80, 3000)
    obs = 50 + 900 * np.exp(-0.5 * ((x - 30) / 0.1) ** 2)
    data = {"two_theta": x.tolist(), "observed": obs.tolist(), "fitted": (obs * 0.98).tolist(),
            "phase_patterns": {}, "phase_ticks": {"<script>alert(1)</script>": [30.0], "unexplained": [55.0]}}
    text = xrd_svg(data, "XRD & fit")
    root = ET.fromstring(text)  # well-formed XML
    assert "<script>" not in text and "&lt;script&gt;" in text
    classes = {el.get("class") for el in root.iter() if el.get("class")}
    assert {"observed", "fitted", "difference", "ticks"} <= classes


def test_parity_and_calibration_handle_empty_and_real_points() -> None:
    assert "no observed values yet" in parity_svg([])
    assert "no uncertainties" in calibration_svg([])
    pts = [{"observed": 0.1 * i, "predicted": 0.1 * i + 0.02, "std": 0.05} for i in range(8)]
    root = ET.fromstring(parity_svg(pts))
    assert sum(1 for el in root.iter() if el.get("class") == "point") == 8
    cal = [{"nominal": n, "observed": n} for n in (0.1, 0.5, 0.9)]
    ET.fromstring(calibration_svg(cal))
