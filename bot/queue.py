"""The job queue between the Slack front end and the workers (saq on Redis).

A check job carries everything a worker needs as plain JSON. Its saq key is
derived from channel, domain and options, so the same request made while one
is queued or running joins it instead of starting another; `request_id` is
unique per request and keys the worker's Slack bookkeeping, so a retried job
edits what it already posted instead of posting again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job, Queue
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from bot.settings import Settings
from checks.core.model import Stage
from checks.core.names import normalize_domain, normalize_selector, normalize_sender_ip

logger = logging.getLogger(__name__)

QUEUE_NAME = "mailcheck"
POST_QUEUE_NAME = "mailcheck-post"  # Slack posting, beside the check slots (bot.outbox)
ENQUEUE_TIMEOUT = 2.0  # Slack wants its ack within 3 s


class QueueUnavailable(Exception):
    """Redis did not take the job (down, or too slow to answer in time)."""


@dataclass(frozen=True)
class CheckJob:
    channel: str
    user: str
    domain: str  # A-labels
    display: str  # U-labels
    stages: tuple[str, ...] | None = None  # Stage values; None: all
    account: str | None = None
    dkim_selectors: tuple[str, ...] = ()
    sender_ips: tuple[str, ...] = ()
    request_id: str = ""
    # A watch's scheduled run: the watch's id and generation, and the slot.
    watch: str = ""
    watch_generation: int = 0
    slot: int = -1

    def with_id(self) -> CheckJob:
        return CheckJob(**{**asdict(self), "request_id": self.request_id or uuid.uuid4().hex})

    @property
    def dedupe_key(self) -> str:
        stages = ",".join(sorted(self.stages)) if self.stages else "all"
        extra = ",".join(self.dkim_selectors) + "/" + ",".join(self.sender_ips)
        return f"check:{self.channel}:{self.domain}:{stages}:{self.account or '-'}:{extra}"

    def kwargs(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = list(self.stages) if self.stages is not None else None
        data["dkim_selectors"] = list(self.dkim_selectors)
        data["sender_ips"] = list(self.sender_ips)
        return data

    def rerun_value(self) -> str:
        """The Re-run button's value: what to check again. Where and for whom
        come from the click itself (its channel and user)."""
        value: dict[str, Any] = {"domain": self.domain, "stages": self.stages}
        if self.account:
            value["account"] = self.account
        if self.dkim_selectors:
            value["dkim_selectors"] = self.dkim_selectors
        if self.sender_ips:
            value["sender_ips"] = self.sender_ips
        return json.dumps(value, separators=(",", ":"))

    @classmethod
    def from_rerun(cls, value: str, channel: str, user: str) -> CheckJob:
        """The job a Re-run click asks for, every part validated again (a
        button's value comes back from Slack, written by anyone who can forge
        a payload). Raises ValueError, TypeError, KeyError or InputError on a
        malformed one. Buttons posted before the keys were spelt out (d, s, a,
        k, i) still work."""
        data = json.loads(value)
        if not isinstance(data, dict):
            raise TypeError("a Re-run value is a JSON object")

        def get(key: str, old: str) -> Any:
            return data.get(key, data.get(old))

        domain = get("domain", "d")
        if not isinstance(domain, str):
            raise KeyError("a Re-run value names its domain")
        name = normalize_domain(domain)
        stages = get("stages", "s")
        return cls(
            channel=channel,
            user=user,
            domain=name.ascii,
            display=name.unicode,
            stages=tuple(Stage(s).value for s in stages) if stages else None,
            account=get("account", "a") or None,
            dkim_selectors=tuple(normalize_selector(k) for k in get("dkim_selectors", "k") or ()),
            sender_ips=tuple(normalize_sender_ip(i) for i in get("sender_ips", "i") or ()),
        )

    @classmethod
    def from_kwargs(cls, data: dict[str, Any]) -> CheckJob:
        stages = data.get("stages")
        return cls(
            **{
                **data,
                "stages": tuple(stages) if stages is not None else None,
                "dkim_selectors": tuple(data.get("dkim_selectors") or ()),
                "sender_ips": tuple(data.get("sender_ips") or ()),
            }
        )


@contextlib.asynccontextmanager
async def heartbeat(ctx: dict[str, Any], settings: Settings) -> AsyncIterator[None]:
    """Keep the running job's heartbeat while the body runs: the sweepers give
    a job without one for MAILCHECK_JOB_HEARTBEAT seconds to another worker."""
    job = ctx.get("job")

    async def beat() -> None:
        while job is not None:
            await asyncio.sleep(max(settings.job_heartbeat / 3, 0.5))
            await job.update()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def raise_if_cancelled() -> None:
    """For the workers' endless loops (sweeping, scheduling): end the loop if
    it was cancelled while inside saq or redis-py, which can swallow a
    cancellation that races a completing wait (asyncio.wait_for before Python
    3.12); shutdown would otherwise wait for the loop forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def redis_client(url: str) -> Redis:
    """A Redis client that, when Redis restarts, reconnects and tries the
    command again (once per pooled connection the old server closed) instead
    of failing it."""
    return Redis.from_url(
        url, retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError]
    )


