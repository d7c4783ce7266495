"""Figure of a fit: observed, calculated, difference and each phase's contribution.

Why a picture: a weight fraction is only as good as the fit behind it; a person approving a
campaign's verdict should be able to see the misfit and the unexplained peaks at a glance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .analysis import PhaseAnalysis


def plot_analysis(analysis: PhaseAnalysis, out: str | Path, *, title: str | None = None) -> Path:
    """Write a PNG (or any matplotlib format by suffix) of the fit; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = analysis.curves
    if not c:
        raise ValueError("analysis carries no curves to plot")
    x, obs, calc, bg = c["two_theta"], c["observed"], c["calculated"], c["background"]
    fig, (ax, axd) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot(x, obs, ".", ms=1.5, color="black", label="observed")
    ax.plot(x, calc, "-", lw=0.8, color="tab:red", label=f"calculated (Rwp {analysis.rwp:.3f})")
    ax.plot(x, bg, "--", lw=0.6, color="grey", label="background")
    wf = {p.name: p for p in analysis.phases}
    for key, curve in c.items():
        if not key.startswith("phase:"):
            continue
        name = key.split(":", 1)[1]
        p = wf.get(name)
        lab = name if p is None else (
            f"{name}: {p.weight_fraction * 100:.1f} ± {p.weight_fraction_std * 100:.1f} wt%"
        )
        ax.plot(x, np.asarray(curve) + bg, "-", lw=0.6, label=lab)
    for pk in analysis.unexplained_peaks:
        ax.axvline(pk, color="magenta", lw=0.6, ls=":")
    ax.set_ylabel("counts")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or (Path(analysis.source).name if analysis.source else "XRD fit"),
                 fontsize=10)
    axd.plot(x, obs - calc, "-", lw=0.5, color="tab:blue")
    axd.axhline(0, color="black", lw=0.5)
    axd.set_ylabel("obs - calc")
    axd.set_xlabel("2θ (deg)")
    fig.tight_layout()
    path = Path(out)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
