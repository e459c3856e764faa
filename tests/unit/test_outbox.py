"""bot.outbox: a request's Slack writes, each delivered once, in order.

Against the Slack stand-in and the lab's Redis: roles are idempotency keys,
every message carries its request and role as metadata, and a write that
Slack took but answered badly (or whose worker died) is read back, not
posted again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import Message
from bot.outbox import END, METADATA_TYPE, Delivery, Outbox, Write, reply
from bot.poster import Poster, RunState
from tests.support.redisdb import empty_db
from tests.support.slackapi import Call, SlackAPIStandIn

pytestmark = pytest.mark.lab
TOKEN = "xoxb-outbox"
CHANNEL = "C0OUTBOX"


@pytest.fixture
async def redis(lab_redis: Any) -> AsyncIterator[Redis]:
    async with empty_db(lab_redis.url, 4) as client:
        yield client


@pytest.fixture
async def slack() -> AsyncIterator[SlackAPIStandIn]:
    async with SlackAPIStandIn(address="127.1.0.80", token=TOKEN) as server:
        yield server


def message(text: str) -> Message:
    return Message(text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}])


def delivery(slack: SlackAPIStandIn, redis: Redis, request_id: str = "r1") -> Delivery:
    client = AsyncWebClient(token=TOKEN, base_url=slack.url)
    client.retry_handlers = []  # as the post job's client: no blind retries
    return Delivery(Poster(client, redis), redis, request_id, CHANNEL)


def thread(slack: SlackAPIStandIn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tops = [m for (c, _), m in slack.messages.items() if c == CHANNEL and not m.get("thread_ts")]
    replies = [m for (c, _), m in slack.messages.items() if c == CHANNEL and m.get("thread_ts")]
    return tops, replies


async def test_a_role_is_added_once_and_the_first_wins(redis: Redis) -> None:
    outbox = Outbox(redis, "r1")
    assert await outbox.add([("parent", Write("parent", message("one")))]) == 1
    added = await outbox.add(
        [("parent", Write("parent", message("two"))), ("report:1", reply(message("r")))]
    )
    assert added == 1
    assert await outbox.roles() == ["parent", "report:1"]
    first = await outbox.write("parent")
    assert first.message is not None and first.message.text == "one"
    upload = Write("upload", filename="f.txt", title="F", content="é\n" * 3)
    assert Write.from_json(upload.to_json()) == upload


async def test_delivered_in_order_with_metadata_and_never_twice(
    redis: Redis, slack: SlackAPIStandIn
) -> None:
    outbox = Outbox(redis, "r1")
    await outbox.add(
        [
            ("parent", Write("parent", message("Checking"))),
            ("stage:dns:1", reply(message("DNS"))),
            ("verdict", Write("edit", message("Verdict"))),
            (END, Write(END)),
        ]
    )
    assert await delivery(slack, redis).run(time.monotonic() + 30)
    (parent,), (dns,) = thread(slack)
    assert parent["text"] == "Verdict" and dns["text"] == "DNS"
    assert dns["thread_ts"] == parent["ts"]
    for m, role in ((parent, "parent"), (dns, "stage:dns:1")):
        assert m["metadata"] == {
            "event_type": METADATA_TYPE,
            "event_payload": {"request": "r1", "role": role},
        }
    calls = len(slack.calls)
    assert await delivery(slack, redis).run(time.monotonic() + 30)  # a retried post job
    assert len(slack.calls) == calls


async def test_a_post_slack_took_but_answered_500_is_not_posted_again(
    redis: Redis, slack: SlackAPIStandIn
) -> None:
    """Slack applied the reply, then failed its answer: a blind retry (what
    slack_sdk's 5xx handler does) would post it twice. The delivery reads
    the thread back, finds the reply by its metadata, and goes on."""
    failed: list[Call] = []

    async def broken_answer(call: Call) -> None:
        if call.method == "chat.postMessage" and call.params.get("thread_ts") and not failed:
            failed.append(call)
            raise web.HTTPInternalServerError()

    slack.after_call = broken_answer
    outbox = Outbox(redis, "r1")
    await outbox.add(
        [
            ("parent", Write("parent", message("Verdict"))),
            ("report:1", reply(message("Report"))),
            (END, Write(END)),
        ]
    )
    assert await delivery(slack, redis).run(time.monotonic() + 30)
    (_,), replies = thread(slack)
    assert [m["text"] for m in replies] == ["Report"] and failed
    assert [c.method for c in slack.calls].count("conversations.replies") == 1
    assert await RunState(redis, "r1").get("ts:report:1") == replies[0]["ts"]


async def test_a_parent_whose_worker_died_is_found_in_the_channel(
    redis: Redis, slack: SlackAPIStandIn
) -> None:
    """The parent was posted and its worker died before recording it: the
    next delivery finds it in the channel's history, not a second parent."""
    other = delivery(slack, redis, "r0")  # another request's thread, before it
    await other.poster.post(CHANNEL, message("someone else"), metadata=other.metadata("parent"))
    outbox = Outbox(redis, "r1")
    await outbox.add([("parent", Write("parent", message("Verdict"))), (END, Write(END))])
    first = delivery(slack, redis)
    await first.state.set("inflight:parent", str(time.time()))
    ts = await first.poster.post(CHANNEL, message("Verdict"), metadata=first.metadata("parent"))
    assert await delivery(slack, redis).run(time.monotonic() + 30)
    tops, _ = thread(slack)
    assert [m["text"] for m in tops] == ["someone else", "Verdict"]
    assert await RunState(redis, "r1").get("parent_ts") == ts


async def test_a_thread_it_may_not_read_is_written_again_and_said(
    redis: Redis, slack: SlackAPIStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a history scope the read-back is refused: the reply is posted
    (a duplicate is better than a thread that stops), and the log says why."""
    outbox = Outbox(redis, "r1")
    await outbox.add([("parent", Write("parent", message("Verdict")))])
    first = delivery(slack, redis)
    await first.deliver("parent", await outbox.write("parent"))
    await outbox.add([("report:1", reply(message("Report"))), (END, Write(END))])
    await first.state.set("inflight:report:1", str(time.time()))
    slack.fail("conversations.replies", error="missing_scope")
    assert await delivery(slack, redis).run(time.monotonic() + 30)
    _, replies = thread(slack)
    assert [m["text"] for m in replies] == ["Report"]
    assert "cannot read the thread back (missing_scope)" in caplog.text
