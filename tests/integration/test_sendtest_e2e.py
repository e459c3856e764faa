"""The send test from Slack, end to end: a signed `/mailcheck sendtest`, the
bot queueing it, a real saq worker posting the address to the Slack stand-in,
the lab's Postfix sending to our receiver, the receiver queueing the judge
job, and the verdict in the thread; also the deadline, and a test account
that makes the worker send the message itself."""

# ruff: noqa: F811  (pytest fixtures imported by name, then used as parameters)
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from bot.queue import make_queue, redis_client
from bot.receiver import Receiver, judge_on_arrival, tls_context
from bot.settings import Settings
from bot.testaddresses import SendTests
from checks.core.accounts import Account, Accounts
from tests.integration.test_bot_e2e import (  # noqa: F401 - fixtures, used by name
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
from tests.lab.control import Lab
from tests.lab.mail import LAB_PASSWORD, LAB_USER
from tests.lab.senders import RECEIVER_ADDRESS, RECEIVER_DOMAIN, RECEIVER_HOST, RECEIVER_PORT
from tests.support.slackapi import SlackAPIStandIn

pytestmark = pytest.mark.lab
_ADDRESS = re.compile(rf"st-[0-9a-f]+@{re.escape(RECEIVER_DOMAIN)}")


@pytest.fixture
async def config(settings: Settings) -> Settings:
    alice = Account(name="alice", address=LAB_USER, password=LAB_PASSWORD)
    wrong = Account(name="wrong", address=LAB_USER, password="not-alices-password")
    return replace(
        settings,
        sendtest_domain=RECEIVER_DOMAIN,
        sendtest_ttl=120,
        accounts=Accounts([alice, wrong]),
        http_port=next(_ports),
    )


@pytest.fixture
async def app(config: Settings) -> AsyncIterator[Settings]:
    async with _app(config):
        yield config


@pytest.fixture
async def receiver(lab: Lab, config: Settings) -> AsyncIterator[SendTests]:
    """`mailcheck receiver` as run_receiver builds it, on the lab's MX address."""
    redis = redis_client(config.redis_url)
    queue = make_queue(config)
    await queue.connect()
    tests = SendTests(redis, RECEIVER_DOMAIN, config.sendtest_ttl)
    pki = lab.mail.pki
    server = Receiver(
        tests,
        judge_on_arrival(queue, config),
        host=RECEIVER_ADDRESS,
        port=RECEIVER_PORT,
        hostname=RECEIVER_HOST,
        tls=tls_context(str(pki.cert_path(RECEIVER_HOST)), str(pki.key_path(RECEIVER_HOST))),
    )
    await server.start()
    await asyncio.to_thread(lab.mail.flush)
    try:
        yield tests
    finally:
        await server.stop()
        await queue.disconnect()
        await redis.aclose()


@pytest.fixture
async def worker(config: Settings) -> AsyncIterator[Worker]:
    w = Worker(config)
    try:
        yield w
    finally:
        await w.stop()


async def forgotten(tests: SendTests, token: str) -> None:
    """Wait (up to 10 s) until the test's message and token are deleted."""
    for _ in range(200):
        if await tests.message(token) is None and await tests.get(token) is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"send test {token} was not deleted after its verdict")


def text_of(call: Any) -> str:
    return "\n".join(all_strings(call.params["blocks"]))


async def the_address(slack: SlackAPIStandIn) -> tuple[str, str]:
    """(the parent's ts, the test address posted in its thread)."""
    for _ in range(400):
        for parent in top_level(slack):
            for reply in replies(slack, parent.response["ts"]):
                found = _ADDRESS.search(text_of(reply))
                if found:
                    return parent.response["ts"], found.group()
        await asyncio.sleep(0.05)
    raise AssertionError("no test address was posted")


