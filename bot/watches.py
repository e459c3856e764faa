"""Watches: a domain checked on a schedule, posted only when it matters.

`/mailcheck watch example.com every=6h` in a channel keeps a Watch in Redis.
Every worker runs `schedule` beside its jobs: each tick it takes the watches
that are due and queues one check job per watch and slot. A slot is one
interval counted from when the watch was set (slot 0 runs at once), so a
watch set at 09:12 every 6h runs at 09:12, 15:12, 21:12, ...

Once per slot, however many workers run:
- the saq job key names the watch (and its generation) and the slot, so two
  schedulers that both see a watch due queue one job between them;
- the job then claims the slot (`claim`) before it runs the check: a job
  queued again for a slot already run (its key expired, its scheduler
  stalled) finds the claim taken and ends. A retry of the same job, whose
  worker died mid-check, carries the same request id and takes its claim back.

Slots missed while every worker was down are not caught up: the next tick
runs the current one. Everything lives in Redis, persisted with the rest
(AOF), so watches survive restarts of Redis, the bot and the workers.

    mailcheck:watch:<channel>:<domain>        the Watch, JSON (no expiry)
    mailcheck:watches:due                     sorted set: watch id -> next run (epoch s)
    mailcheck:watches:channel:<channel>       set of watch ids
    mailcheck:watches:user:<user>             set of watch ids that user set
    mailcheck:watches:slot:<id>:<gen>:<slot>  the request id that ran the slot
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import WatchError as _WatchError
from saq import Queue

from bot.queue import CheckJob, enqueue_watch, raise_if_cancelled
from bot.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "mailcheck:watch:"
DUE_KEY = "mailcheck:watches:due"
WARN_AGAIN = 24 * 3600  # an expiring certificate is mentioned again after a day
EXPIRING = "tls.cert.expiring"


@dataclass(frozen=True)
class Watch:
    channel: str
    domain: str  # A-labels
    display: str  # U-labels
    every: int  # seconds between runs
    user: str  # who set it
    created_at: float  # epoch seconds; slots count from here
    stages: tuple[str, ...] | None = None  # None: every stage
    # What the last run found, to tell a change from more of the same.
    last_worst: str = ""  # "" until the first run
    last_request_id: str = ""
    last_run_at: float = 0.0
    last_slot: int = -1
    warned: dict[str, float] = field(default_factory=dict)  # expiring certificate -> when told
    skipped_slot: int = -1  # the last slot not run for the domain's hourly limit

    @property
    def id(self) -> str:
        return f"{self.channel}:{self.domain}"

    @property
    def generation(self) -> int:
        """Tells this watch from an earlier one of the same domain and channel."""
        return int(self.created_at * 1000)

    def slot_at(self, now: float) -> int:
        return max(0, math.floor((now - self.created_at) / self.every))

    def slot_start(self, slot: int) -> float:
        return self.created_at + slot * self.every

    def job_key(self, slot: int) -> str:
        return f"watch:{self.id}:{self.generation}:{slot}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Watch:
        data = json.loads(text)
        stages = data.get("stages")
        return cls(
            channel=str(data["channel"]),
            domain=str(data["domain"]),
            display=str(data.get("display") or data["domain"]),
            every=int(data["every"]),
            user=str(data["user"]),
            created_at=float(data["created_at"]),
            stages=tuple(str(s) for s in stages) if stages is not None else None,
            last_worst=str(data.get("last_worst") or ""),
            last_request_id=str(data.get("last_request_id") or ""),
            last_run_at=float(data.get("last_run_at") or 0.0),
            last_slot=int(data.get("last_slot", -1)),
            warned={str(k): float(v) for k, v in (data.get("warned") or {}).items()},
            skipped_slot=int(data.get("skipped_slot", -1)),
        )


class TooManyWatches(Exception):
    """The channel already has as many watches as allowed."""


class NotYours(Exception):
    """The watch was set by someone else: only they (or an admin) may stop or replace it."""

    def __init__(self, watch: Watch) -> None:
        super().__init__(watch.id)
        self.watch = watch


class WatchStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def key(watch_id: str) -> str:
        return PREFIX + watch_id

    @staticmethod
    def _channel_key(channel: str) -> str:
        return f"mailcheck:watches:channel:{channel}"

    @staticmethod
    def _user_key(user: str) -> str:
        return f"mailcheck:watches:user:{user}"

    async def put(self, watch: Watch, limit: int, *, admin: bool = False) -> Watch | None:
        """Set `watch` (a new one: slot 0 is due now). Returns the watch it
        replaced, if the channel watched this domain already. Raises
        TooManyWatches when the channel has `limit` others, and NotYours when
        the watch it would replace is another user's (unless `admin`)."""
        key = self.key(watch.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, self._channel_key(watch.channel))
                    old_text = await pipe.get(key)
                    count = await pipe.scard(self._channel_key(watch.channel))
                    if old_text is None and count >= limit:
                        raise TooManyWatches(str(count))
                    old = Watch.from_json(old_text) if old_text is not None else None
                    if old is not None and old.user != watch.user and not admin:
                        raise NotYours(old)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, watch.to_json())
                    pipe.zadd(DUE_KEY, {watch.id: watch.created_at})
                    pipe.sadd(self._channel_key(watch.channel), watch.id)
                    if old is not None and old.user != watch.user:
                        pipe.srem(self._user_key(old.user), watch.id)
                    pipe.sadd(self._user_key(watch.user), watch.id)
                    await pipe.execute()
                    return old
                except _WatchError:
                    continue

    async def remove(
        self, channel: str, domain: str, *, by: str | None = None, admin: bool = False
    ) -> Watch | None:
        """End the watch of `domain` in `channel`; the watch it was, or None.
        Asked `by` a user, raises NotYours when another user set it (unless
        `admin`); without `by`, mailcheck itself ends it (the channel is gone,
        its setter no longer allowed)."""
        watch_id = f"{channel}:{domain}"
        key = self.key(watch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    text = await pipe.get(key)
                    old = _readable(text, watch_id)
                    if old is not None and by is not None and old.user != by and not admin:
                        raise NotYours(old)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.delete(key)
                    pipe.zrem(DUE_KEY, watch_id)
                    pipe.srem(self._channel_key(channel), watch_id)
                    if old is not None:
                        pipe.srem(self._user_key(old.user), watch_id)
                    deleted, *_ = await pipe.execute()
                    return old if deleted else None
                except _WatchError:
                    continue

    async def get(self, watch_id: str) -> Watch | None:
        return _readable(await self.redis.get(self.key(watch_id)), watch_id)

    async def channel_watches(self, channel: str) -> list[Watch]:
        return await self._load(await self.redis.smembers(self._channel_key(channel)))

    async def user_watches(self, user: str) -> list[Watch]:
        return await self._load(await self.redis.smembers(self._user_key(user)))

    async def _load(self, ids: Any) -> list[Watch]:
        names = sorted(_text(i) for i in ids)
        if not names:
            return []
        texts = await self.redis.mget([self.key(n) for n in names])
        watches = []
        for text in texts:
            if text is None:
                continue
            try:
                watches.append(Watch.from_json(text))
            except (ValueError, KeyError, TypeError):
                continue
        return sorted(watches, key=lambda w: (w.channel, w.domain))

    async def due(self, now: float) -> list[Watch]:
        ids = await self.redis.zrangebyscore(DUE_KEY, "-inf", now, start=0, num=100)
        return await self._load(ids)

    async def advance(self, watch: Watch, slot: int) -> None:
        """The watch's next run is the start of the slot after `slot` (never
        moved back, and not at all once the watch is gone or set anew)."""
        nxt = watch.slot_start(slot + 1)
        key = self.key(watch.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                current = await pipe.get(key)
                if current is None or Watch.from_json(current).generation != watch.generation:
                    return
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.zadd(DUE_KEY, {watch.id: nxt}, gt=True)
                await pipe.execute()
            except _WatchError:
                return  # changed meanwhile: its new state decides

    async def claim(self, watch: Watch, slot: int, request_id: str) -> bool:
        """True when `request_id` may run this slot: nobody has, or it is
        the request that already claimed it (a retry)."""
        key = f"mailcheck:watches:slot:{watch.id}:{watch.generation}:{slot}"
        ttl = max(2 * watch.every, 3600)
        if await self.redis.set(key, request_id, nx=True, ex=ttl):
            return True
        return _text(await self.redis.get(key)) == request_id

    async def lock(self, watch: Watch, request_id: str, timeout: float) -> bool:
        """Take the watch's run lock: one run of a watch at a time, so that a
        run judges against what the one before it found. False when another
        request holds it (that run is still going). It expires after
        `timeout`, in case its worker died; that job's retry (same request
        id) takes it back."""
        key = f"mailcheck:watches:running:{watch.id}"
        ttl = max(1, int(timeout))
        if await self.redis.set(key, request_id, nx=True, ex=ttl):
            return True
        return _text(await self.redis.get(key)) == request_id

    async def unlock(self, watch: Watch, request_id: str) -> None:
        await self.redis.eval(_RELEASE, 1, f"mailcheck:watches:running:{watch.id}", request_id)

    async def finished(
        self,
        watch: Watch,
        slot: int,
        request_id: str,
        worst: str,
        expiring: list[str],
        told: bool,
        now: float,
    ) -> Watch | None:
        """Record what the run of `slot` found (`told`: it was posted, so the
        expiring certificates were mentioned now); the watch as now stored."""

        def change(current: Watch) -> tuple[Watch, bool]:
            if current.generation != watch.generation or current.last_slot > slot:
                return current, False
            if told:
                warned = dict.fromkeys(expiring, now)
            else:
                warned = {n: current.warned[n] for n in expiring if n in current.warned}
            updated = replace(
                current,
                last_worst=worst,
                last_request_id=request_id,
                last_run_at=now,
                last_slot=slot,
                warned=warned,
            )
            return updated, True

        return await self._change(watch.id, change)

    async def skipped(self, watch: Watch, slot: int) -> Watch | None:
        """Record that `slot` was not run (the domain's hourly limit); the
        watch as now stored, None once it is gone or set anew."""

        def change(current: Watch) -> tuple[Watch | None, bool]:
            if current.generation != watch.generation:
                return None, False
            return replace(current, skipped_slot=max(slot, current.skipped_slot)), True

        return await self._change(watch.id, change)

    async def _change(
        self, watch_id: str, change: Callable[[Watch], tuple[Watch | None, bool]]
    ) -> Watch | None:
        """`change` the stored watch in one optimistic transaction (retried when
        another worker wrote it meanwhile). `change` gives the watch to return
        and whether to store it; None when no watch is stored."""
        key = self.key(watch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    current = _readable(await pipe.get(key), watch_id)
                    if current is None:
                        return None
                    result, store = change(current)
                    if store and result is not None:
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(key, result.to_json())
                        await pipe.execute()
                    return result
                except _WatchError:
                    continue


def _readable(text: str | bytes | None, watch_id: str) -> Watch | None:
    if text is None:
        return None
    try:
        return Watch.from_json(text)
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable watch %s ignored", watch_id)
        return None


# Delete the lock only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def should_post(watch: Watch, worst: str, expiring: list[str], now: float) -> tuple[bool, str]:
    """Whether a watch run is worth a message, and why: its first run, a
    verdict that changed, or a certificate in its expiry warning that was not
    mentioned in the last day."""
    if not watch.last_worst:
        return True, "first"
    if worst != watch.last_worst:
        return True, "changed"
    fresh = [name for name in expiring if now - watch.warned.get(name, 0.0) >= WARN_AGAIN]
    if fresh:
        return True, "expiring"
    return False, ""


async def schedule(queue: Queue, redis: Redis, settings: Settings) -> None:
    """Queue the due watches, every `settings.watch_tick` seconds, forever."""
    store = WatchStore(redis)
    while True:
        try:
            await schedule_once(queue, store, settings, time.time())
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("watch scheduling skipped a tick: %s", exc or type(exc).__name__)
        except Exception:  # a bad watch must not end the scheduling
            log.exception("watch scheduling failed")
        raise_if_cancelled()
        await asyncio.sleep(settings.watch_tick)


async def schedule_once(queue: Queue, store: WatchStore, settings: Settings, now: float) -> int:
    """Queue a job for each due watch's current slot; how many were queued."""
    queued = 0
    for watch in await store.due(now):
        slot = watch.slot_at(now)
        job = CheckJob(
            channel=watch.channel,
            user=watch.user,
            domain=watch.domain,
            display=watch.display,
            stages=watch.stages,
            watch=watch.id,
            watch_generation=watch.generation,
            slot=slot,
        )
        if await enqueue_watch(queue, job, watch.job_key(slot), watch.every, settings):
            queued += 1
        await store.advance(watch, slot)
    return queued


def expiring_certificates(report: dict[str, Any]) -> list[str]:
    """The certificates a report says expire soon, one name each (where, and when)."""
    names = []
    for finding in report.get("findings") or []:
        if finding.get("code") != EXPIRING:
            continue
        target = finding.get("target") or {}
        where = f"{target.get('host') or target.get('address') or ''}:{target.get('port') or ''}"
        # "certificate expires 2026-12-05 10:00 UTC, in 9 days": the same
        # certificate tomorrow says "in 8 days", so the count is left out.
        summary = str(finding.get("summary") or "").split(", in ")[0]
        names.append(f"{where} {summary}"[:300])
    return sorted(set(names))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