# How long a sweep waits for a stuck job's worker to see its abort before it
# queues the job again, as saq does. A worker that missed a whole heartbeat
# is taken for dead and not waited for (those 5 s were half of a takeover's 10 s).
ABORT_WAIT = 5.0

# The jobs the sweepers have found dequeued but not started: id -> when first
# seen (ms) and at which attempt. Shared by every worker's sweeper.
UNSTARTED_KEY = "mailcheck:sweep:unstarted"

_ACTIVE_JOBS = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""


class MailcheckQueue(RedisQueue):
    """saq's Redis queue, with a sweeper that takes over only dead workers' jobs.

    saq's sweeper takes a job in the active list that is not marked active for
    stuck. But a worker moves a job to that list (its dequeue) one Redis round
    trip before it marks it active, and the sweep and the schedule poll run in
    step, so a retried job is often caught in that instant: saq then writes
    its stale copy over the job (aborting it, or running it twice). Here such
    a job is left alone until it has stayed unstarted for its heartbeat, the
    same grace a started job gets.

    And saq retries a swept job after its retry_delay, and only once its
    schedule poll (every second) queues it: that, and the abort wait, came on
    top of MAILCHECK_JOB_HEARTBEAT + MAILCHECK_SWEEP_INTERVAL. A job whose
    worker went silent is queued again at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._at_once: set[str] = set()  # ids of swept jobs being queued again now
        self._active_jobs_script: Any = None

    async def sweep(self, lock: int = 60, abort: float = ABORT_WAIT) -> list[str]:
        """saq's upkeep calls this once at a worker's start, then hourly, with
        a lock of an hour that would keep every worker's sweeper (`takeover`,
        every MAILCHECK_SWEEP_INTERVAL) from running: it does nothing."""
        return []

    async def takeover(self, lock: int, abort: float = ABORT_WAIT) -> list[str]:
        """One sweep, unless a worker swept within `lock` seconds: the ids of
        the jobs it took over (queued again, or aborted when out of attempts)."""
        if self._active_jobs_script is None:
            self._active_jobs_script = self.redis.register_script(_ACTIVE_JOBS)
        id_jobs = await self._active_jobs_script(
            keys=[self._sweep, self._active], args=[lock], client=self.redis
        )
        if not id_jobs:  # none active, or another worker swept within `lock` seconds
            return []
        swept: list[str] = []
        unstarted: set[str] = set()
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                swept.append(job_id)
            elif job.status == Status.QUEUED:
                unstarted.add(job.id)
                if await self._dead_before_start(job):
                    await self._sweep_job(job, dead=True, abort=abort)
                    swept.append(job_id)
            elif job.status != Status.ACTIVE or job.stuck:
                await self._sweep_job(job, dead=_silent(job), abort=abort)
                swept.append(job_id)
        seen = await self.redis.hkeys(UNSTARTED_KEY)
        gone = [k for k in seen if _text(k) not in unstarted]
        if gone:
            await self.redis.hdel(UNSTARTED_KEY, *gone)
        return [_text(job_id) for job_id in swept]

    async def _dead_before_start(self, job: Job) -> bool:
        """Dequeued and not started: its worker is starting it, or died doing
        so. Dead once it has been seen so for its heartbeat (at least 1 s)."""
        mark = f"{job.attempts}:{now()}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(UNSTARTED_KEY, job.id, mark)
            pipe.expire(UNSTARTED_KEY, 86400)
            pipe.hget(UNSTARTED_KEY, job.id)
            *_, seen = await pipe.execute()
        attempts, _, since = _text(seen or b"").partition(":")
        if attempts != str(job.attempts) or not since.isdigit():  # seen at an earlier attempt
            await self.redis.hset(UNSTARTED_KEY, job.id, mark)
            return False
        return now() - int(since) > max(job.heartbeat, 1) * 1000

    async def _sweep_job(self, job: Job, *, dead: bool, abort: float) -> None:
        """saq's sweep of one job. A dead worker's job is queued again at
        once; any other is given `abort` seconds to see its abort first."""
        logger.info("sweeping %s (%s)", job.id, "its worker is gone" if dead else "stuck")
        await self.abort(job, error=self.swept_error_message)
        if not dead:
            with contextlib.suppress(TimeoutError):
                await job.refresh(abort)
            if job.status != Status.ABORTING:
                return  # its worker saw the abort and ended the job itself
        if not job.retryable:
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)
            return
        if dead:
            self._at_once.add(job.id)
            await self.redis.hdel(UNSTARTED_KEY, job.id)
        try:
            await self.retry(job, self.swept_error_message)
        finally:
            self._at_once.discard(job.id)

    async def _retry(self, job: Job, error: str | None) -> None:
        if job.id not in self._at_once:
            await super()._retry(job, error)
            return
        # As saq's retry without a delay, in one transaction.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self._active, 1, job.id)
            pipe.lrem(self._queued, 1, job.id)
            pipe.zadd(self._incomplete, {job.id: job.scheduled})
            pipe.rpush(self._queued, job.id)
            pipe.set(job.id, self.serialize(job))
            await pipe.execute()
        await self.notify(job)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _silent(job: Job) -> bool:
    """Started, then no heartbeat for its `heartbeat` seconds: its worker is gone."""
    return bool(job.started and job.heartbeat and now() - job.touched > job.heartbeat * 1000)


def make_queue(settings: Settings, name: str = QUEUE_NAME) -> MailcheckQueue:
    return MailcheckQueue(redis_client(settings.redis_url), name=name)


def post_timeout(settings: Settings) -> int:
    """A post job's deadline: it waits for its check (which may be retried)
    and then for its channel's pace."""
    return 2 * settings.job_timeout + 60


