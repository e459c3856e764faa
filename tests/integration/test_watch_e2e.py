"""Watches end to end: set by signed slash commands, scheduled by real saq
workers in real Redis, checked against the lab, posted to the Slack stand-in
only when it matters; once per slot with two workers, and still running after
Redis, the bot and the workers restart."""

# ruff: noqa: F811  (pytest fixtures imported by name, then used as parameters)
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.history import HistoryStore, Run
from bot.queue import redis_client
from bot.settings import Settings
from bot.watches import Watch, WatchStore
from tests.integration.test_bot_e2e import (  # noqa: F401 - fixtures, used by name
    CHANNEL,
    USER,
    Worker,
    _ports,
    all_strings,
    command,
    replies,
    settings,
    slack,
    top_level,
)
from tests.integration.test_history_e2e import _app
from tests.support.slackapi import SlackAPIStandIn

pytestmark = pytest.mark.lab


@pytest.fixture
async def config(settings: Settings) -> Settings:
    """Watches that may run every second, looked for ten times a second."""
    return replace(settings, watch_tick=0.1, watch_min_interval=1, http_port=next(_ports))


@pytest.fixture
async def app(config: Settings) -> AsyncIterator[Settings]:
    async with _app(config):
        yield config


@pytest.fixture
async def redis(config: Settings) -> AsyncIterator[Redis]:
    client = redis_client(config.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def workers(config: Settings) -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for w in started:
            await w.stop()


def start_worker(config: Settings, workers: list[Worker]) -> Worker:
    w = Worker(config)
    w.start()
    workers.append(w)
    return w


async def until(what: str, done: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def watch_runs(redis: Redis, domain: str, channel: str = CHANNEL) -> list[Run]:
    runs = await HistoryStore(redis, 1).runs(channel, domain, limit=100)
    return [r for r in runs if r.trigger == "watch"]


def watch_posts(slack: SlackAPIStandIn) -> list[Any]:
    return [c for c in top_level(slack) if ":eyes: Watch of" in json.dumps(c.params["blocks"])]


def text_of(call: Any) -> str:
    return "\n".join(all_strings(call.params["blocks"]))


async def test_watch_watches_and_unwatch(
    app: Settings, slack: SlackAPIStandIn, redis: Redis, workers: list[Worker]
) -> None:
    status, text = await command(app, slack, "watch healthy.test every=1h stage=dns")
    assert status == 200
    assert text.startswith(":eyes: Watching `healthy.test` every 1h, stages `dns` in this channel")
    assert "/mailcheck unwatch healthy.test" in text
    start_worker(app, workers)

    # The first run is posted at once: the verdict, who set it, why it is here.
    await until("the first watch post", lambda: _count(watch_posts(slack), 1))
    (post,) = watch_posts(slack)
    shown = text_of(post)
    assert f"every 1h, set by <@{USER}>" in shown and "no problems found" in shown
    assert "First check of this watch" in shown
    assert "mailcheck_rerun" in json.dumps(post.params["blocks"])
    await until("the run's record", lambda: _has_runs(redis, "healthy.test", 1))
    await until("the watch's record of it", lambda: _watch_finished(redis))

    _, text = await command(app, slack, "watches")
    lines = text.split("\n")
    assert lines[0] == "*1 watch in this channel*", text
    assert lines[1].startswith("• `healthy.test` every 1h · stages `dns` · set by <@U0TEST1> ·")
    assert ":white_check_mark: ok" in lines[1] and "next " in lines[1]
    _, text = await command(app, slack, "watches", channel="C0ELSEWHERE")
    assert text.startswith("No watches in this channel")

    _, text = await command(app, slack, "history healthy.test")
    assert "watch set by <@U0TEST1>" in text

    _, text = await command(app, slack, "watch healthy.test every=2h")
    assert "every 2h (was every 1h)" in text
    _, text = await command(app, slack, "unwatch healthy.test")
    assert text == "Stopped watching `healthy.test` in this channel."
    _, text = await command(app, slack, "unwatch healthy.test")
    assert "is not watched in this channel" in text
    _, text = await command(app, slack, "watches")
    assert text.startswith("No watches in this channel")
    assert await WatchStore(redis).channel_watches(CHANNEL) == []


async def test_watch_limits(
    settings: Settings,
    slack: SlackAPIStandIn,
) -> None:
    strict = replace(settings, max_watches=1, http_port=next(_ports))  # 15-minute minimum
    async with _app(strict):
        _, text = await command(strict, slack, "watch healthy.test every=5m")
        assert text == "`every=` must be at least 15m here, not 5m."
        _, text = await command(strict, slack, "watch healthy.test every=15m")
        assert text.startswith(":eyes: Watching `healthy.test` every 15m")
        _, text = await command(strict, slack, "watch nomx.test every=1d")
        assert "has 1 watches, the most allowed" in text
        _, text = await command(strict, slack, "watch healthy.test every=1d")  # replacing is fine
        assert "every 1d (was every 15m)" in text


async def test_two_workers_run_each_slot_once(
    app: Settings, slack: SlackAPIStandIn, redis: Redis, workers: list[Worker]
) -> None:
    start_worker(app, workers)
    start_worker(app, workers)
    _, text = await command(app, slack, "watch healthy.test every=2s stage=dns")
    assert text.startswith(":eyes: Watching")
    await until("four slots", lambda: _has_runs(redis, "healthy.test", 4), timeout=40)
    (watch,) = await WatchStore(redis).channel_watches(CHANNEL)
    await command(app, slack, "unwatch healthy.test")
    await asyncio.sleep(0.5)  # a slot's job already queued may still finish

    runs = await watch_runs(redis, "healthy.test")
    claims = {
        key.decode(): str(await redis.get(key), "ascii")
        async for key in redis.scan_iter("mailcheck:watches:slot:*")
    }
    slots = sorted(int(key.rsplit(":", 1)[1]) for key in claims)
    # Every slot ran at most once: one claim each, each claim's request the
    # one run kept for it, and no run without its claim. (A slot that comes
    # due while the last run is still running is skipped, not queued twice.)
    assert len(slots) == len(set(slots)) >= 4
    assert sorted(claims.values()) == sorted(r.request_id for r in runs)
    jobs = [k async for k in redis.scan_iter("saq:job:mailcheck:watch:*")]
    assert len(jobs) >= len(slots)
    # No slot ran before it was due.
    starts = sorted(r.timestamp for r in runs)
    assert all(
        start >= watch.slot_start(n) - 0.01 for n, start in zip(slots, starts, strict=True)
    ), (slots, starts)
    # Nothing changed after the first: one post.
    assert len(watch_posts(slack)) == 1


async def test_a_watch_survives_restarts(
    config: Settings,
    slack: SlackAPIStandIn,
    redis: Redis,
    workers: list[Worker],
    lab_redis: Any,
) -> None:
    async with _app(config):
        _, text = await command(config, slack, "watch healthy.test every=2s stage=dns")
    assert text.startswith(":eyes: Watching")
    first = start_worker(config, workers)
    await until("the first run", lambda: _has_runs(redis, "healthy.test", 1))
    await until("the watch's record of it", lambda: _watch_finished(redis))

    # Redis stops and starts again (its AOF kept) under a running worker.
    await asyncio.to_thread(lab_redis.restart)
    (watch,) = await WatchStore(redis).channel_watches(CHANNEL)
    assert watch.every == 2 and watch.last_slot >= 0
    runs = len(await watch_runs(redis, "healthy.test"))
    await until("a run after Redis restarted", lambda: _has_runs(redis, "healthy.test", runs + 1))

    # The worker is replaced: the new one takes the watch on.
    await first.stop()
    workers.remove(first)
    runs = len(await watch_runs(redis, "healthy.test"))
    start_worker(config, workers)
    await until("a run by the new worker", lambda: _has_runs(redis, "healthy.test", runs + 1))

    # A new bot (the first one stopped above) lists it.
    async with _app(config):
        _, text = await command(config, slack, "watches")
    assert "`healthy.test` every 2s" in text
    assert len(watch_posts(slack)) == 1  # the verdict never changed


async def test_posts_when_the_verdict_changes_or_a_certificate_expires(
    app: Settings, slack: SlackAPIStandIn, redis: Redis, workers: list[Worker]
) -> None:
    store = WatchStore(redis)
    worker = start_worker(app, workers)
    await command(app, slack, "watch tls-expiring.test every=2s stage=connect,tls")
    await until("the first post", lambda: _count(watch_posts(slack), 1))
    shown = text_of(watch_posts(slack)[0])
    assert "First check of this watch" in shown
    assert "mx.tls-expiring.test" in shown and "certificate expires" in shown
    parent_ts = watch_posts(slack)[0].response["ts"]

    async def explained() -> bool:  # the problem, in the thread
        return "tls.cert.expiring" in "\n".join(text_of(c) for c in replies(slack, parent_ts))

    await until("the thread", explained)

    # More runs, the same certificate: told already today, nothing posted.
    await until("two more runs", lambda: _has_runs(redis, "tls-expiring.test", 3))
    assert len(watch_posts(slack)) == 1
    # A day later it is mentioned again. (The state is edited with no worker
    # running, so that no run in flight writes over the edit.)
    worker = await _restart(app, workers, worker)
    await _edit(
        store,
        f"{CHANNEL}:tls-expiring.test",
        lambda w: replace(w, warned={name: at - 25 * 3600 for name, at in w.warned.items()}),
    )
    workers.append(worker)
    worker.start()
    await until("the reminder", lambda: _count(watch_posts(slack), 2))
    assert "A certificate is about to expire." in text_of(watch_posts(slack)[1])
    await command(app, slack, "unwatch tls-expiring.test")

    # The verdict changes: the last run had found an error, this one finds none.
    await command(app, slack, "watch healthy.test every=2s stage=dns")
    await until("healthy's first post", lambda: _count(watch_posts(slack), 3))
    worker = await _restart(app, workers, worker)
    runs = len(await watch_runs(redis, "healthy.test"))
    await _edit(store, f"{CHANNEL}:healthy.test", lambda w: replace(w, last_worst="error"))
    workers.append(worker)
    worker.start()
    await until("the change", lambda: _count(watch_posts(slack), 4))
    changed = text_of(watch_posts(slack)[3])
    assert "The verdict changed: it was :x: error." in changed and "no problems found" in changed
    await until("its record", lambda: _has_runs(redis, "healthy.test", runs + 1))


async def _restart(app: Settings, workers: list[Worker], worker: Worker) -> Worker:
    """Stop `worker` (its runs finish first); a new one, not started yet."""
    await worker.stop()
    workers.remove(worker)
    return Worker(app)


async def _edit(store: WatchStore, watch_id: str, change: Callable[[Watch], Watch]) -> None:
    current = await store.get(watch_id)
    assert current is not None
    await store.redis.set(store.key(watch_id), change(current).to_json())


async def _count(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _watch_finished(redis: Redis) -> bool:
    """The channel's one watch has recorded a finished run: what the watches
    list shows. (A run keeps its history before it records that.)"""
    watches = await WatchStore(redis).channel_watches(CHANNEL)
    return len(watches) == 1 and bool(watches[0].last_worst)


async def _has_runs(redis: Redis, domain: str, n: int) -> bool:
    return len(await watch_runs(redis, domain)) >= n


async def test_a_watch_ends_when_its_channel_is_gone(
    app: Settings, slack: SlackAPIStandIn, redis: Redis, workers: list[Worker]
) -> None:
    slack.fail("chat.postMessage", error="is_archived", times=100)
    await command(app, slack, "watch healthy.test every=1h stage=dns")
    assert len(await WatchStore(redis).channel_watches(CHANNEL)) == 1
    start_worker(app, workers)

    async def ended() -> bool:
        return await WatchStore(redis).channel_watches(CHANNEL) == []

    await until("the watch to end", ended)
    assert [c.error for c in slack.calls_to("chat.postMessage")] == ["is_archived"]
    assert await redis.zscore("mailcheck:watches:due", f"{CHANNEL}:healthy.test") is None


# -- who may set, stop and run a watch (issue 16) ------------------------------------------------

OTHER, ADMIN = "U0TEST2", "U0ADMIN1"


async def test_only_the_setter_or_an_admin_stops_or_replaces_a_watch(
    settings: Settings, slack: SlackAPIStandIn, redis: Redis
) -> None:
    """The attack: user B stops (or quietly replaces) user A's watch."""
    config = replace(settings, admin_users=frozenset({ADMIN}), http_port=next(_ports))
    store = WatchStore(redis)
    async with _app(config):
        _, text = await command(config, slack, "watch healthy.test every=1h stage=dns")
        assert text.startswith(":eyes: Watching `healthy.test` every 1h")

        _, text = await command(config, slack, "unwatch healthy.test", user=OTHER)
        assert text == (
            f":no_entry: `healthy.test` is watched here by <@{USER}>: only they or a "
            "mailcheck admin can stop or change it."
        )
        _, text = await command(config, slack, "watch healthy.test every=1d", user=OTHER)
        assert text.startswith(f":no_entry: `healthy.test` is watched here by <@{USER}>")
        (kept,) = await store.channel_watches(CHANNEL)
        assert (kept.user, kept.every) == (USER, 3600)

        _, text = await command(config, slack, "unwatch healthy.test", user=ADMIN)
        assert text == "Stopped watching `healthy.test` in this channel."
        assert await store.channel_watches(CHANNEL) == []


async def test_a_user_not_allowed_cannot_set_a_watch(
    settings: Settings, slack: SlackAPIStandIn, redis: Redis
) -> None:
    config = replace(settings, allowed_users=frozenset({USER}), http_port=next(_ports))
    async with _app(config):
        _, text = await command(config, slack, "watch healthy.test every=1h", user=OTHER)
    assert text == ":no_entry: You are not on the list of mailcheck users; ask your admin."
    assert await WatchStore(redis).channel_watches(CHANNEL) == []


async def test_a_watch_ends_when_its_setter_is_no_longer_allowed(
    app: Settings, slack: SlackAPIStandIn, redis: Redis, workers: list[Worker]
) -> None:
    """The watch was set while its setter was allowed; the operator then took
    them off MAILCHECK_ALLOWED_USERS. Its runs must not go on in their name."""
    _, text = await command(app, slack, "watch healthy.test every=1h stage=dns")
    assert text.startswith(":eyes: Watching")
    start_worker(replace(app, allowed_users=frozenset({OTHER})), workers)

    async def ended() -> bool:
        return await WatchStore(redis).channel_watches(CHANNEL) == []

    await until("the watch to end", ended)
    await until("the notice", lambda: _count(top_level(slack), 1))
    (notice,) = top_level(slack)
    assert notice.params["channel"] == CHANNEL
    assert notice.params["blocks"][0]["text"]["text"] == (
        f":no_entry: Stopped watching `healthy.test` (every 1h, set by <@{USER}>): "
        f"<@{USER}> is no longer on the list of mailcheck users."
    )
    assert await watch_runs(redis, "healthy.test") == []  # no check ran in their name


async def test_watch_runs_count_against_the_domain_rate(
    config: Settings, slack: SlackAPIStandIn, redis: Redis, workers: list[Worker]
) -> None:
    """A watch every second is a check every second: the domain's hourly limit
    holds for watch runs as for commands, and the channel is told, once."""
    limited = replace(config, domain_rate=2)
    async with _app(limited):
        _, text = await command(limited, slack, "watch healthy.test every=1s stage=dns")
        assert text.startswith(":eyes: Watching")
        start_worker(limited, workers)
        await until("two runs", lambda: _has_runs(redis, "healthy.test", 2))
        await until("the notice", lambda: _count(_rate_notices(slack), 1))
        await asyncio.sleep(3)  # three more slots come due
        assert len(await watch_runs(redis, "healthy.test")) == 2
        (notice,) = _rate_notices(slack)
        assert text_of(notice).startswith(
            ":hourglass: Skipped the watch of `healthy.test` (every 1s, set by "
            f"<@{USER}>): `healthy.test` was checked 2 times in the last hour, the most allowed."
        )
        _, text = await command(limited, slack, "healthy.test stage=dns")
        assert text.startswith(":hourglass: healthy.test was checked 2 times in the last hour")


async def test_setting_a_watch_counts_against_the_user_rate(
    config: Settings, slack: SlackAPIStandIn, redis: Redis
) -> None:
    """Each watch set runs a check at once: watch, unwatch, watch... must not
    be a way around the user's hourly limit."""
    limited = replace(config, user_rate=2)
    async with _app(limited):
        for _ in range(2):
            _, text = await command(limited, slack, "watch healthy.test every=1h stage=dns")
            assert text.startswith(":eyes: Watching"), text
            await command(limited, slack, "unwatch healthy.test")
        _, text = await command(limited, slack, "watch healthy.test every=1h stage=dns")
        assert text == ":hourglass: You have run 2 checks in the last hour; try again later."
    assert await WatchStore(redis).channel_watches(CHANNEL) == []


def _rate_notices(slack: SlackAPIStandIn) -> list[Any]:
    return [c for c in top_level(slack) if ":hourglass: Skipped the watch" in text_of(c)]