async def test_sendtest_from_slack_to_a_verdict_in_the_thread(
    app: Settings, slack: SlackAPIStandIn, worker: Worker, receiver: SendTests, lab: Lab
) -> None:
    status, ack = await command(app, slack, "sendtest send-spffail.test")
    assert status == 200
    assert ack.startswith("Starting a send test of send-spffail.test")
    worker.start()
    parent_ts, address = await the_address(slack)
    (parent,) = top_level(slack)
    assert "Send test of `send-spffail.test`: waiting" in text_of(parent)
    assert f"<@{USER}>" in text_of(parent)
    (hand_out,) = replies(slack, parent_ts)
    assert "before *" in text_of(hand_out) and "UTC*" in text_of(hand_out)

    message = (
        f"From: t@send-spffail.test\r\nTo: {address}\r\nSubject: hi\r\n"
        "Date: Thu, 26 Nov 2026 01:00:00 +0000\r\nMessage-ID: <x1@send-spffail.test>\r\n\r\nhi\r\n"
    ).encode()
    await asyncio.to_thread(lab.mail.send, "b@send-spffail.test", [address], message)

    (update,) = await slack.wait_for("chat.update", 1, timeout=90)
    assert update.params["ts"] == parent_ts
    verdict = text_of(update)
    assert "Send test of `send-spffail.test`" in verdict and "1 error" in verdict
    thread = "\n".join(text_of(c) for c in replies(slack, parent_ts))
    assert "sendtest.spf.fail" in thread and "SENDTEST" in thread
    assert "DKIM pass (d=send-spffail.test)" in thread  # the ok summary
    uploads = [f for f in slack.files.values() if f.completed and f.thread_ts == parent_ts]
    assert b"> EHLO mail.send-spffail.test" in uploads[0].data  # the SMTP session as a file
    token = address.split("@")[0].removeprefix("st-")
    await forgotten(receiver, token)  # judged, then deleted (just after the verdict's post)
    # The verdict is in the channel's history, as a send test, linked to its thread.
    _, history = await command(app, slack, "history send-spffail.test")
    assert f"send test by <@{USER}>" in history and "1 error" in history


async def test_nothing_arrives_before_the_deadline(
    settings: Settings, slack: SlackAPIStandIn, worker: Worker, receiver: SendTests
) -> None:
    config = replace(
        settings, sendtest_domain=RECEIVER_DOMAIN, sendtest_ttl=2, http_port=next(_ports)
    )
    async with _app(config):
        await command(config, slack, "sendtest send-ok.test")
    fast = Worker(config)
    fast.start()
    try:
        parent_ts, address = await the_address(slack)
        (update,) = await slack.wait_for("chat.update", 1, timeout=60)
    finally:
        await fast.stop()
    assert update.params["ts"] == parent_ts
    assert "1 error" in text_of(update)
    thread = "\n".join(text_of(c) for c in replies(slack, parent_ts))
    assert "sendtest.timeout" in thread and address in thread


async def test_with_an_account_the_worker_sends_the_message(
    app: Settings, slack: SlackAPIStandIn, worker: Worker, receiver: SendTests
) -> None:
    _, ack = await command(app, slack, "sendtest healthy.test account=alice")
    assert ack.startswith("Starting a send test of healthy.test")
    worker.start()
    parent_ts, address = await the_address(slack)
    (update,) = await slack.wait_for("chat.update", 1, timeout=90)
    assert "no problems found" in text_of(update), text_of(update)
    thread = "\n".join(text_of(c) for c in replies(slack, parent_ts))
    assert "smtp.healthy.test" in thread  # where it was submitted
    assert "DKIM pass (d=healthy.test)" in thread
    posted = json.dumps([c.params for c in slack.calls_to("chat.postMessage")])
    assert "mailcheck sends it now with the test account `alice`" in posted
    assert LAB_PASSWORD not in posted
    await forgotten(receiver, address.split("@")[0].removeprefix("st-"))


async def test_a_refused_submission_is_the_verdict(
    app: Settings, slack: SlackAPIStandIn, worker: Worker, receiver: SendTests
) -> None:
    await command(app, slack, "sendtest healthy.test account=wrong")
    worker.start()
    parent_ts, address = await the_address(slack)
    (update,) = await slack.wait_for("chat.update", 1, timeout=90)
    assert "error" in text_of(update)
    thread = "\n".join(text_of(c) for c in replies(slack, parent_ts))
    assert "sendtest.submit.failed" in thread and "logs in at no submission server" in thread
    assert "not-alices-password" not in json.dumps([c.params for c in slack.calls])
    token = address.split("@")[0].removeprefix("st-")
    await forgotten(receiver, token)  # the test is over: its address is dead


async def test_without_a_receiving_domain_it_says_how_to_set_one_up(
    settings: Settings, slack: SlackAPIStandIn
) -> None:
    config = replace(settings, http_port=next(_ports))
    async with _app(config):
        _, ack = await command(config, slack, "sendtest example.com")
        assert "Send tests are not set up here" in ack and "MAILCHECK_SENDTEST_DOMAIN" in ack
        _, ack = await command(config, slack, "sendtest example.com account=nobody")
        assert "not set up" in ack
    assert top_level(slack) == []


async def test_an_unknown_account_is_refused_at_once(app: Settings, slack: SlackAPIStandIn) -> None:
    _, ack = await command(app, slack, "sendtest healthy.test account=nobody")
    assert ack == ":no_entry: There is no test account named `nobody`."
    assert top_level(slack) == []
