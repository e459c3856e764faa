"""An event-loop lag probe: a coroutine that sleeps a few milliseconds in a
loop and records how late it wakes up. Whatever blocks the loop (CPU work
run in it, a blocking call) shows up as lag; work in a thread or a child
process does not, unless it keeps the GIL.

The garbage collector is run before and kept off while probing: late in a
test run the process's heap is large, and one full collection of it (well
over 100 ms on a busy CI machine) would be charged to whatever code was
probed at the time, which made the probe flaky without saying anything about
that code.

    async with LagProbe() as probe:
        await something()
    assert probe.worst < 0.1
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from types import TracebackType


class LagProbe:
    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.worst = 0.0  # seconds: the largest overshoot seen
        self.wakeups = 0
        self._task: asyncio.Task[None] | None = None
        self._collecting = True  # whether the collector was on before

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            late = time.perf_counter() - before - self.interval
            self.worst = max(self.worst, late)
            self.wakeups += 1

    async def __aenter__(self) -> LagProbe:
        gc.collect()
        self._collecting = gc.isenabled()
        gc.disable()
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)  # let it start before the work does
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # One more wake-up, so lag caused by the last step of the work counts.
        await asyncio.sleep(self.interval * 2)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._collecting:
            gc.enable()

    def __str__(self) -> str:
        return f"max event-loop lag {self.worst * 1000:.0f} ms over {self.wakeups} wake-ups"
