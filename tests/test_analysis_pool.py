"""XRD fits in worker processes: the same numbers as in-process, and a dead worker loses nothing."""

from __future__ import annotations

import os
import signal

import pytest

from controller.loop.analysis_pool import AnalysisPool, run_analysis
from controller.xrd import AnalysisSettings, load_phase, simulate_mixture


@pytest.fixture(scope="module")
def case():
    phases = [load_phase(n) for n in ("ZnO_186", "TiO2_141", "NiO_225_sym")]
    pattern = simulate_mixture(phases[:2], [0.6, 0.4], seed=4)
    return (pattern, phases, "ZnO_186", AnalysisSettings())


def test_worker_result_equals_in_process_result(case) -> None:
    local = run_analysis(*case)
    pool = AnalysisPool(1)
    try:
        remote = pool.analyze(*case)
        assert remote.to_dict() == local.to_dict()  # deterministic fit, bit-identical numbers
        assert remote.target_yield == pytest.approx(0.6, abs=0.03)
    finally:
        pool.close()


def test_a_killed_worker_is_replaced_and_the_fit_still_returns(case) -> None:
    pool = AnalysisPool(1)
    try:
        first = pool.analyze(*case)
        (pid,) = list(pool._pool._processes)  # the one live worker
        os.kill(pid, signal.SIGKILL)
        assert pool.analyze(*case).to_dict() == first.to_dict()  # fallback in-process, pool rebuilt
        assert pool.analyze(*case).to_dict() == first.to_dict()  # and the rebuilt pool works
        assert pid not in pool._pool._processes
    finally:
        pool.close()


def test_zero_workers_runs_in_the_calling_process(case) -> None:
    pool = AnalysisPool(0)
    assert pool.analyze(*case).target_yield == pytest.approx(0.6, abs=0.03)
    assert pool._pool is None
    pool.close()
