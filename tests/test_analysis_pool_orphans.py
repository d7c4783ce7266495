"""A ``kill -9`` of the controller must not leave its XRD worker processes running: each
restart of a crashed controller would otherwise add another orphan holding memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONTROLLER = """
import sys, time
from controller.loop.analysis_pool import AnalysisPool
pool = AnalysisPool(1)
pool.warm_up()
ex = pool._executor()
while not ex._processes:
    time.sleep(0.05)
time.sleep(1.0)  # the initializer (watch thread) has run once the import returned
print(*ex._processes, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is gone for our purpose
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_xrd_worker_exits_when_its_controller_is_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CONTROLLER], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and all(_alive(p) for p in workers)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 60  # a liveness bound, not a speed claim: loaded CI machines are slow
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = [p for p in workers if _alive(p)]
    for p in leftover:
        os.kill(p, signal.SIGKILL)
    assert not leftover, f"XRD worker(s) {leftover} outlived the killed controller"
