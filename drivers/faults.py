"""Seeded fault injection in the transport: drop, duplicate and delay outgoing frames.

Why in the transport: the at-most-once ledger, retransmission and lost-driver detection only
matter when the network misbehaves, so tests and benchmarks must be able to make it misbehave
reproducibly. Both the :class:`~drivers.Dispatcher` and a :class:`~drivers.Driver` accept a
``faults=FaultConfig(...)``; every frame they send passes through :class:`FaultInjector`.
The same seed gives the same sequence of decisions.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultConfig:
    """Probabilities per outgoing frame (independent draws) and the delay range in seconds."""

    seed: int = 0
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    max_delay_s: float = 0.05

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "delay"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be a probability in [0, 1], got {value}")
        if self.max_delay_s < 0:
            raise ValueError(f"FaultConfig.max_delay_s must be >= 0, got {self.max_delay_s}")


@dataclass
class FaultStats:
    """What the injector did (tests assert faults really happened)."""

    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0
    pending: set[asyncio.Task[None]] = field(default_factory=set, repr=False)


class FaultInjector:
    """Wraps a ``send(frames)``; decides per frame with a seeded RNG.

    ``send`` is a coroutine function when the injector is used through :meth:`send`, a plain
    function when it is used through :meth:`send_nowait` (the dispatcher and the SDK send
    without blocking). Both take the same seeded decisions in the same order.
    """

    def __init__(
        self, config: FaultConfig, send: Callable[[list[bytes]], Awaitable[None] | None]
    ) -> None:
        self.config = config
        self._send = send
        self._rng = random.Random(config.seed)
        self.stats = FaultStats()

    def _decide(self) -> tuple[int, float | None]:
        """(copies to send — 0 drops the frame —, delay in seconds or None)."""
        cfg, rng = self.config, self._rng
        self.stats.sent += 1
        drop = rng.random() < cfg.drop
        dup = rng.random() < cfg.duplicate
        delay = rng.random() < cfg.delay
        pause = rng.uniform(0.0, cfg.max_delay_s)
        if drop:
            self.stats.dropped += 1
            return 0, None
        copies = 2 if dup else 1
        self.stats.duplicated += copies - 1
        if delay:
            self.stats.delayed += 1
            return copies, pause
        return copies, None

    def _defer(self, coro: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.stats.pending.add(task)
        task.add_done_callback(self.stats.pending.discard)

    async def send(self, frames: list[bytes]) -> None:
        copies, pause = self._decide()
        if pause is not None:
            self._defer(self._later(pause, frames, copies))
            return
        for _ in range(copies):
            await self._send(frames)  # type: ignore[misc]

    def send_nowait(self, frames: list[bytes]) -> None:
        """Like :meth:`send` for a plain (non-blocking) ``send`` function."""
        copies, pause = self._decide()
        if pause is not None:
            self._defer(self._later_nowait(pause, frames, copies))
            return
        for _ in range(copies):
            self._send(frames)

    async def _later(self, pause: float, frames: list[bytes], copies: int) -> None:
        await asyncio.sleep(pause)
        for _ in range(copies):
            try:
                await self._send(frames)  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - socket closed meanwhile: the frame is just lost
                return

    async def _later_nowait(self, pause: float, frames: list[bytes], copies: int) -> None:
        await asyncio.sleep(pause)
        for _ in range(copies):
            try:
                self._send(frames)
            except Exception:  # noqa: BLE001 - socket closed meanwhile: the frame is just lost
                return
