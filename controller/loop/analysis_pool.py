"""XRD whole-pattern fits in worker processes beside the controller.

Why processes: a fit is 0.1-3 s of numpy/scipy work that holds the GIL for most of it, so in a
thread it stalls model training, recipe planning and the event loop that keeps instruments fed.
In a separate process it runs on the other core. The worker is a pure function of its inputs
(pattern, reference phases, settings) returning a ``PhaseAnalysis``, so a fit gives the same numbers in either place;
reflection lists are cached per process (``controller.xrd.reference``), so each worker computes
a phase's reflections once.

If a worker dies (out of memory, killed), the pool is rebuilt and that one fit runs in the
controller's own thread: a lost worker never loses an analysis.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker imports controller.xrd itself, once (see _init_worker)
    from ..xrd import PhaseAnalysis, XrdPattern

log = logging.getLogger(__name__)


def _exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """End this worker once its controller is gone: after a ``kill -9`` of the controller the
    pool's workers are re-parented, not stopped, and every restart would leave another one
    behind holding memory."""
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(0)


@contextlib.contextmanager
def _workers_born_ignoring_sigint() -> Iterator[None]:
    """SIGINT ignored while worker processes are started here, so they inherit the ignored
    disposition from birth (an ignored signal survives exec; Python then keeps it ignored).

    Why: ``_init_worker`` ignores SIGINT only once a worker has imported its way to the
    initializer (seconds on a loaded machine); a Ctrl-C in that gap killed the starting worker,
    printed its traceback and left a broken pool whose shutdown could hang. Only the main thread
    may change a handler; elsewhere this does nothing (the initializer still covers it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _init_worker(parent: int | None = None) -> None:
    """Single-threaded numerics (the worker is one of the two cores' tenants). ``parent`` is the
    controller's pid, passed in rather than read here: a controller killed while this worker
    starts has already handed it to another parent.

    SIGINT is ignored: Ctrl-C reaches the whole process group, and the controller is the one that
    stops (it closes the pool, whose workers then exit); a worker taking the KeyboardInterrupt
    itself only printed a 20-line traceback per worker over the controller's shutdown message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    global _watching
    if not _watching:
        _watching = True
        threading.Thread(target=_exit_with_parent, args=(parent or os.getppid(),), daemon=True,
                         name="exit-with-controller").start()
    import controller.xrd  # noqa: F401 - import once, not in the first fit


_watching = False


def run_analysis(pattern: XrdPattern, phases: list[Any], target: str | None,
                 settings: Any, composition: Any = None) -> PhaseAnalysis:
    """One whole-pattern analysis (the result pickles back from a worker as it is);
    ``composition``: the sample's weighed composition (see controller.xrd.analyze)."""
    from ..xrd import analyze

    return analyze(pattern, phases, target=target, settings=settings, composition=composition)


class AnalysisPool:
    """``workers`` processes (spawned lazily, reused); 0 runs every fit in the calling thread."""

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                                 mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker,
                                                 initargs=(os.getpid(),))
            return self._pool

    def warm_up(self) -> None:
        """Start the workers now (their imports take seconds) so the first fit does not wait."""
        if self.workers > 0:
            pool = self._executor()
            with _workers_born_ignoring_sigint():
                for _ in range(self.workers):
                    pool.submit(_init_worker)

    def analyze(self, pattern: XrdPattern, phases: list[Any], target: str | None,
                settings: Any, composition: Any = None) -> PhaseAnalysis:
        args = (pattern, phases, target, settings, composition)
        if self.workers <= 0:
            return run_analysis(*args)
        try:
            with _workers_born_ignoring_sigint():  # a submit may start a worker process
                future = self._executor().submit(run_analysis, *args)
            return future.result()
        except BrokenProcessPool as exc:
            log.warning("XRD worker process died (%s); pool rebuilt, this fit runs in-process", exc)
            with self._lock:
                broken, self._pool = self._pool, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            return run_analysis(*args)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
