"""/mailcheck history and diff end to end: checks run by a worker against the
lab, recorded per channel in real Redis, listed and compared by signed slash
commands, and "Changes since" posted in a thread when something changed."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.app import build_app, serve_http
from bot.queue import make_queue, redis_client
from bot.settings import Settings
from tests.integration.test_bot_e2e import (  # noqa: F401 - fixtures, used by name
    CHANNEL,
    USER,
    Worker,
    _ports,
    all_strings,
    bot,
    command,
    delivered,
    meta,
    replies,
    settings,
    slack,
    top_level,
    verdicts,
    worker,
)
from tests.support.slackapi import SlackAPIStandIn

pytestmark = pytest.mark.lab

OTHER_CHANNEL = "C0TEST2"
PERMALINK = "https://example.slack.com/archives/{channel}/p{ts}"


def permalink(channel: str, ts: str) -> str:
    return PERMALINK.format(channel=channel, ts=ts.replace(".", ""))


async def check(
    config: Settings, api: SlackAPIStandIn, text: str, channel: str, done: int
) -> tuple[dict[str, Any], str]:
    """Ask for a check and wait until its thread is complete, "Changes since"
    included (the `done`th verdict overall): its parent message, as Slack
    shows it now, and its request id (which the channel's history links to
    that parent)."""
    status, ack = await command(config, api, text, channel=channel)
    assert (status, ack) == (200, "Queued a check of healthy.test.")
    parent = (await verdicts(api, done, timeout=60))[-1]
    await delivered(config)
    redis = Redis.from_url(config.redis_url)
    try:
        request_id = await _request_id(redis, channel, parent)
    finally:
        await redis.aclose()
    (post,) = [c for c in top_level(api) if c.response["ts"] == parent["ts"]]
    assert meta(post)["request"] == request_id
    return parent, request_id


def changes_posts(api: SlackAPIStandIn, parent: dict[str, Any]) -> list[Any]:
    return [
        c
        for c in replies(api, parent["ts"])
        if "Changes since" in json.dumps(c.params.get("blocks"))
    ]


async def test_history_and_diff_are_per_channel(
    bot: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
    worker: Worker,  # noqa: F811
) -> None:
    worker.start()
    a1, _ = await check(bot, slack, "healthy.test stage=dns", CHANNEL, 1)
    a2, a2_id = await check(bot, slack, "healthy.test stage=dns", CHANNEL, 2)
    b1, _ = await check(bot, slack, "healthy.test stage=dns", OTHER_CHANNEL, 3)
    assert changes_posts(slack, a1) == []  # the first check: nothing to compare with
    assert changes_posts(slack, a2) == []  # the same again: nothing changed
    assert changes_posts(slack, b1) == []  # A's checks are not B's

    status, text = await command(bot, slack, "history healthy.test")
    assert status == 200
    lines = [line for line in text.split("\n") if line.startswith("•")]
    assert len(lines) == 2, text  # exactly A's two, newest first
    for line, parent in zip(lines, (a2, a1), strict=True):
        assert f"<{permalink(CHANNEL, parent['ts'])}|" in line
        assert f"<@{USER}>" in line and "no problems found" in line
    assert permalink(OTHER_CHANNEL, b1["ts"]) not in text

    _, text = await command(bot, slack, "history healthy.test", channel=OTHER_CHANNEL)
    lines = [line for line in text.split("\n") if line.startswith("•")]
    assert len(lines) == 1 and permalink(OTHER_CHANNEL, b1["ts"]) in lines[0]

    _, text = await command(bot, slack, "history nomx.test")
    assert text == "No checks of `nomx.test` in this channel yet."
    _, text = await command(bot, slack, "diff healthy.test", channel=OTHER_CHANNEL)
    assert "Only one check of `healthy.test` in this channel" in text
    _, text = await command(bot, slack, "diff healthy.test")
    assert text.startswith("No changes in `healthy.test`"), text

    # Something changes: the last check of A had a problem that the next one no
    # longer has (and a hostile summary, shown escaped).
    redis = Redis.from_url(bot.redis_url)
    key = f"mailcheck:report:{a2_id}"
    stored = json.loads(await redis.get(key))
    stored["findings"].append(
        {
            **stored["findings"][0],
            "code": "dns.made.up",
            "severity": "error",
            "summary": "MX points at <!channel> <https://evil.example|here>",
        }
    )
    await redis.set(key, json.dumps(stored))
    await redis.aclose()

    a3, _ = await check(bot, slack, "healthy.test stage=dns", CHANNEL, 4)
    (post,) = changes_posts(slack, a3)
    shown = "\n".join(all_strings(post.params["blocks"]))
    assert f"Changes since <{permalink(CHANNEL, a2['ts'])}|" in shown
    assert "Resolved" in shown and "dns.made.up" in shown
    assert "&lt;!channel&gt;" in shown and "<!channel>" not in shown
    assert "<https://evil" not in shown

    _, text = await command(bot, slack, "diff healthy.test")
    assert text.startswith("*Changes in* `healthy.test`"), text
    assert "Resolved" in text and "dns.made.up" in text and "<!channel>" not in text
    assert f"<{permalink(CHANNEL, a2['ts'])}|" in text
    assert f"<{permalink(CHANNEL, a3['ts'])}|" in text


async def test_history_answers_usage_errors(
    bot: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
) -> None:
    _, text = await command(bot, slack, "history")
    assert "No domain given" in text and "/mailcheck history example.com" in text
    _, text = await command(bot, slack, "diff healthy.test nomx.test")
    assert "Two domains" in text
    _, text = await command(bot, slack, "history healthy.test stage=dns")
    assert "Unknown option `stage=`" in text


async def test_history_respects_the_allow_lists(
    settings: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
) -> None:
    closed = replace(
        settings,
        allowed_channels=frozenset({"C0OPS"}),
        allowed_users=frozenset({"U0ONCALL"}),
        http_port=next(_ports),
    )
    async with _app(closed):
        _, text = await command(closed, slack, "history healthy.test", channel="C0RANDOM")
        assert "not enabled in this channel" in text
        _, text = await command(closed, slack, "diff healthy.test", channel="C0OPS")
        assert "not on the list" in text
        _, text = await command(
            closed, slack, "history healthy.test", channel="C0OPS", user="U0ONCALL"
        )
        assert text.startswith("No checks of `healthy.test`")


async def test_history_says_so_when_redis_is_down(
    settings: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
) -> None:
    dead = replace(settings, redis_url="redis://127.1.0.79:1/0", http_port=next(_ports))
    async with _app(dead):
        started = time.monotonic()
        status, text = await command(dead, slack, "history healthy.test")
        assert time.monotonic() - started < 3  # Slack's limit for the ack
    assert status == 200 and "history is unavailable" in text


@contextlib.asynccontextmanager
async def _app(config: Settings) -> AsyncIterator[None]:
    redis = redis_client(config.redis_url)
    queue = make_queue(config)
    runner = await serve_http(build_app(config, queue, redis), config)
    try:
        yield
    finally:
        await runner.cleanup()
        with contextlib.suppress(RedisError, OSError):  # Redis may be the one down
            await queue.disconnect()
        await redis.aclose()


async def _request_id(redis: Redis, channel: str, parent: dict[str, Any]) -> str:
    """The request whose thread starts at `parent`, from the channel's history."""
    ts = parent["ts"]
    for member in await redis.zrange(f"mailcheck:history:channel:{channel}", 0, -1):
        text = await redis.get(f"mailcheck:history:run:{member.decode()}")
        if text and json.loads(text)["parent_ts"] == ts:
            return str(member.decode())
    raise AssertionError(f"no run with parent {ts}")