async def enqueue_post(queue: Queue, job: CheckJob, settings: Settings) -> bool:
    """Queue the delivery of `job`'s outbox (bot.outbox); False when it is
    queued or running already."""
    queued = await queue.enqueue(
        "post_job",
        key=f"post:{job.request_id}",
        timeout=post_timeout(settings),
        heartbeat=settings.job_heartbeat,
        retries=settings.job_retries + 2,
        retry_delay=1.0,
        ttl=3600,
        **job.kwargs(),
    )
    return queued is not None


async def enqueue_check(queue: Queue, job: CheckJob, settings: Settings) -> bool:
    """Queue the check; False when an identical one is already queued or running.
    Raises QueueUnavailable when Redis cannot take it in time."""
    try:
        return await asyncio.wait_for(
            _enqueue(queue, job, job.dedupe_key, 3600, settings), ENQUEUE_TIMEOUT
        )
    except (TimeoutError, OSError, RedisError) as exc:
        raise QueueUnavailable(str(exc) or type(exc).__name__) from exc


async def enqueue_watch(
    queue: Queue, job: CheckJob, key: str, every: int, settings: Settings
) -> bool:
    """Queue a watch's run of one slot; False when that slot's job exists
    already (another scheduler queued it). The job's record outlives the
    slot, so a late scheduler cannot queue it again."""
    return await _enqueue(queue, job, key, max(2 * every, 3600), settings)


async def enqueue_sendtest(
    queue: Queue, step: str, key: str, settings: Settings, scheduled: float = 0, **fields: Any
) -> bool:
    """Queue one step of a send test (bot.sendtest_jobs): "start" (hand out the
    address), "judge" (a message arrived) or "deadline" (scheduled for when
    the address expires). False when that step is queued already."""
    queued = await queue.enqueue(
        "sendtest_job",
        key=key,
        scheduled=int(scheduled),
        timeout=settings.job_timeout,
        heartbeat=settings.job_heartbeat,
        retries=settings.job_retries,
        retry_delay=1.0,
        ttl=settings.sendtest_ttl + 3600,
        step=step,
        **fields,
    )
    return queued is not None


async def _enqueue(queue: Queue, job: CheckJob, key: str, ttl: int, settings: Settings) -> bool:
    """saq's enqueue with our job settings; False when a job with `key` exists."""
    queued = await queue.enqueue(
        "check_job",
        key=key,
        timeout=settings.job_timeout,
        heartbeat=settings.job_heartbeat,
        retries=settings.job_retries,
        retry_delay=1.0,
        ttl=ttl,
        **job.with_id().kwargs(),
    )
    return queued is not None
