"""``SimLab``: start the simulated instruments (in-process or as processes) and score the truth.

In-process (tests, the demo): all drivers run on one asyncio loop in a background thread of the
caller's process. As processes (``processes=True``, ``synthloop sim-lab serve``): one OS process per
instrument (``python -m sim_lab.serve ROLE ...``), sharing the SQLite sample store in ``workdir``
like real instruments share a lab. Either way they connect (DEALER) to the controller's ROUTER.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymatgen.core import Composition

from drivers import FaultConfig as TransportFaults

from .instruments import instrument_class
from .store import SampleStore
from .world import World, load_world


@dataclass(frozen=True)
class FaultConfig:
    """Seeded faults of a simulated lab (same names as the campaign's ``lab.faults``).

    ``instrument_error_rate``: a command fails before acting; ``timeout_rate``: the instrument
    hangs past the deadline; ``drop_rate``/``duplicate_rate``/``delay_ms``: the drivers' outgoing
    frames are dropped, duplicated or delayed; ``crash_after_commands``: each driver *process*
    dies hard after that many commands (process mode only).
    """

    instrument_error_rate: float = 0.0
    timeout_rate: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_ms: float = 0.0
    crash_after_commands: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("instrument_error_rate", "timeout_rate", "drop_rate", "duplicate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be in [0, 1], got {value}")
        if self.delay_ms < 0:
            raise ValueError(f"FaultConfig.delay_ms must be >= 0, got {self.delay_ms}")

    @classmethod
    def from_object(cls, obj: Any, seed: int = 0) -> FaultConfig:
        """From any object or dict with these field names (e.g. the campaign's FaultSection)."""
        get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
        return cls(
            instrument_error_rate=float(get("instrument_error_rate", 0.0) or 0.0),
            timeout_rate=float(get("timeout_rate", 0.0) or 0.0),
            drop_rate=float(get("drop_rate", 0.0) or 0.0),
            duplicate_rate=float(get("duplicate_rate", 0.0) or 0.0),
            delay_ms=float(get("delay_ms", 0.0) or 0.0),
            crash_after_commands=get("crash_after_commands", None),
            seed=int(get("seed", seed) or seed),
        )

    def transport(self, salt: str) -> TransportFaults | None:
        if not (self.drop_rate or self.duplicate_rate or self.delay_ms):
            return None
        import zlib

        return TransportFaults(
            seed=self.seed * 1_000_003 + zlib.crc32(salt.encode()),
            drop=self.drop_rate,
            duplicate=self.duplicate_rate,
            delay=1.0 if self.delay_ms else 0.0,
            max_delay_s=self.delay_ms / 1000.0,
        )


class LabTruth:
    """The hidden truth, for scoring a campaign after (or during) a run. Never for the controller."""

    def __init__(self, world: World, store: SampleStore) -> None:
        self.world = world
        self.store = store
        self._makeable: set[str] | None = None

    def makeable_targets(self) -> set[str]:
        """Reduced formulas of targets some recipe makes at >= 50 % (world truth, else computed)."""
        if self._makeable is None:
            from .builder import target_truth  # lazy: phase-diagram code is slow to import

            out = set()
            for t in self.world.model.targets:
                truth = t.truth
                ok = truth.makeable if truth is not None else target_truth(self.world, t.formula)["makeable"]
                if ok:
                    out.add(Composition(t.formula).reduced_formula)
            self._makeable = out
        return set(self._makeable)

    def sample_phases(self, sample_id: str) -> dict[str, float]:
        """True crystalline weight fractions of a crucible now (the remainder is amorphous)."""
        state = self.store.get(sample_id)
        if state is None:
            raise KeyError(f"no sample {sample_id!r} in this lab")
        return state.weight_fractions()

    def amorphous_fraction(self, sample_id: str) -> float:
        state = self.store.get(sample_id)
        if state is None:
            raise KeyError(f"no sample {sample_id!r} in this lab")
        return state.amorphous_fraction()

    def samples(self) -> list[str]:
        return self.store.sample_ids()

    def was_made(self, formula: str) -> bool:
        """True when some crucible holds >= 50 wt% of ``formula`` (crystalline)."""
        key = Composition(formula).reduced_formula
        return any(self.sample_phases(s).get(key, 0.0) >= 0.5 for s in self.store.sample_ids())

    def ledger(self) -> list[dict[str, Any]]:
        return self.store.ledger()

    def duplicate_executions(self) -> int:
        return self.store.duplicate_executions()

    def lab_minutes(self) -> float:
        """Sum of instrument minutes in the ledger (busy time, not wall-clock lab time)."""
        seen: set[tuple[str, str]] = set()
        total = 0.0
        for line in self.store.ledger():
            key = (line["command_id"], line["action"])
            if key not in seen:  # a heat of N crucibles is one firing
                seen.add(key)
                total += line["sim_time_min"]
        return total


class SimLab:
    """Launcher of a simulated lab: a dosing station, N box furnaces and an XRD station."""

    def __init__(
        self,
        world: World | str | Path,
        *,
        seed: int = 0,
        speedup: float = 1e6,
        faults: FaultConfig | None = None,
        workdir: Path | str,
        heartbeat_s: float = 1.0,
        lost_after: int = 5,
        furnaces: int | None = None,
    ) -> None:
        if isinstance(world, World):
            self.world = world
            self.world_ref: str | None = world.source if Path(world.source).is_file() else None
        else:
            self.world = load_world(world)
            self.world_ref = str(world)
        self.seed = seed
        if speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        self.speedup = speedup
        self.faults = faults or FaultConfig.from_object(self.world.model.faults, seed)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.heartbeat_s = heartbeat_s
        self.lost_after = lost_after
        self.n_furnaces = furnaces or self.world.instruments.furnaces.count
        self.store = SampleStore(self.workdir / "samples.sqlite")
        self._procs: list[subprocess.Popen[bytes]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.drivers: list[Any] = []
        self.endpoint: str | None = None

    # -- roles ------------------------------------------------------------------------------------
    def roles(self) -> list[tuple[str, str]]:
        """(role, identity) of every instrument this lab runs."""
        out = [("dosing", "sim-dosing")]
        out += [("furnace", f"sim-furnace-{i + 1}") for i in range(self.n_furnaces)]
        out.append(("xrd", "sim-xrd"))
        return out

    def _options(self, identity: str) -> dict[str, Any]:
        f = self.faults
        return {
            "world": self.world,
            "workdir": str(self.workdir),
            "speedup": self.speedup,
            "seed": self.seed,
            "instrument_error_rate": f.instrument_error_rate,
            "timeout_rate": f.timeout_rate,
            "crash_after_commands": f.crash_after_commands,
            "heartbeat_s": self.heartbeat_s,
            "lost_after": self.lost_after,
            "faults": f.transport(identity),
        }

    # -- start / stop -------------------------------------------------------------------------------
    def start(self, endpoint: str, processes: bool = True) -> SimLab:
        """Connect every instrument to the controller's ROUTER at ``endpoint``."""
        if self._procs or self._thread:
            raise RuntimeError("this SimLab is already running")
        self.endpoint = endpoint
        if processes:
            self._start_processes(endpoint)
        else:
            self._start_threads(endpoint)
        return self

    def process_groups(self) -> list[tuple[str, str, int]]:
        """(process name, role, driver count): one OS process per station, all furnaces in one."""
        return [("sim-dosing", "dosing", 1), ("sim-furnaces", "furnace", self.n_furnaces),
                ("sim-xrd", "xrd", 1)]

    def _spawn(self, name: str, role: str, count: int, endpoint: str, crash: bool = True) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        identity = "sim-furnace" if role == "furnace" else name
        cmd = [
            sys.executable, "-m", "sim_lab.serve", role,
            "--connect", endpoint,
            "--identity", identity,
            "--count", str(count),
            "--world", str(self.world_ref),
            "--workdir", str(self.workdir),
            "--seed", str(self.seed),
            "--speedup", str(self.speedup),
            "--heartbeat", str(self.heartbeat_s),
            "--lost-after", str(self.lost_after),
            "--error-rate", str(self.faults.instrument_error_rate),
            "--timeout-rate", str(self.faults.timeout_rate),
            "--drop-rate", str(self.faults.drop_rate),
            "--duplicate-rate", str(self.faults.duplicate_rate),
            "--delay-ms", str(self.faults.delay_ms),
            "--fault-seed", str(self.faults.seed),
            "--parent-pid", str(os.getpid()),
        ]
        if crash and self.faults.crash_after_commands is not None:
            cmd += ["--crash-after", str(self.faults.crash_after_commands)]
        with open(self.workdir / f"{name}.log", "ab") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def _start_processes(self, endpoint: str) -> None:
        if self.world_ref is None:
            path = self.workdir / "world.json"
            self.world.save(path)
            self.world_ref = str(path)
        for name, role, count in self.process_groups():
            self._procs.append(self._spawn(name, role, count, endpoint))

    def _start_threads(self, endpoint: str) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._stop = asyncio.Event()
            try:
                self.drivers = [
                    instrument_class(role, self.world)(
                        identity, self.workdir / f"{identity}.ledger.sqlite", **self._options(identity)
                    )
                    for role, identity in self.roles()
                ]
            except BaseException as exc:  # report construction errors to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()

            async def main() -> None:
                assert self._stop is not None
                await asyncio.gather(*(d.serve(endpoint, stop=self._stop) for d in self.drivers))

            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="sim-lab", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            self._thread.join(5)
            self._thread = None
            raise errors[0]

    def restart(self, name: str) -> None:
        """Start again a station process that died (same identities and ledgers; no crash fault)."""
        if self.endpoint is None or not self._procs:
            raise RuntimeError("lab not started as processes")
        names = [g[0] for g in self.process_groups()]
        if name not in names:
            raise KeyError(f"no process {name!r}; have {names}")
        idx = names.index(name)
        if self._procs[idx].poll() is None:
            raise RuntimeError(f"{name} is still running")
        _, role, count = self.process_groups()[idx]
        self._procs[idx] = self._spawn(name, role, count, self.endpoint, crash=False)

    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """Station processes by name (empty for an in-process lab)."""
        return {g[0]: p for g, p in zip(self.process_groups(), self._procs, strict=False)}

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every instrument (graceful, then terminate/kill processes that linger)."""
        if self._thread is not None:
            if self._loop is not None and self._stop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
            self._thread = None
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._procs = []

    def __enter__(self) -> SimLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def truth(self) -> LabTruth:
        """Scoring only: the hidden truth of this lab."""
        return LabTruth(self.world, self.store)
