"""How late the event loop runs what is ready: a gauge for `/metrics`.

A task sleeps a fixed short interval over and over and records how much later than asked it
woke. A handler, a fold or a JSON encode that holds the loop shows up here as lag, the delay
every request, probe timer and WebSocket write waits behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from aiohttp import web

from cryptomon.http.keys import LOOP_LAG

SAMPLE_EVERY = 0.25
WINDOW_SECONDS = 60.0


class LoopLag:
    """Wake-up delays of the last `WINDOW_SECONDS`, one sample every `SAMPLE_EVERY` seconds."""

    def __init__(self, every: float = SAMPLE_EVERY, window: float = WINDOW_SECONDS) -> None:
        self.every = every
        self.samples: deque[float] = deque(maxlen=max(1, round(window / every)))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.every
            await asyncio.sleep(self.every)
            self.samples.append(max(0.0, loop.time() - due))

    @property
    def last(self) -> float:
        return self.samples[-1] if self.samples else 0.0

    @property
    def window_max(self) -> float:
        return max(self.samples, default=0.0)


async def loop_lag(app: web.Application) -> AsyncIterator[None]:
    """A resource for the app's exit stack: sample for as long as the app runs."""
    sampler = LoopLag()
    app[LOOP_LAG] = sampler
    sampler.start()
    try:
        yield
    finally:
        await sampler.stop()
