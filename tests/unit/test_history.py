"""The history of runs (bot/history.py) against the lab's real Redis (DB 3,
which only these tests use), its Slack text (bot/blocks.py), and the
worker's "Changes since" post."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.history import HistoryStore, Run
from bot.poster import Poster
from bot.queue import CheckJob
from bot.worker import changes_write
from checks.report.diff import ReportDiff
from tests.support.redisdb import empty_db
from tests.support.slackapi import SlackAPIStandIn

DAY = 24 * 3600
NOW = datetime.now(UTC)


@pytest.fixture
async def redis(lab_redis: Any) -> AsyncIterator[Redis]:
    async with empty_db(lab_redis.url, 3) as client:
        yield client


def run(
    request_id: str,
    *,
    channel: str = "C1",
    domain: str = "example.com",
    user: str = "U0ONE",
    ago: float = 0.0,
    worst: str = "ok",
    counts: dict[str, int] | None = None,
    trigger: str = "",
) -> Run:
    return Run(
        trigger=trigger,
        request_id=request_id,
        domain=domain,
        display=domain,
        channel=channel,
        user=user,
        started_at=(NOW - timedelta(seconds=ago)).isoformat(),
        worst=worst,
        counts=counts or {},
        parent_ts=f"1700000000.{int(ago) % 1000000:06d}",
    )


def report(domain: str = "example.com", findings: list[dict[str, Any]] | None = None) -> dict:
    return {
        "schema_version": 1,
        "domain": domain,
        "domain_display": domain,
        "stages": ["dns"],
        "started_at": NOW.isoformat(),
        "duration": 0.5,
        "worst": "ok",
        "counts": {"ok": 1},
        "findings": findings or [],
        "timings": [],
        "transcripts": {},
        "facts": {},
    }


def finding(code: str, severity: str = "warning", summary: str = "bad") -> dict[str, Any]:
    return {
        "code": code,
        "severity": severity,
        "stage": "dns",
        "target": {"host": "example.com", "address": None, "port": None, "protocol": None},
        "summary": summary,
        "detail": "",
        "evidence": [],
        "fix": None,
        "reproduce": None,
        "data": {},
    }


# --- the store -------------------------------------------------------------------


async def test_runs_are_listed_newest_first_for_one_channel_and_domain(redis: Redis) -> None:
    store = HistoryStore(redis, 90)
    for r in (
        run("a1", ago=300),
        run("a2", ago=200),
        run("a3", ago=100),
        run("b1", channel="C2", ago=50),
        run("o1", domain="other.example", ago=10),
    ):
        await store.record(r)
    assert [r.request_id for r in await store.runs("C1", "example.com")] == ["a3", "a2", "a1"]
    assert [r.request_id for r in await store.runs("C1", "example.com", limit=2)] == ["a3", "a2"]
    assert [r.request_id for r in await store.runs("C2", "example.com")] == ["b1"]
    assert await store.runs("C3", "example.com") == []
    assert [r.request_id for r in await store.channel_runs("C1")] == ["o1", "a3", "a2", "a1"]
    assert [r.request_id for r in await store.user_runs("C2", "U0ONE")] == ["b1"]
    assert (await store.runs("C1", "example.com"))[0] == run("a3", ago=100)  # round trip


async def test_recording_a_run_again_replaces_it(redis: Redis) -> None:
    store = HistoryStore(redis, 90)
    await store.record(run("a1", ago=100))
    await store.record(run("a1", ago=10, worst="error", counts={"error": 2}))  # a retried job
    (only,) = await store.runs("C1", "example.com")
    assert only.worst == "error" and only.counts == {"error": 2}


async def test_previous_is_the_run_before_in_the_same_channel(redis: Redis) -> None:
    store = HistoryStore(redis, 90)
    for r in (run("a1", ago=300), run("b1", channel="C2", ago=250), run("a2", ago=200)):
        await store.record(r)
    previous = await store.previous("C1", "example.com", "a2")
    assert previous is not None and previous.request_id == "a1"
    assert await store.previous("C1", "example.com", "a1") is None  # the first
    assert await store.previous("C2", "example.com", "b1") is None  # C1's runs are not C2's
    assert await store.previous("C2", "example.com", "a2") is None  # not in C2's history
    assert await store.previous("C1", "example.com", "nope") is None


async def test_send_tests_are_kept_but_compared_only_with_send_tests(redis: Redis) -> None:
    store = HistoryStore(redis, 90)
    for r in (
        run("c1", ago=400),
        run("s1", ago=300, trigger="sendtest"),
        run("c2", ago=200),
        run("s2", ago=100, trigger="sendtest"),
        run("w1", ago=50, trigger="watch"),
    ):
        await store.record(r)
    listed = [r.request_id for r in await store.runs("C1", "example.com")]
    assert listed == ["w1", "s2", "c2", "s1", "c1"]
    assert (await store.previous("C1", "example.com", "c2")).request_id == "c1"  # type: ignore[union-attr]
    assert (await store.previous("C1", "example.com", "s2")).request_id == "s1"  # type: ignore[union-attr]
    assert await store.previous("C1", "example.com", "s1") is None
    assert [r.request_id for r in await store.checks("C1", "example.com", 2)] == ["w1", "c2"]
    # Someone asked for a send test: it is theirs, as a check is; a watch's run is not.
    mine = [r.request_id for r in await store.user_runs("C1", "U0ONE")]
    assert mine == ["s2", "c2", "s1", "c1"]
    text = blocks.history_text("example.com", await store.runs("C1", "example.com"), {})
    assert text.count("send test by <@U0ONE>") == 2 and text.count("watch set by") == 1


async def test_old_entries_are_trimmed_and_keys_expire(redis: Redis) -> None:
    store = HistoryStore(redis, 2)
    await store.record(run("old", ago=3 * DAY))  # recorded late: beyond retention already
    await store.record(run("mid", ago=1 * DAY))
    assert [r.request_id for r in await store.runs("C1", "example.com")] == ["mid"]
    await store.record(run("new"))  # trims on write
    key = "mailcheck:history:domain:C1:example.com"
    assert await redis.zrange(key, 0, -1) == [b"mid", b"new"]
    for name in (key, "mailcheck:history:channel:C1", "mailcheck:history:user:C1:U0ONE"):
        assert 0 < await redis.ttl(name) <= 2 * DAY
    assert 0 < await redis.ttl("mailcheck:history:run:new") <= 2 * DAY
    prev = await store.previous("C1", "example.com", "mid")
    assert prev is None  # "old" is past retention


async def test_a_run_whose_entry_expired_is_skipped(redis: Redis) -> None:
    store = HistoryStore(redis, 90)
    await store.record(run("a1", ago=200))
    await store.record(run("a2", ago=100))
    await redis.delete("mailcheck:history:run:a1")
    assert [r.request_id for r in await store.runs("C1", "example.com")] == ["a2"]
    assert await store.previous("C1", "example.com", "a2") is None


async def test_report_is_the_stored_json(redis: Redis) -> None:
    store = HistoryStore(redis, 90)
    await redis.set("mailcheck:report:r1", json.dumps(report()))
    await redis.set("mailcheck:report:bad", "{not json")
    assert (await store.report("r1") or {})["domain"] == "example.com"
    assert await store.report("bad") is None
    assert await store.report("missing") is None


def test_a_run_from_a_report() -> None:
    r = Run.from_report(
        {**report("xn--bcher-kva.de"), "domain_display": "bücher.de", "worst": "warning"},
        request_id="r1",
        channel="C1",
        user="U1",
        parent_ts="1.2",
    )
    assert (r.domain, r.display, r.worst, r.stages) == (
        "xn--bcher-kva.de",
        "bücher.de",
        "warning",
        ("dns",),
    )
    assert Run.from_json(r.to_json()) == r
    assert r.timestamp == NOW.timestamp()


def test_retention_must_be_positive() -> None:
    with pytest.raises(ValueError):
        HistoryStore(None, 0)  # type: ignore[arg-type]


# --- what Slack is shown -------------------------------------------------------------

HOSTILE = "<!channel> <@U0123ABC> <https://evil.example|x> *bold* `tick`"


def test_history_text_links_each_thread_and_escapes_nothing_remote() -> None:
    runs = [
        run("a2", ago=100, worst="error", counts={"error": 2, "warning": 1}),
        run("a1", ago=200, user="not a user <!here>"),
    ]
    links = {"a2": "https://example.slack.com/archives/C1/p1", "a1": "javascript:alert(1)"}
    text = blocks.history_text("example.com", runs, links)
    assert "*Last 2 checks of `example.com` in this channel*" in text
    assert "<https://example.slack.com/archives/C1/p1|" in text  # linked to its thread
    assert "javascript" not in text  # not a link Slack would make
    assert ":x: 2 errors, 1 warning" in text and "<@U0ONE>" in text
    assert "no problems found" in text
    assert "<!here>" not in text
    assert blocks.history_text("example.com", [], {}).startswith("No checks of `example.com`")


def test_changes_are_escaped_and_bounded() -> None:
    diff = ReportDiff(
        new=(("error", "dns.x", HOSTILE),),
        resolved=tuple(("warning", f"c{i}", "fixed") for i in range(30)),
        records=(f"SPF: v=spf1 -all -> {HOSTILE}",),
        latency=("the whole check took 0.5 s -> 4.0 s",),
    )
    message = blocks.changes_message(
        diff, blocks.link("https://e.slack.com/p1", "2026-11-25 19:20 UTC")
    )
    text = json.dumps(message.blocks)
    assert "Changes since <https://e.slack.com/p1|2026-11-25 19:20 UTC>" in text
    for raw in ("<!channel>", "<@U0123ABC>", "<https://evil"):
        assert raw not in text
    assert "&lt;!channel&gt;" in text
    assert "New problems" in text and "Resolved" in text and "Changed records" in text
    assert "10 more not shown" in text  # 30 resolved, 20 shown
    assert "0.5 s -&gt; 4.0 s" in text
    huge = ReportDiff(records=tuple("x" * 600 + str(i) for i in range(200)))
    message = blocks.changes_message(huge, "then")
    assert len(message.blocks) <= 50 and sum(len(json.dumps(b)) for b in message.blocks) < 12_000


def test_diff_text_for_changes_and_for_none() -> None:
    older, newer = run("a1", ago=200), run("a2", ago=100)
    links: dict[str, str | None] = {"a1": "https://e.slack.com/p1", "a2": None}
    same = blocks.diff_text("example.com", older, newer, links, ReportDiff())
    assert same.startswith("No changes in `example.com`") and "<https://e.slack.com/p1|" in same
    changed = blocks.diff_text(
        "example.com", older, newer, links, ReportDiff(new=(("warning", "spf.x", HOSTILE),))
    )
    assert "*Changes in* `example.com`" in changed and "`spf.x`" in changed
    assert "<!channel>" not in changed


# --- the worker's "Changes since" post --------------------------------------------------


async def test_changes_are_told_only_when_something_changed(redis: Redis) -> None:
    async with SlackAPIStandIn(address="127.1.0.80", token="xoxb-t") as slack:
        poster = Poster(AsyncWebClient(token="xoxb-t", base_url=slack.url), redis)
        ctx = {"poster": poster}
        store = HistoryStore(redis, 90)
        job = CheckJob("C1", "U1", "example.com", "example.com", request_id="a2")
        await store.record(run("a1", ago=200))
        await store.record(run("a2", ago=100))
        await redis.set("mailcheck:report:a1", json.dumps(report()))
        await redis.set("mailcheck:report:a2", json.dumps(report()))
        assert await changes_write(ctx, store, job) is None  # identical: nothing to say

        after = report(findings=[finding("dns.broken", summary=HOSTILE)])
        await redis.set("mailcheck:report:a2", json.dumps(after))
        write = await changes_write(ctx, store, job)
        assert write is not None and write.kind == "reply" and write.message is not None
        text = json.dumps(write.message.blocks)
        # The link to the earlier thread is built from the workspace's address,
        # asked once (auth.test), not once per message (chat.getPermalink).
        assert "Changes since <https://example.slack.com/archives/C1/p" in text
        assert "dns.broken" in text and "<!channel>" not in text
        assert await changes_write(ctx, store, job) is not None
        assert [c.method for c in slack.calls] == ["auth.test"]

        first = CheckJob("C1", "U1", "example.com", "example.com", request_id="a1")
        assert await changes_write(ctx, store, first) is None


def test_retention_setting() -> None:
    from bot.settings import Settings
    from checks.core.errors import InputError

    assert Settings.from_env({}).retention_days == 90
    week = Settings.from_env({"MAILCHECK_RETENTION_DAYS": "7"})
    assert (week.retention_days, week.retention_seconds) == (7, 7 * DAY)
    for bad in ("0", "-1", "soon", "1.5", "4000"):
        with pytest.raises(InputError, match="MAILCHECK_RETENTION_DAYS"):
            Settings.from_env({"MAILCHECK_RETENTION_DAYS": bad})
