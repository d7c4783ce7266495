"""Small inline-SVG plots: XRD pattern with fit and difference, parity, calibration.

Why hand-written SVG and not matplotlib: a page must render in well under 300 ms on a busy
2-core machine and work without any network; a few polylines are ~1 ms to write, scale with
the browser window, and need no image files. Patterns with more points than pixels are
decimated per pixel column keeping min and max, so no peak disappears from the picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

W, H = 760, 420
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 60, 16, 16, 44
PHASE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e")


def _nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class _Axes:
    """Maps data to pixels inside the plot box and writes axes, ticks and labels."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, *, top: float = MARGIN_T,
                 bottom: float = H - MARGIN_B):
        pad_y = (y1 - y0) * 0.04 or 1.0
        pad_x = 0.0 if x1 > x0 else 1.0
        self.x0, self.x1, self.y0, self.y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y
        self.top, self.bottom = top, bottom

    def px(self, x: np.ndarray | float) -> np.ndarray | float:
        return MARGIN_L + (np.asarray(x) - self.x0) / (self.x1 - self.x0) * (W - MARGIN_L - MARGIN_R)

    def py(self, y: np.ndarray | float) -> np.ndarray | float:
        return self.bottom - (np.asarray(y) - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def frame(self, xlabel: str, ylabel: str, *, y_ticks: bool = True) -> list[str]:
        out = [f'<rect x="{MARGIN_L}" y="{self.top}" width="{W - MARGIN_L - MARGIN_R}" '
               f'height="{self.bottom - self.top}" fill="none" stroke="#888"/>']
        for t in _nice_ticks(self.x0, self.x1):
            x = float(self.px(t))
            out.append(f'<line x1="{x:.1f}" y1="{H - MARGIN_B}" x2="{x:.1f}" y2="{H - MARGIN_B + 5}" stroke="#888"/>'
                       f'<text x="{x:.1f}" y="{H - MARGIN_B + 18}" text-anchor="middle">{_fmt(t)}</text>')
        if y_ticks:
            for t in _nice_ticks(self.y0, self.y1, 5):
                y = float(self.py(t))
                out.append(f'<line x1="{MARGIN_L - 5}" y1="{y:.1f}" x2="{MARGIN_L}" y2="{y:.1f}" stroke="#888"/>'
                           f'<text x="{MARGIN_L - 8}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<text x="{(MARGIN_L + W - MARGIN_R) / 2}" y="{H - 6}" text-anchor="middle">{escape(xlabel)}</text>')
        out.append(f'<text transform="translate(14 {(self.top + self.bottom) / 2}) rotate(-90)" '
                   f'text-anchor="middle">{escape(ylabel)}</text>')
        return out

    def polyline(self, x: np.ndarray, y: np.ndarray, colour: str, width: float = 1.2, cls: str = "") -> str:
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(self.px(x), self.py(y), strict=True))
        return f'<polyline class="{cls}" fill="none" stroke="{colour}" stroke-width="{width}" points="{pts}"/>'


