"""Waiting for saq jobs in Redis, as tests and benchmarks do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from saq.job import Job, Status

from bot.queue import QUEUE_NAME, make_queue
from bot.settings import Settings


def finished(job: Job) -> bool:
    return job.status in (Status.COMPLETE, Status.FAILED, Status.ABORTED)


async def until_jobs(
    settings: Settings,
    keys: Iterable[str],
    timeout: float,
    done: Callable[[Job], bool] = finished,
    queue_name: str = QUEUE_NAME,
) -> list[Job]:
    """The jobs of `keys` once each is `done`, polled in Redis; TimeoutError
    (naming how many were) after `timeout` seconds."""
    keys = list(keys)
    queue = make_queue(settings, queue_name)
    deadline = time.monotonic() + timeout
    try:
        while True:
            found = await queue.jobs(keys)
            ready = [j for j in found if j is not None and done(j)]
            if len(ready) == len(keys):
                return ready
            if time.monotonic() > deadline:
                states = [j and j.status for j in found]
                raise TimeoutError(f"{queue_name} {keys[:3]}: {states[:3]}, {len(ready)} done")
            await asyncio.sleep(0.02)
    finally:
        await queue.disconnect()


async def until_job(
    settings: Settings,
    key: str,
    timeout: float,
    done: Callable[[Job], bool] = finished,
    queue_name: str = QUEUE_NAME,
) -> Job:
    (job,) = await until_jobs(settings, [key], timeout, done, queue_name)
    return job
