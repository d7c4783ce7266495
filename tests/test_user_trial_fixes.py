"""Small robustness defects found in a user trial (h15): a '%' in a campaign's path, nan/inf
dwell times in an outcomes table, formulas in rationales as a chemist writes them, a Ctrl-C
that printed a traceback per XRD worker, and the summary of a screen with nothing left to do."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipes import OutcomeTableError, parse_outcomes
from recipes.temperature_model import display_formula

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- store: '%' in the URL



def _default_sigint() -> None:
    """Give the child Python's own Ctrl-C handling back: pytest-xdist workers run with SIGINT
    ignored, and an ignored disposition survives exec, so Ctrl-C never reached the child in CI."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)

def test_store_opens_and_reopens_in_a_directory_named_with_percent(tmp_path: Path) -> None:
    """Alembic's config goes through configparser interpolation; a bare '%' raised ValueError."""
    from controller.store.store import Store

    camp = tmp_path / "run 50%25 done"
    camp.mkdir()
    Store.for_campaign_dir(camp).engine.dispose()
    assert (camp / "campaign.db").exists()
    again = Store.for_campaign_dir(camp)  # already at head: the upgrade is a no-op
    again.engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == [camp.name]  # no stray decoded path


# --------------------------------------------------------------------------- replay: dwell_min


@pytest.mark.parametrize("dwell", ["nan", "inf", "-inf", "0", "-5"])
def test_outcome_dwell_must_be_a_finite_positive_number(tmp_path: Path, dwell: str) -> None:
    p = tmp_path / "OUTCOMES.csv"
    p.write_text("precursors,temperature_c,dwell_min,products\n"
                 "BaCO3;TiO2,900,240,BaTiO3:0.5\n"
                 f"BaCO3;TiO2,1000,{dwell},BaTiO3:0.5\n")
    with pytest.raises(OutcomeTableError, match=rf"row 3: dwell_min must be a positive finite .*'{re.escape(dwell)}'"):
        parse_outcomes(p)


# --------------------------------------------------------------------------- formulas in rationales


@pytest.mark.parametrize(("raw", "shown"), [
    ("Ba0.06Ti0.06O0.18", "BaTiO3"),              # a per-atom-scaled composition
    ("Li1Co0.5Ni0.5P1O4", "LiCo0.5Ni0.5PO4"),     # doped: the 1s go, the doping stays
    ("Ba0.95Sr0.05Ti1O3", "Ba0.95Sr0.05TiO3"),
    ("Sr1Ti0.95Nb0.05O3.025", "SrTi0.95Nb0.05O3.025"),
    ("Te0.999Pb1I0.001", "Te0.999PbI0.001"),
    ("Al0.1W0.9", "Al0.1W0.9"),                   # an atom-fraction alloy stays as written
    ("Sr3(FeO3)2", "Sr3(FeO3)2"),                 # bracketed: left alone
    ("BaTiO3", "BaTiO3"),
    ("SnS", "SnS"),
])
def test_display_formula(raw: str, shown: str) -> None:
    assert display_formula(raw) == shown


def test_planner_rationale_names_the_nearest_target_without_stoichiometric_ones() -> None:
    """LiCoPO4's nearest literature target is stored as 'Li1Co0.9Ni0.1P1O4'."""
    from recipes import RecipePlanner, TargetSpec

    rationale = RecipePlanner().initial_recipes(TargetSpec("LiCoPO4"))[0].rationale
    nearest = re.search(r"\(nearest (\S+);", rationale)
    assert nearest is not None, rationale
    assert not re.search(r"[A-Z][a-z]?1(?![0-9.])", nearest.group(1)), nearest.group(1)


# --------------------------------------------------------------------------- Ctrl-C and the XRD pool

CONTROLLER = """
import signal, sys, time
from controller.loop.analysis_pool import AnalysisPool
pool = AnalysisPool(2)
pool.warm_up()
ex = pool._executor()
for f in [ex.submit(time.sleep, 0.01) for _ in range(4)]:
    f.result()
def sigint_ignored(pid):
    with open(f"/proc/{pid}/status") as fh:
        mask = next(line for line in fh if line.startswith("SigIgn:")).split()[1]
    return int(mask, 16) & (1 << (signal.SIGINT - 1))
deadline = time.monotonic() + 30  # without the fix nothing is ignored: by then both have imported
while not (len(ex._processes) == 2 and all(sigint_ignored(p) for p in ex._processes)):
    if time.monotonic() > deadline:
        break
    time.sleep(0.05)
print(*ex._processes, flush=True)
try:
    time.sleep(600)
except KeyboardInterrupt:
    pool.close()
    print("pool closed", flush=True)
"""


def test_ctrl_c_leaves_the_shutdown_to_the_controller_without_worker_tracebacks() -> None:
    """Ctrl-C signals the terminal's whole process group: the workers must not each print a
    KeyboardInterrupt traceback; the controller closes the pool and the workers exit."""
    proc = subprocess.Popen([sys.executable, "-c", CONTROLLER], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert "pool closed" in out and proc.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{p}") for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{p}") for p in workers)


# --------------------------------------------------------------------------- screen summary


def _manifest(**run: object) -> dict:
    return {"n_candidates": 100, "n_chunks": 7, "candidates_done": 100, "survivors": 4, "status": "complete",
            "stages": [], "runs": [{"workers": 2, **run}]}


def test_screen_summary_never_shows_an_empty_worker_list() -> None:
    from surrogates.screening.runner import format_summary

    text = format_summary(_manifest(candidates=0, wall_s=9.8, startup_s=9.7, screen_s=0.1,
                                    memory_peak_mb={"driver": 300.0, "workers": {}, "ray_system": {"gcs": 50.0},
                                                    "sum_of_peaks": 350.0}))
    assert "workers ," not in text and "workers none ran a chunk" in text
    done = format_summary(_manifest(workers=0, nothing_left=True, wall_s=0.0))
    assert "nothing left to screen (all 7 chunks were done), Ray not started" in done
    assert "worker(s)" not in done