def _svg(body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" '
            f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">'
            f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def decimate(x: np.ndarray, ys: Sequence[np.ndarray], columns: int = 700) -> tuple[np.ndarray, list[np.ndarray]]:
    """Keep each pixel column's min and max of the first curve (peaks survive), same indices for all."""
    n = len(x)
    if n <= 2 * columns:
        return x, list(ys)
    edges = np.linspace(0, n, columns + 1).astype(int)
    keep: list[int] = []
    ref = ys[0]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b <= a:
            continue
        seg = ref[a:b]
        i, j = a + int(np.argmin(seg)), a + int(np.argmax(seg))
        keep.extend(sorted({i, j}))
    idx = np.asarray(keep)
    return x[idx], [y[idx] for y in ys]


def xrd_svg(data: dict, title: str = "XRD pattern") -> str:
    """Observed (black), fitted (red), per-phase curves, difference below, reflection ticks per phase."""
    x = np.asarray(data["two_theta"], dtype=float)
    obs = np.asarray(data["observed"], dtype=float)
    if len(x) == 0:
        return _svg([f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">empty pattern</text>'], title)
    fitted = np.asarray(data["fitted"], dtype=float) if data.get("fitted") is not None else None
    diff = obs - fitted if fitted is not None else None
    ticks: dict[str, list[float]] = data.get("phase_ticks") or {}
    phase_curves: dict[str, list[float]] = data.get("phase_patterns") or {}
    tick_rows = len(ticks)
    tick_h = 12 * tick_rows
    diff_h = 70 if diff is not None else 0
    main_bottom = H - MARGIN_B - tick_h - diff_h - (8 if tick_h or diff_h else 0)
    background = np.asarray(data["background"], dtype=float) if data.get("background") is not None else None
    if background is not None and len(background) != len(x):
        background = None
    curves = ([obs] + ([fitted] if fitted is not None else []) + [np.asarray(v, float) for v in phase_curves.values()]
              + ([background] if background is not None else []))
    xd, ds = decimate(x, curves)
    lo = float(min(np.min(c) for c in ds))
    hi = float(max(np.max(c) for c in ds))
    ax = _Axes(float(x.min()), float(x.max()), min(lo, 0.0), hi, bottom=main_bottom)
    body = ax.frame("2θ (°)", "intensity (counts)")
    names = list(phase_curves)
    colours: dict[str, str] = {}  # one colour per phase name, shared by its curve and its ticks
    for name in [*names, *ticks]:
        if name not in colours:
            colours[name] = "#999" if name == "unexplained" else PHASE_COLOURS[len(colours) % len(PHASE_COLOURS)]
    first_phase = 2 if fitted is not None else 1
    for k, name in enumerate(names):
        body.append(ax.polyline(xd, ds[first_phase + k], colours[name], 0.8, "phase"))
    legend = [("observed", "#000")]
    if background is not None:
        body.append(ax.polyline(xd, ds[-1], "#ff7f0e", 0.9, "background").replace("<polyline", '<polyline stroke-dasharray="4 3"', 1))
        legend.append(("background", "#ff7f0e"))
    body.append(ax.polyline(xd, ds[0], "#000", 1.0, "observed"))
    if fitted is not None:
        body.append(ax.polyline(xd, ds[1], "#d62728", 1.0, "fitted"))
        legend.append(("fitted", "#d62728"))
    if diff is not None:
        d_top = main_bottom + 6
        xdd, (dd,) = decimate(x, [diff])
        span = float(np.max(np.abs(dd))) or 1.0
        dax = _Axes(float(x.min()), float(x.max()), -span, span, top=d_top, bottom=d_top + diff_h - 6)
        body.append(dax.polyline(xdd, dd, "#7f7f7f", 0.8, "difference"))
        body.append(f'<text x="{MARGIN_L + 4}" y="{d_top + 10}" fill="#7f7f7f">difference</text>')
    row_y = H - MARGIN_B - tick_h
    for k, (name, positions) in enumerate(ticks.items()):
        y = row_y + 12 * k + 2
        marks = "".join(f'<line x1="{float(ax.px(p)):.1f}" y1="{y}" x2="{float(ax.px(p)):.1f}" y2="{y + 9}"/>'
                        for p in positions if ax.x0 <= p <= ax.x1)
        body.append(f'<g class="ticks" stroke="{colours[name]}" stroke-width="1.5">{marks}</g>')
    legend.extend(colours.items())
    for k, (name, colour) in enumerate(legend):
        body.append(f'<text x="{W - MARGIN_R - 8}" y="{MARGIN_T + 14 + 13 * k}" text-anchor="end" '
                    f'fill="{colour}">{escape(name)}</text>')
    return _svg(body, title)


def parity_svg(points: list[dict], title: str = "parity", xlabel: str = "observed",
               ylabel: str = "predicted") -> str:
    """Predicted against observed with ±1σ bars and the y = x line; points marked
    ``held_out: False`` (seen in training) are drawn hollow."""
    if not points:
        return _svg([f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no observed values yet</text>'], title)
    obs = np.array([p["observed"] for p in points], dtype=float)
    pred = np.array([p["predicted"] for p in points], dtype=float)
    std = np.array([p.get("std") or 0.0 for p in points], dtype=float)
    lo = float(min(obs.min(), (pred - std).min()))
    hi = float(max(obs.max(), (pred + std).max()))
    if lo >= -0.05 and hi <= 1.05:  # fractions (yields, probabilities): the whole 0-1 scale
        lo, hi = min(lo, 0.0), max(hi, 1.0)
    elif hi - lo < 1e-9 or hi - lo < 0.05 * max(abs(lo), abs(hi)):  # one point or a tight cluster
        pad = max(0.1 * max(abs(lo), abs(hi)), 0.05)
        lo, hi = lo - pad, hi + pad
    ax = _Axes(lo, hi, lo, hi)
    body = ax.frame(xlabel, ylabel)
    body.append(f'<line x1="{float(ax.px(lo)):.1f}" y1="{float(ax.py(lo)):.1f}" x2="{float(ax.px(hi)):.1f}" '
                f'y2="{float(ax.py(hi)):.1f}" stroke="#aaa" stroke-dasharray="4 3"/>')
    xs, ys = ax.px(obs), ax.py(pred)
    top, bottom = ax.py(pred + std), ax.py(pred - std)
    for x, y, t, b, s in zip(xs, ys, top, bottom, std, strict=True):
        if s > 0:
            body.append(f'<line x1="{x:.1f}" y1="{t:.1f}" x2="{x:.1f}" y2="{b:.1f}" stroke="#9ecae1"/>')
        body.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f77b4"/>')
    for p, x, y in zip(points, xs, ys, strict=True):  # in-sample points: hollow over the filled dot
        if p.get("held_out") is False:
            body.append(f'<circle class="in-sample" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#fff" stroke="#1f77b4"/>')
    return _svg(body, title)


def calibration_svg(calibration: list[dict], title: str = "calibration") -> str:
    """Observed coverage of the model's central intervals against their nominal level."""
    if not calibration:
        return _svg([f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no uncertainties to check</text>'], title)
    ax = _Axes(0.0, 1.0, 0.0, 1.0)
    body = ax.frame("nominal interval coverage", "observed fraction inside")
    body.append(f'<line x1="{float(ax.px(0)):.1f}" y1="{float(ax.py(0)):.1f}" x2="{float(ax.px(1)):.1f}" '
                f'y2="{float(ax.py(1)):.1f}" stroke="#aaa" stroke-dasharray="4 3"/>')
    nominal = np.array([c["nominal"] for c in calibration])
    observed = np.array([c["observed"] for c in calibration])
    body.append(ax.polyline(nominal, observed, "#d62728", 1.5, "calibration"))
    body.extend(f'<circle cx="{float(ax.px(a)):.1f}" cy="{float(ax.py(b)):.1f}" r="3" fill="#d62728"/>'
                for a, b in zip(nominal, observed, strict=True))
    return _svg(body, title)


SMALL_W, SMALL_H = 520, 240


def _small(body: list[str], title: str) -> str:
    # inline in a page only (no xmlns needed there: the pages name no outside address)
    return (f'<svg viewBox="0 0 {W} {H}" width="100%" '
            f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="13">'
            f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


VERDICT_COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828"}


def yield_svg(points: list[dict], threshold: float, title: str = "target yield per experiment") -> str:
    """Each measured experiment's target yield in proposal order, coloured by verdict, with the
    claim threshold as a dashed line."""
    if not points:
        return _small([f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no measured yield yet</text>'], title)
    n = len(points)
    ax = _Axes(0.5, n + 0.5, 0.0, 1.0)
    body = ax.frame("experiment (in the order proposed)", "target yield (weight fraction)")
    y_thr = float(ax.py(threshold))
    body.append(f'<line class="threshold" x1="{MARGIN_L}" y1="{y_thr:.1f}" x2="{W - MARGIN_R}" y2="{y_thr:.1f}" '
                f'stroke="#555" stroke-dasharray="6 4"/>'
                f'<text x="{W - MARGIN_R - 4}" y="{y_thr - 4:.1f}" text-anchor="end" fill="#555">'
                f'made above {100 * threshold:.0f} %</text>')
    for k, p in enumerate(points, start=1):
        colour = VERDICT_COLOURS.get(p.get("state"), "#1f77b4")
        body.append(f'<circle class="yield-point" cx="{float(ax.px(k)):.1f}" cy="{float(ax.py(p["yield"])):.1f}" r="4" '
                    f'fill="{colour}"><title>experiment {p["experiment_id"]} ({escape(str(p.get("target")))}): '
                    f'{100 * p["yield"]:.0f} %, {escape(str(p.get("state")))}</title></circle>')
    return _small(body, title)


def model_error_svg(rounds: list[dict], title: str = "yield model error per round") -> str:
    """Mean absolute yield error of each model version on results it had not seen."""
    if not rounds:
        return _small([f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no retrained model yet</text>'], title)
    v = np.array([r["version"] for r in rounds], dtype=float)
    m = np.array([r["mae"] for r in rounds], dtype=float)
    ax = _Axes(float(v.min()) - 0.5, float(v.max()) + 0.5, 0.0, max(0.5, float(m.max()) * 1.1))
    body = ax.frame("model version (round)", "yield MAE on unseen results")
    if len(v) > 1:
        body.append(ax.polyline(v, m, "#d62728", 1.5, "model-error"))
    body.extend(f'<circle cx="{float(ax.px(a)):.1f}" cy="{float(ax.py(b)):.1f}" r="4" fill="#d62728">'
                f'<title>v{int(a)}: {b:.3f}</title></circle>' for a, b in zip(v, m, strict=True))
    return _small(body, title)
