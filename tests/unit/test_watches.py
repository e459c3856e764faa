"""Watches (bot/watches.py) against the lab's real Redis (DB 6, which only
these tests use): the store, the slots, scheduling from several workers at
once, the claim that lets one job run a slot, and when a run is worth a post."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis
from saq import Queue
from saq.queue.redis import RedisQueue

from bot import access, blocks
from bot.grammar import describe_every
from bot.queue import QUEUE_NAME, CheckJob, raise_if_cancelled
from bot.settings import Settings
from bot.watches import (
    DUE_KEY,
    WARN_AGAIN,
    NotYours,
    TooManyWatches,
    Watch,
    WatchStore,
    expiring_certificates,
    schedule_once,
    should_post,
)
from tests.support.redisdb import empty_db

T0 = 1_800_000_000.0
SETTINGS = Settings(job_heartbeat=2, job_retries=2)


@pytest.fixture
async def redis(lab_redis: Any) -> AsyncIterator[Redis]:
    async with empty_db(lab_redis.url, 6) as client:
        yield client


@pytest.fixture
async def queue(redis: Redis) -> Queue:
    """The queue on the same database, through the same client."""
    return RedisQueue(redis, name=QUEUE_NAME)


def watch(domain: str = "example.com", channel: str = "C1", **kw: Any) -> Watch:
    fields: dict[str, Any] = {"every": 3600, "user": "U0ONE", "created_at": T0} | kw
    return Watch(channel=channel, domain=domain, display=domain, **fields)


async def queued_jobs(queue: Queue) -> list[CheckJob]:
    """The check jobs waiting in the queue, as CheckJobs."""
    redis = queue.redis  # type: ignore[attr-defined]
    ids = await redis.lrange(queue.namespace("queued"), 0, -1)  # type: ignore[attr-defined]
    jobs = [queue.deserialize(await redis.get(i)) for i in ids]
    return [CheckJob.from_kwargs(dict(j.kwargs)) for j in jobs if j is not None]


def test_slots_count_from_when_the_watch_was_set() -> None:
    w = watch(every=600)
    assert w.slot_at(T0 - 5) == 0  # a clock a little behind: still the first
    assert w.slot_at(T0) == 0 and w.slot_at(T0 + 599.9) == 0
    assert w.slot_at(T0 + 600) == 1 and w.slot_at(T0 + 6000) == 10
    assert w.slot_start(3) == T0 + 1800
    assert w.job_key(3) == f"watch:C1:example.com:{int(T0 * 1000)}:3"
    assert Watch.from_json(w.to_json()) == w
    staged = watch(stages=("tls",), warned={"mx:25 x": T0})
    assert Watch.from_json(staged.to_json()) == staged


async def test_put_replace_list_and_remove(redis: Redis) -> None:
    store = WatchStore(redis)
    assert await store.put(watch("a.test"), limit=2) is None
    assert await store.put(watch("b.test", user="U0TWO"), limit=2) is None
    with pytest.raises(TooManyWatches):
        await store.put(watch("c.test"), limit=2)
    # Setting a watched domain again replaces it, even at the limit (another
    # user's: only as an admin).
    old = await store.put(
        watch("a.test", every=60, user="U0TWO", created_at=T0 + 5), limit=2, admin=True
    )
    assert old is not None and old.every == 3600
    assert await store.put(watch("a.test", channel="C2"), limit=2) is None  # another channel

    assert [w.domain for w in await store.channel_watches("C1")] == ["a.test", "b.test"]
    assert [(w.domain, w.every) for w in await store.channel_watches("C1")] == [
        ("a.test", 60),
        ("b.test", 3600),
    ]
    assert [w.id for w in await store.user_watches("U0TWO")] == ["C1:a.test", "C1:b.test"]
    assert [w.id for w in await store.user_watches("U0ONE")] == ["C2:a.test"]

    assert (await store.remove("C1", "a.test")) is not None
    assert await store.remove("C1", "a.test") is None
    assert [w.domain for w in await store.channel_watches("C1")] == ["b.test"]
    assert [w.id for w in await store.user_watches("U0TWO")] == ["C1:b.test"]
    assert await redis.zscore(DUE_KEY, "C1:a.test") is None


async def test_only_the_setter_or_an_admin_removes_or_replaces_a_watch(redis: Redis) -> None:
    store = WatchStore(redis)
    mine = watch("a.test", user="U0ONE")
    await store.put(mine, limit=5)
    with pytest.raises(NotYours) as refused:
        await store.remove("C1", "a.test", by="U0TWO")
    assert refused.value.watch == mine
    with pytest.raises(NotYours):
        await store.put(watch("a.test", user="U0TWO", every=60), limit=5)
    assert await store.get(mine.id) == mine  # untouched
    assert [w.id for w in await store.user_watches("U0ONE")] == [mine.id]
    assert await redis.zscore(DUE_KEY, mine.id) == T0

    assert await store.put(watch("a.test", user="U0ONE", every=60), limit=5) == mine  # their own
    assert await store.remove("C1", "a.test", by="U0ONE") is not None
    await store.put(mine, limit=5)
    assert await store.remove("C1", "a.test", by="U0TWO", admin=True) == mine
    assert await store.remove("C1", "a.test", by="U0TWO") is None  # nothing left to refuse
    await store.put(mine, limit=5)
    assert await store.remove("C1", "a.test") == mine  # mailcheck itself (channel gone)


async def test_a_skipped_slot_is_recorded_on_the_watch_it_belongs_to(redis: Redis) -> None:
    store = WatchStore(redis)
    w = watch()
    await store.put(w, limit=5)
    skipped = await store.skipped(w, 3)
    assert skipped is not None and skipped.skipped_slot == 3
    assert Watch.from_json(skipped.to_json()) == skipped
    assert (await store.skipped(w, 2)) == skipped  # never moved back
    again = watch(created_at=T0 + 1)
    await store.put(again, limit=5)
    assert await store.skipped(w, 4) is None  # an earlier generation's run
    assert (await store.get(w.id)) == again


async def test_two_schedulers_queue_one_job_per_slot(redis: Redis, queue: Queue) -> None:
    store = WatchStore(redis)
    w = watch(every=600, stages=("dns",))
    await store.put(w, limit=5)
    assert await store.due(T0 - 1) == []

    counts = await asyncio.gather(
        *(schedule_once(queue, store, SETTINGS, T0 + 1) for _ in range(4))
    )
    assert sum(counts) == 1
    (job,) = await queued_jobs(queue)
    assert (job.watch, job.slot, job.watch_generation) == (w.id, 0, w.generation)
    assert job.stages == ("dns",) and job.domain == "example.com" and job.request_id
    assert await redis.zscore(DUE_KEY, w.id) == T0 + 600  # the next slot
    assert await schedule_once(queue, store, SETTINGS, T0 + 599) == 0

    # Workers down for a few slots: the current one runs, the missed ones do not.
    assert await schedule_once(queue, store, SETTINGS, T0 + 3 * 600 + 7) == 1
    assert [j.slot for j in await queued_jobs(queue)] == [0, 3]
    assert await redis.zscore(DUE_KEY, w.id) == T0 + 4 * 600

    # A scheduler that read the watch before the others moved it on queues
    # nothing new: the slot's job key exists.
    assert await schedule_once(queue, store, SETTINGS, T0 + 4 * 600) == 1
    await redis.zadd(DUE_KEY, {w.id: T0})  # as if a late scheduler saw it due
    assert await schedule_once(queue, store, SETTINGS, T0 + 4 * 600 + 1) == 0
    assert [j.slot for j in await queued_jobs(queue)] == [0, 3, 4]


async def test_a_watch_set_again_starts_over(redis: Redis, queue: Queue) -> None:
    store = WatchStore(redis)
    await store.put(watch(), limit=5)
    assert await schedule_once(queue, store, SETTINGS, T0) == 1
    again = watch(created_at=T0 + 10)
    await store.put(again, limit=5)
    assert await schedule_once(queue, store, SETTINGS, T0 + 10) == 1  # its own slot 0
    jobs = await queued_jobs(queue)
    assert [(j.slot, j.watch_generation) for j in jobs] == [
        (0, int(T0 * 1000)),
        (0, again.generation),
    ]
    # The old generation's advance does not move the new watch.
    await store.advance(watch(), 5)
    assert await redis.zscore(DUE_KEY, again.id) == T0 + 10 + 3600


async def test_one_request_claims_a_slot(redis: Redis) -> None:
    store = WatchStore(redis)
    w = watch()
    assert await store.claim(w, 2, "req-a")
    assert await store.claim(w, 2, "req-a")  # its retry
    assert not await store.claim(w, 2, "req-b")  # a second job for the slot
    assert await store.claim(w, 3, "req-b")
    assert await store.claim(replace(w, created_at=T0 + 1), 2, "req-b")  # a new watch


async def test_finished_records_the_run(redis: Redis) -> None:
    store = WatchStore(redis)
    w = watch()
    await store.put(w, limit=5)
    told = await store.finished(w, 0, "r0", "warning", ["mx:25 soon"], True, T0 + 1)
    assert told is not None
    assert (told.last_worst, told.last_request_id, told.last_slot) == ("warning", "r0", 0)
    assert told.warned == {"mx:25 soon": T0 + 1}
    quiet = await store.finished(w, 1, "r1", "warning", ["mx:25 soon"], False, T0 + 3601)
    assert quiet is not None and quiet.warned == {"mx:25 soon": T0 + 1}  # kept, not renewed
    gone = await store.finished(w, 2, "r2", "ok", [], False, T0 + 7201)
    assert gone is not None and gone.warned == {} and gone.last_worst == "ok"
    late = await store.finished(w, 1, "r1", "error", [], False, T0 + 7202)
    assert late is not None and late.last_worst == "ok"  # an older slot does not overwrite
    await store.remove("C1", "example.com")
    assert await store.finished(w, 3, "r3", "ok", [], False, T0) is None


def test_when_a_run_is_worth_a_post() -> None:
    fresh = watch()
    assert should_post(fresh, "ok", [], T0) == (True, "first")
    seen = replace(fresh, last_worst="ok")
    assert should_post(seen, "ok", [], T0) == (False, "")
    assert should_post(seen, "warning", [], T0) == (True, "changed")
    assert should_post(seen, "ok", ["mx:25 soon"], T0) == (True, "expiring")
    told = replace(seen, last_worst="warning", warned={"mx:25 soon": T0})
    assert should_post(told, "warning", ["mx:25 soon"], T0 + 6 * 3600) == (False, "")
    assert should_post(told, "warning", ["mx:25 soon"], T0 + WARN_AGAIN) == (True, "expiring")
    assert should_post(told, "warning", ["mx2:25 other"], T0 + 60) == (True, "expiring")


def test_expiring_certificates_are_named_without_the_day_count() -> None:
    report = {
        "findings": [
            {
                "code": "tls.cert.expiring",
                "target": {"host": "mx.a.test", "address": "192.0.2.1", "port": 25},
                "summary": "certificate expires 2026-12-05 10:00 UTC, in 9 days",
            },
            {
                "code": "tls.cert.expiring",
                "target": {"host": "mx.a.test", "address": "192.0.2.1", "port": 25},
                "summary": "certificate expires 2026-12-05 10:00 UTC, in 9 days",
            },
            {"code": "tls.cert.expired", "target": {"host": "x"}, "summary": "gone"},
        ]
    }
    assert expiring_certificates(report) == [
        "mx.a.test:25 certificate expires 2026-12-05 10:00 UTC"
    ]
    assert expiring_certificates({"findings": []}) == []


def test_watches_text_lists_the_channel_watches() -> None:
    assert "No watches in this channel" in blocks.watches_text([], describe_every)
    ran = watch("b.test", every=21600, last_worst="warning", last_run_at=T0, last_slot=0)
    text = blocks.watches_text([watch("a.test", stages=("tls",)), ran], describe_every)
    lines = text.split("\n")
    assert lines[0] == "*2 watches in this channel*"
    assert "`a.test` every 1h · stages `tls` · set by <@U0ONE> · not run yet" in lines[1]
    assert (
        "`b.test` every 6h · set by <@U0ONE> · last 2027-01-15 08:00 UTC: :warning: warning"
        in (lines[2])
    )
    assert "next 2027-01-15 14:00 UTC" in lines[2]
    assert json.dumps(text)  # plain text, one line per watch
    skipped = replace(ran, skipped_slot=2)  # slots 1 and 2 over the domain's limit
    line = blocks.watch_line(skipped, describe_every)
    assert ":warning: warning · last run skipped: the domain's hourly limit · next" in line
    assert line.endswith("next 2027-01-16 02:00 UTC")  # slot 3


async def test_an_endless_loop_ends_even_when_a_library_swallowed_its_cancel() -> None:
    """saq's sweep (and asyncio.wait_for before 3.12) can swallow a cancellation
    that races a completing wait; the workers' loops must end all the same."""

    async def swallowing_step() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what the library did
            await asyncio.sleep(10)

    async def endless() -> None:
        while True:
            await swallowing_step()
            raise_if_cancelled()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(endless())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


async def test_rate_limits_count_a_use_and_look_without_counting(redis: Redis) -> None:
    assert not await access.over(redis, "domain:a.test", 2, count=False)
    assert not await access.over(redis, "domain:a.test", 2)
    assert not await access.over(redis, "domain:a.test", 2)
    assert await access.over(redis, "domain:a.test", 2, count=False)  # a third would be over
    assert await access.over(redis, "domain:a.test", 2)
    assert not await access.over(redis, "domain:b.test", 2, count=False)
    assert not await access.over(redis, "domain:a.test", 0)  # no limit
    keys = [k.decode() async for k in redis.scan_iter("mailcheck:rate:*")]
    assert len(keys) == 1 and keys[0].startswith("mailcheck:rate:domain:a.test:")
    assert int(await redis.get(keys[0])) == 3  # the looks counted nothing
