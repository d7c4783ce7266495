"""ASGI middleware that reports the server's own time per request (``Server-Timing``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class ServerTiming:
    """ASGI middleware adding ``Server-Timing: app;dur=MS`` so benchmarks can read server time."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"server-timing", f"app;dur={ms:.1f}".encode())]
            await send(message)

        await self.app(scope, receive, timed_send)
