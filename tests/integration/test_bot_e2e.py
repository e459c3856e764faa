"""/mailcheck end to end: a signed slash command over HTTP to the Bolt app,
a saq job in real Redis, a worker running the check against the lab, and the
thread it posts, recorded by a local stand-in for Slack's Web API.

A check done within MAILCHECK_SLACK_GRACE is posted whole (its verdict is the
parent); a longer one goes live and ends in an edit of its parent. Either way
its thread's parent ends up carrying the Re-run button: `verdicts` waits for
that, `delivered` for the rest of the thread.

Tests marked `both_modes` run twice: Slack reaching the bot over HTTP, and
over a Socket Mode link to the stand-in (the default in production), with the
same assertions; in Socket Mode the ack comes back in the envelope's ack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from saq.job import Status
from slack_sdk.signature import SignatureVerifier

from bot.app import build_app, run_bot, serve_http, serve_socket
from bot.blocks import RERUN_ACTION
from bot.history import REPORT_PREFIX
from bot.outbox import METADATA_TYPE
from bot.queue import POST_QUEUE_NAME, CheckJob, make_queue, redis_client
from bot.settings import Settings
from bot.worker import build_worker
from checks.core.config import Nameserver
from checks.core.errors import InputError
from checks.core.model import Stage
from tests.support.fakeserver import FakeServer
from tests.support.slackapi import SlackAPIStandIn

pytestmark = pytest.mark.lab

SECRET = "test-signing-secret"
TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
BOT_ADDRESS = "127.1.0.81"
STOP_TIMEOUT = 90.0  # a worker's stop: its grace for running checks (timeout 30 + 30) and more
CHANNEL, USER = "C0TEST1", "U0TEST1"
# The calls that write to Slack (files_upload_v2 makes the last two).
WRITES = (
    "chat.postMessage",
    "chat.update",
    "files.getUploadURLExternal",
    "files.completeUploadExternal",
)
_ports = iter(range(3901, 3999))


@pytest.fixture
async def slack() -> AsyncIterator[SlackAPIStandIn]:
    async with SlackAPIStandIn(address="127.1.0.80", token=TOKEN, app_token=APP_TOKEN) as server:
        yield server


# How Slack reaches the bot (settings.slack_mode): HTTP, unless a test is marked
# both_modes, which runs it once over HTTP and once over a Socket Mode link.
both_modes = pytest.mark.parametrize("settings", ["http", "socket"], indirect=True)


@pytest.fixture
async def settings(
    slack: SlackAPIStandIn,
    lab_redis: Any,
    mail_lab: str,
    lab_dns: str,
    lab: Any,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Settings]:
    redis = Redis.from_url(lab_redis.url)
    await redis.flushdb()
    await redis.aclose()
    yield Settings(
        resolvers=(Nameserver(lab_dns),),
        allow_targets=("127.1.0.0/16",),
        ca_file=mail_lab,
        trust_anchor_file=str(lab.trust_anchors),
        ispdb_url="https://ispdb.test/v1.1/",
        timeout=30,
        dns_timeout=2,
        connect_timeout=2,
        banner_timeout=10,  # Dovecot auth, respawned after idling, can take ~6 s to greet
        reply_timeout=5,
        slack_bot_token=TOKEN,
        slack_app_token=APP_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack.url,
        slack_mode=getattr(request, "param", "http"),
        http_host=BOT_ADDRESS,
        http_port=next(_ports),
        redis_url=lab_redis.url,
        dnsbl_zones=("bl.test",),
        worker_concurrency=2,
        job_heartbeat=2,
        sweep_interval=1,
    )


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Settings]:
    """The Bolt app in settings.slack_mode: listening at settings.http_host:http_port,
    or linked to the stand-in over Socket Mode (as `mailcheck bot` links to Slack)."""
    redis = redis_client(settings.redis_url)
    queue = make_queue(settings)
    app = build_app(settings, queue, redis)
    try:
        if settings.slack_mode == "socket":
            handler = await serve_socket(app, settings)
            try:
                yield settings
            finally:
                await handler.close_async()  # type: ignore[no-untyped-call]
        else:
            runner = await serve_http(app, settings)
            try:
                yield settings
            finally:
                await runner.cleanup()
    finally:
        # saq's disconnect talks to Redis: with Redis down (a test's), it cannot.
        with contextlib.suppress(RedisConnectionError):
            await queue.disconnect()
        await redis.aclose()


@pytest.fixture
async def bot(settings: Settings) -> AsyncIterator[Settings]:
    """The Bolt app, reached as settings.slack_mode says (see `serving`)."""
    async with serving(settings) as running:
        yield running


class Worker:
    """An in-process saq worker, started on demand."""

    def __init__(self, settings: Settings) -> None:
        self.worker = build_worker(settings)
        self.worker.context["settings"] = settings
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.start())

    async def stop(self) -> None:
        if self.task is not None:
            # Bounded: a worker that cannot stop fails the test, not the run.
            try:
                await asyncio.wait_for(self.worker.stop(), STOP_TIMEOUT)
            finally:
                self.task.cancel()
                await asyncio.wait({self.task}, timeout=STOP_TIMEOUT)
        await self.worker.queue.disconnect()


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    w = Worker(settings)
    try:
        yield w
    finally:
        await w.stop()


def signed(body: str, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def post(settings: Settings, body: str, headers: dict[str, str]) -> tuple[int, str]:
    url = f"http://{settings.http_host}:{settings.http_port}/slack/events"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.text()


async def command(
    settings: Settings, slack: SlackAPIStandIn, text: str, user: str = USER, channel: str = CHANNEL
) -> tuple[int, str]:
    """Type `/mailcheck text`: the HTTP status (200 for a Socket Mode ack) and the ack's text."""
    payload = {
        "token": "legacy",
        "team_id": "T1",
        "channel_id": channel,
        "user_id": user,
        "command": "/mailcheck",
        "text": text,
        "response_url": slack.response_url("cmd"),
        "trigger_id": "1.2.3",
    }
    if settings.slack_mode == "socket":
        ack = await slack.socket.send("slash_commands", payload)  # no ack: TimeoutError
        return 200, ack.text
    body = urlencode(payload)
    status, text_ = await post(settings, body, signed(body))
    # Bolt answers a text-only ack as plain text, anything richer as JSON.
    try:
        return status, json.loads(text_).get("text", "")
    except ValueError:
        return status, text_


async def interact(settings: Settings, slack: SlackAPIStandIn, payload: Mapping[str, Any]) -> int:
    """Click a button: the HTTP status (200 for a Socket Mode ack)."""
    if settings.slack_mode == "socket":
        await slack.socket.send("interactive", payload)
        return 200
    body = urlencode({"payload": json.dumps(payload)})
    status, _ = await post(settings, body, signed(body))
    return status


async def deliver(settings: Settings, slack: SlackAPIStandIn, event: Mapping[str, Any]) -> int:
    """Deliver an Events API callback: the HTTP status (200 for a Socket Mode ack)."""
    if settings.slack_mode == "socket":
        await slack.socket.send("events_api", event)
        return 200
    body = json.dumps(event)
    status, _ = await post(settings, body, {**signed(body), "Content-Type": "application/json"})
    return status


def top_level(slack: SlackAPIStandIn) -> list[Any]:
    return [c for c in slack.calls_to("chat.postMessage") if c.ok and not c.params.get("thread_ts")]


def replies(slack: SlackAPIStandIn, parent_ts: str) -> list[Any]:
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.ok and c.params.get("thread_ts") == parent_ts
    ]


def all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in all_strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in all_strings(v)]
    return []


def has_rerun(message: Mapping[str, Any]) -> bool:
    """The message (or a chat.* call's params) carries the Re-run button:
    a check's verdict, or its failure."""
    return any(
        element.get("action_id") == RERUN_ACTION
        for block in message.get("blocks") or ()
        if block.get("type") == "actions"
        for element in block.get("elements") or ()
    )


def parents(slack: SlackAPIStandIn) -> list[dict[str, Any]]:
    """The channels' top-level messages as they are now (edits applied), oldest first."""
    found = [m for (_, ts), m in slack.messages.items() if m.get("thread_ts", ts) == ts]
    return sorted(found, key=lambda m: Decimal(m["ts"]))


def thread(slack: SlackAPIStandIn, parent_ts: str) -> list[dict[str, Any]]:
    """The messages under `parent_ts` as they are now, files shared there
    included, oldest first."""
    found = [
        m
        for (_, ts), m in slack.messages.items()
        if ts != parent_ts and m.get("thread_ts") == parent_ts
    ]
    return sorted(found, key=lambda m: Decimal(m["ts"]))


def headers(blocks: Any) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "header"]


def meta(call: Any) -> dict[str, Any]:
    """What a chat.* call says it is: {"request", "role"}; {} when it says nothing."""
    metadata = call.params.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != METADATA_TYPE:
        return {}
    return dict(metadata["event_payload"])


async def verdicts(
    slack: SlackAPIStandIn, count: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """The first `count` top-level messages carrying the Re-run button (a
    verdict or a failure), oldest first, once there are that many: a check's
    end, whether its verdict was posted as the parent (a check done within
    the grace period) or edited into it (a live one). Its thread may still be
    going: see `delivered`."""
    deadline = time.monotonic() + timeout
    while len(found := [m for m in parents(slack) if has_rerun(m)]) < count:
        if time.monotonic() >= deadline:
            seen = [c.method for c in slack.calls]
            raise TimeoutError(f"expected {count} verdict(s) within {timeout}s; calls: {seen}")
        await asyncio.sleep(0.02)
    return found[:count]


async def delivered(settings: Settings, timeout: float = 30.0) -> None:
    """Until the post queue has no job left: every thread begun so far is in
    Slack to its end (a post job ends with its outbox)."""
    queue = make_queue(settings, POST_QUEUE_NAME)
    try:
        deadline = time.monotonic() + timeout
        while await queue.count("incomplete"):
            assert time.monotonic() < deadline, "the post jobs did not end"
            await asyncio.sleep(0.05)
    finally:
        await queue.disconnect()


async def request_ids(settings: Settings) -> list[str]:
    """The requests whose report the workers kept."""
    redis = Redis.from_url(settings.redis_url)
    try:
        return [
            k.decode().removeprefix(REPORT_PREFIX)
            async for k in redis.scan_iter(f"{REPORT_PREFIX}*")
        ]
    finally:
        await redis.aclose()


async def stored_report(settings: Settings, request_id: str) -> dict[str, Any]:
    redis = Redis.from_url(settings.redis_url)
    try:
        text = await redis.get(f"{REPORT_PREFIX}{request_id}")
    finally:
        await redis.aclose()
    assert text is not None, f"no report kept for {request_id}"
    report: dict[str, Any] = json.loads(text)
    return report


@both_modes
async def test_slash_command_to_threaded_report(bot: Settings, slack: SlackAPIStandIn) -> None:
    """A check done within the grace period is posted whole: its verdict as
    the parent, then one reply with every stage; a healthy domain's thread
    has no file and no edit."""
    status, ack = await command(bot, slack, "healthy.test")
    assert (status, ack) == (200, "Queued a check of healthy.test.")
    # Posted whole however busy the machine: the grace outlasts the check.
    worker = Worker(replace(bot, slack_grace=bot.timeout))
    worker.start()
    try:
        (verdict,) = await verdicts(slack, 1, timeout=60)
        await delivered(bot)
    finally:
        await worker.stop()
    (request_id,) = await request_ids(bot)

    (parent,) = top_level(slack)  # the verdict itself: no "Checking…" first
    assert parent.params["channel"] == CHANNEL and parent.response["ts"] == verdict["ts"]
    assert f"<@{USER}>" in json.dumps(parent.params["blocks"])  # requested by: a real mention
    assert has_rerun(parent.params) and "healthy.test" in json.dumps(parent.params["blocks"])
    assert meta(parent) == {"request": request_id, "role": "parent"}
    assert parents(slack) == [verdict]

    (reply,) = replies(slack, verdict["ts"])  # every stage in one message
    shown = headers(reply.params["blocks"])
    assert shown[:3] == ["DNS", "CONNECT", "TLS"]
    assert shown == [s.value.upper() for s in Stage if s.value.upper() in shown]  # in order, once
    assert len(reply.params["blocks"]) <= 50
    assert meta(reply) == {"request": request_id, "role": "report:1"}
    assert [m["ts"] for m in thread(slack, verdict["ts"])] == [reply.response["ts"]]

    assert not slack.calls_to("chat.update")
    assert not slack.calls_to("files.completeUploadExternal") and not slack.files  # healthy
    assert len([c for c in slack.calls if c.method in WRITES]) <= 3

    report = await stored_report(bot, request_id)
    problems = [f for f in report["findings"] if f["severity"] not in ("ok", "info")]
    assert report["domain"] == "healthy.test" and report["worst"] == "ok", problems


async def test_a_long_check_goes_live_and_ends_in_an_edit(
    bot: Settings, slack: SlackAPIStandIn
) -> None:
    """Past the grace period (none here) the thread is live: "Checking…" at
    once, each stage's reply as it finishes, then the parent edited into the
    verdict; every message names its request and role."""
    live = Worker(replace(bot, slack_grace=0))
    await command(bot, slack, "healthy.test stage=dns,connect,tls")
    live.start()
    try:
        (verdict,) = await verdicts(slack, 1, timeout=60)
        await delivered(bot)
    finally:
        await live.stop()
    (request_id,) = await request_ids(bot)

    first, *stages, update = [c for c in slack.calls if c.method in WRITES]
    assert first.method == "chat.postMessage" and not first.params.get("thread_ts")
    assert first.params["text"].startswith("Checking healthy.test") and not has_rerun(first.params)
    parent_ts = first.response["ts"]
    assert [c.method for c in stages] == ["chat.postMessage"] * len(stages)
    assert all(c.params["thread_ts"] == parent_ts for c in stages)
    assert [headers(c.params["blocks"]) for c in stages] == [["DNS"], ["CONNECT"], ["TLS"]]
    assert update.method == "chat.update" and update.params["ts"] == parent_ts
    assert has_rerun(update.params) and verdict["ts"] == parent_ts
    assert [meta(c) for c in (first, *stages)] == [
        {"request": request_id, "role": role}
        for role in ("parent", "stage:dns:1", "stage:connect:1", "stage:tls:1")
    ]
    assert verdict["metadata"]["event_payload"]["request"] == request_id  # edited, still its own


async def test_a_problem_attaches_its_transcripts_in_the_thread(
    bot: Settings, slack: SlackAPIStandIn, worker: Worker
) -> None:
    """smtp-notls.test's MX offers no STARTTLS (an error): the thread gets
    the check's transcripts, the SMTP conversation that shows it."""
    await command(bot, slack, "smtp-notls.test stage=connect")
    worker.start()
    (verdict,) = await verdicts(slack, 1, timeout=60)
    await delivered(bot)

    shown = json.dumps([c.params["blocks"] for c in replies(slack, verdict["ts"])])
    assert "smtp.starttls.missing" in shown
    uploads = slack.calls_to("files.completeUploadExternal")
    assert len(uploads) == 1, [(c.method, c.status, c.error) for c in slack.calls]
    assert uploads[0].params.get("thread_ts") == verdict["ts"]
    (transcripts,) = slack.files.values()
    assert transcripts.filename == "mailcheck-smtp-notls.test-transcripts.txt"
    assert transcripts.completed and transcripts.channel == CHANNEL
    assert b"C: EHLO" in (transcripts.data or b""), "the file holds the SMTP conversation"
    assert thread(slack, verdict["ts"])[-1]["files"][0]["id"] == transcripts.file_id


async def test_identical_requests_join_the_queued_one(
    bot: Settings, slack: SlackAPIStandIn, worker: Worker
) -> None:
    first = await command(bot, slack, "healthy.test stage=dns")
    second = await command(bot, slack, "Healthy.TEST. stage=dns")
    other = await command(bot, slack, "healthy.test stage=tls")
    assert first[1].startswith("Queued")
    assert "already queued or running" in second[1]
    assert other[1].startswith("Queued")  # other options: another check
    worker.start()
    await verdicts(slack, 2, timeout=60)
    await delivered(bot)
    assert len(top_level(slack)) == 2 and len(await request_ids(bot)) == 2


async def test_selectors_and_sender_addresses_reach_the_check(
    bot: Settings, slack: SlackAPIStandIn, worker: Worker
) -> None:
    status, ack = await command(
        bot, slack, "healthy.test stage=policy selector=mail sender-ip=192.0.2.7"
    )
    assert (status, ack) == (200, "Queued a check of healthy.test.")
    worker.start()
    (verdict,) = await verdicts(slack, 1, timeout=60)
    (request_id,) = await request_ids(bot)
    report = await stored_report(bot, request_id)
    codes = {f["code"]: f for f in report["findings"]}
    assert codes["spf.sender.not_permitted"]["target"]["address"] == "192.0.2.7"
    assert codes["dkim.ok"]["target"]["host"] == "mail._domainkey.healthy.test"
    (button,) = [e for b in verdict["blocks"] if b["type"] == "actions" for e in b["elements"]]
    rerun = json.loads(button["value"])  # Re-run asks the same again
    assert rerun["dkim_selectors"] == ["mail"] and rerun["sender_ips"] == ["192.0.2.7"]


@both_modes
async def test_help_and_usage_errors_answer_at_once_and_queue_nothing(
    bot: Settings, slack: SlackAPIStandIn
) -> None:
    status, ack = await command(bot, slack, "help")
    assert status == 200 and "/mailcheck" in ack and "stage=" in ack
    status, ack = await command(bot, slack, "healthy.test nomx.test")
    assert status == 200 and "nomx.test" in ack
    status, ack = await command(bot, slack, "healthy.test frob=1")
    assert status == 200 and "frob" in ack
    status, ack = await command(bot, slack, "healthy.test stage=nonsense")
    assert status == 200 and "nonsense" in ack and "dns" in ack
    queue = make_queue(bot)
    assert await queue.count("queued") == 0 and await queue.count("incomplete") == 0
    await queue.disconnect()


async def test_a_forged_signature_is_refused(bot: Settings, slack: SlackAPIStandIn) -> None:
    body = urlencode(
        {"command": "/mailcheck", "text": "healthy.test", "channel_id": CHANNEL, "user_id": USER}
    )
    status, _ = await post(bot, body, signed(body, secret="not-the-secret"))
    assert status == 401
    headers = signed(body)
    headers["X-Slack-Request-Timestamp"] = str(int(time.time()) - 3600)  # replayed
    status, _ = await post(bot, body, headers)
    assert status == 401


@both_modes
async def test_queue_down_says_so(settings: Settings, slack: SlackAPIStandIn) -> None:
    dead = replace(settings, redis_url="redis://127.1.0.79:1/0")
    async with serving(dead):
        started = time.monotonic()
        status, ack = await command(dead, slack, "healthy.test")
        assert time.monotonic() - started < 3  # Slack's limit for the ack
    assert status == 200 and "queue is unavailable" in ack


async def test_remote_text_cannot_ping_the_channel(
    bot: Settings, slack: SlackAPIStandIn, worker: Worker
) -> None:
    await command(bot, slack, "inject.test stage=dns")
    worker.start()
    await verdicts(slack, 1, timeout=60)
    await delivered(bot)  # the thread too
    posted = [s for c in slack.calls if c.method.startswith("chat.") for s in all_strings(c.params)]
    text = "\n".join(posted)
    assert "&lt;!channel&gt;" in text  # the hostile TXT record is shown...
    for raw in ("<!channel>", "<@U0123ABC>", "<https://evil.example"):
        assert raw not in text  # ...but can neither notify nor link


async def test_a_test_account_logs_in_from_slack_and_its_secret_stays_out(
    bot: Settings, slack: SlackAPIStandIn
) -> None:
    """account=NAME runs the auth and delivery stages with the server-side
    profile; no Slack call, file upload or stored report carries the password."""
    from checks.core.accounts import Account, Accounts, login_blobs, plain_blob
    from tests.lab.mail import LAB_ACCOUNTS

    address, password = LAB_ACCOUNTS["alice"]
    accounts = Accounts([Account(name="alice", address=address, password=password)])
    settings = replace(bot, accounts=accounts)
    worker = Worker(settings)  # the accounts live on the worker only...
    worker.start()
    try:
        await published(bot, "alice")  # ...which tells the bot their names and domains
        await command(bot, slack, "healthy.test stage=auth,delivery account=alice")
        await verdicts(slack, 1, timeout=90)
        await delivered(bot)
    finally:
        await worker.stop()
    (request_id,) = await request_ids(bot)
    report = await stored_report(bot, request_id)
    stored = json.dumps(report)
    codes = {f["code"] for f in report["findings"]}
    assert {"auth.ok", "delivery.ok"} <= codes
    posted = json.dumps([c.params for c in slack.calls])
    uploads = b"".join(f.data or b"" for f in slack.files.values()).decode(errors="replace")
    for text in (posted, uploads, stored):
        for form in (password, plain_blob(address, password), login_blobs(address, password)[1]):
            assert form not in text


async def published(settings: Settings, account: str) -> None:
    """Wait until a worker has published `account` in the accounts directory."""
    from bot.access import ACCOUNTS_KEY

    redis = Redis.from_url(settings.redis_url)
    try:
        for _ in range(200):
            if await redis.hexists(ACCOUNTS_KEY, account):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no worker published the test account {account!r}")
    finally:
        await redis.aclose()


async def test_an_account_on_the_workers_is_refused_for_another_domain_by_the_bot(
    bot: Settings, slack: SlackAPIStandIn
) -> None:
    """The bot holds no passwords: it refuses from the directory the workers
    publish (names and domains only), before anything is queued."""
    from checks.core.accounts import Account, Accounts
    from tests.lab.mail import LAB_ACCOUNTS

    address, password = LAB_ACCOUNTS["alice"]
    accounts = Accounts([Account(name="alice", address=address, password=password)])
    worker = Worker(replace(bot, accounts=accounts))
    worker.start()
    try:
        await published(bot, "alice")
        _, ack = await command(bot, slack, "smtp-notls.test account=alice")
        assert "alice" in ack and "smtp-notls.test" in ack and "healthy.test" in ack, ack
        _, ack = await command(bot, slack, "healthy.test account=bob")
        assert "no test account named `bob`" in ack, ack
        queue = make_queue(bot)
        assert await queue.count("queued") == 0 and await queue.count("incomplete") == 0
        await queue.disconnect()
    finally:
        await worker.stop()
    redis = Redis.from_url(bot.redis_url)
    directory = await redis.hgetall("mailcheck:accounts")
    await redis.aclose()
    assert directory == {b"alice": b'["healthy.test"]'}  # no secret in Redis
    assert password not in json.dumps([c.params for c in slack.calls])


async def test_slack_rate_limits_are_waited_out(
    bot: Settings, slack: SlackAPIStandIn, worker: Worker
) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    await command(bot, slack, "healthy.test stage=dns")
    worker.start()
    (verdict,) = await verdicts(slack, 1, timeout=60)
    await delivered(bot)
    statuses = [c.status for c in slack.calls_to("chat.postMessage")]
    assert statuses[0] == 429 and len(top_level(slack)) == 1
    assert replies(slack, verdict["ts"])  # the thread went on after the wait


@both_modes
async def test_rerun_button_queues_the_same_check(
    bot: Settings, slack: SlackAPIStandIn, worker: Worker
) -> None:
    await command(bot, slack, "healthy.test stage=dns")
    worker.start()
    (verdict,) = await verdicts(slack, 1, timeout=60)
    # The job ends just after it queued its thread's end; until then the
    # same check counts as running and a click would join it.
    key = CheckJob(CHANNEL, USER, "healthy.test", "healthy.test", ("dns",)).dedupe_key
    for _ in range(200):
        job = await worker.worker.queue.job(key)
        if job is not None and job.status == Status.COMPLETE:
            break
        await asyncio.sleep(0.05)
    button = next(e for b in verdict["blocks"] if b["type"] == "actions" for e in b["elements"])
    payload = {
        "type": "block_actions",
        "user": {"id": "U0OTHER"},
        "channel": {"id": CHANNEL},
        "team": {"id": "T1"},
        "response_url": slack.response_url("rerun"),
        "trigger_id": "1.2",
        "actions": [
            {
                "action_id": "mailcheck_rerun",
                "block_id": "b",
                "value": button["value"],
                "type": "button",
            }
        ],
    }
    assert await interact(bot, slack, payload) == 200
    first, second = await verdicts(slack, 2, timeout=60)
    assert first == verdict and "U0OTHER" in json.dumps(second["blocks"])
    assert len(top_level(slack)) == 2


async def test_per_user_rate_limit(settings: Settings, slack: SlackAPIStandIn) -> None:
    limited = replace(settings, user_rate=1, http_port=next(_ports))
    async with serving(limited):
        assert (await command(limited, slack, "healthy.test"))[1].startswith("Queued")
        _, ack = await command(limited, slack, "nomx.test")
        assert "checks in the last hour" in ack
        _, ack = await command(limited, slack, "nomx.test", user="U0SOMEONE")
        assert ack.startswith("Queued")


# -- a worker dies mid-check ------------------------------------------------------------


def worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_API_URL": settings.slack_api_url,
        "MAILCHECK_REDIS_URL": settings.redis_url,
        "MAILCHECK_RESOLVER": "127.1.0.53",
        "MAILCHECK_ALLOW_TARGETS": "127.1.0.0/16",
        "MAILCHECK_CA_FILE": settings.ca_file or "",
        "MAILCHECK_BANNER_TIMEOUT": "6",
        "MAILCHECK_CONNECT_TIMEOUT": "2",
        "MAILCHECK_JOB_HEARTBEAT": "5",
        "MAILCHECK_DNSBL_ZONES": "bl.test",
        "MAILCHECK_SWEEP_INTERVAL": "1",
        "MAILCHECK_TIMEOUT": "60",
    }
    # Logs go to a file: an undrained pipe fills up and blocks the worker.
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept on disk
        prefix="mailcheck-worker-", suffix=".log", delete=False
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    proc.log_path = log.name  # type: ignore[attr-defined]
    return proc


def worker_log(proc: subprocess.Popen[bytes]) -> str:
    with open(proc.log_path) as f:  # type: ignore[attr-defined]
        return f.read()[-4000:]


async def test_a_killed_worker_is_replaced_and_the_thread_has_one_verdict(
    bot: Settings, slack: SlackAPIStandIn, stalling_mx: FakeServer
) -> None:
    # smtp-stall.test's MX never greets: the check waits out the banner timeout,
    # long enough to kill the worker in the middle of it.
    await command(bot, slack, "smtp-stall.test")
    first = worker_process(bot)
    try:
        await slack.wait_for("chat.postMessage", 2, timeout=30)  # parent + DNS stage
        # Kill while the check waits on the stalled MX, not in the instant between
        # Slack's answer to a post and the worker recording it (see bot/outbox.py).
        await asyncio.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 5)
        second = worker_process(bot)
        try:
            await slack.wait_for("chat.update", 1, timeout=60)
            await asyncio.sleep(1.5)  # anything duplicated would arrive now
        except TimeoutError:
            second.kill()
            await asyncio.to_thread(second.wait, 30)
            logs = [worker_log(p) for p in (first, second)]
            raise AssertionError("no verdict; worker logs:\n" + "\n---\n".join(logs)) from None
        finally:
            second.kill()  # its graceful stop has a test of its own
            await asyncio.to_thread(second.wait, 30)
    finally:
        if first.poll() is None:
            first.kill()

    (parent,) = top_level(slack)
    updates = slack.calls_to("chat.update")
    assert len(updates) == 1 and updates[0].params["ts"] == parent.response["ts"]
    posts = replies(slack, parent.response["ts"])
    shown = [h for c in posts for h in headers(c.params["blocks"])]
    assert len(shown) == len(set(shown)), shown  # no stage posted twice
    assert "CONNECT" in shown
    assert "smtp.banner.timeout" in json.dumps([c.params for c in posts])


async def test_sigterm_lets_the_running_check_finish(
    bot: Settings, slack: SlackAPIStandIn, stalling_mx: FakeServer
) -> None:
    await command(bot, slack, "smtp-stall.test")
    proc = worker_process(bot)
    try:
        await slack.wait_for("chat.postMessage", 2, timeout=30)
        proc.send_signal(signal.SIGTERM)  # mid-check: the banner wait has 6 s to go
        await slack.wait_for("chat.update", 1, timeout=60)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    assert len(top_level(slack)) == 1 and len(slack.calls_to("chat.update")) == 1


@both_modes
async def test_only_allowed_channels_and_users(settings: Settings, slack: SlackAPIStandIn) -> None:
    closed = replace(
        settings,
        allowed_channels=frozenset({"C0OPS"}),
        allowed_users=frozenset({"U0ONCALL"}),
        http_port=next(_ports),
    )
    async with serving(closed):
        _, ack = await command(closed, slack, "healthy.test", channel="C0RANDOM", user="U0ONCALL")
        assert "not enabled in this channel" in ack
        _, ack = await command(closed, slack, "healthy.test", channel="C0OPS", user="U0INTERN")
        assert "not on the list" in ack
        _, ack = await command(closed, slack, "healthy.test", channel="C0OPS", user="U0ONCALL")
        assert ack.startswith("Queued")


@both_modes
async def test_app_home_shows_how_to_use_it(bot: Settings, slack: SlackAPIStandIn) -> None:
    event = {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": "Ev1",
        "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": USER, "channel": "D1", "tab": "home"},
    }
    assert await deliver(bot, slack, event) == 200
    (publish,) = await slack.wait_for("views.publish", 1, timeout=10)
    assert publish.params["user_id"] == USER
    assert "/mailcheck" in json.dumps(publish.params["view"])


async def test_the_thread_shows_which_nameserver_said_what(
    bot: Settings, slack: SlackAPIStandIn, worker: Worker
) -> None:
    await command(bot, slack, "dns-stale.test stage=dns")
    worker.start()
    (verdict,) = await verdicts(slack, 1, timeout=60)
    await delivered(bot)
    shown = json.dumps([c.params["blocks"] for c in replies(slack, verdict["ts"])])
    assert "dns.ns.serial_mismatch" in shown and "dns.ns.records_differ" in shown
    assert "*Nameservers*" in shown
    assert "ns2.dns-stale.test [127.1.0.54]  ok           serial 2026112500" in shown


# -- Socket Mode: the link itself ----------------------------------------------------------


def socket_mode(settings: Settings) -> Settings:
    return replace(settings, slack_mode="socket", slack_signing_secret="")


async def test_mailcheck_bot_links_through_slack_api_url_and_lets_go_when_stopped(
    settings: Settings, slack: SlackAPIStandIn
) -> None:
    """`mailcheck bot` in Socket Mode (the default) asks SLACK_API_URL for its
    link with the app token, answers on it, and closes it when stopped."""
    running = asyncio.create_task(run_bot(socket_mode(settings)))
    try:
        link = await slack.socket.wait_for_connection(timeout=30)
        (opened,) = slack.calls_to("apps.connections.open")
        assert opened.ok and opened.headers["Authorization"] == f"Bearer {APP_TOKEN}"
        status, ack = await command(socket_mode(settings), slack, "help")
        assert status == 200 and "/mailcheck" in ack and "stage=" in ack
    finally:
        running.cancel()
        await asyncio.wait({running}, timeout=STOP_TIMEOUT)
    await slack.socket.wait_closed(link, timeout=10)  # not left open, still pinging
    assert running.cancelled()


async def test_socket_mode_survives_a_refresh(settings: Settings, slack: SlackAPIStandIn) -> None:
    """Slack asks for a new link every few hours ("refresh_requested"): the bot
    opens one with a fresh URL and goes on answering there."""
    async with serving(socket_mode(settings)) as bot:
        first = await slack.socket.wait_for_connection()
        assert "/mailcheck" in (await command(bot, slack, "help"))[1]
        await slack.socket.refresh()
        second = await slack.socket.wait_for_connection(2, timeout=30)
        await slack.socket.wait_closed(first, timeout=30)
        status, ack = await command(bot, slack, "healthy.test stage=frob")
        assert status == 200 and "frob" in ack
        assert slack.socket.acks[slack.socket.envelopes[-1]["envelope_id"]].link == second.number
        assert len(slack.calls_to("apps.connections.open")) == 2 and not slack.socket.refused


async def test_a_wrong_app_token_stops_the_bot_with_a_reason(
    settings: Settings, slack: SlackAPIStandIn
) -> None:
    """The SDK would retry a refused apps.connections.open for ever, silently
    to anyone not reading the log: the bot gives up and says what to check."""
    wrong = replace(socket_mode(settings), slack_app_token="xapp-revoked")
    redis, queue = redis_client(wrong.redis_url), make_queue(wrong)
    try:
        with pytest.raises(InputError, match="SLACK_APP_TOKEN"):
            await serve_socket(build_app(wrong, queue, redis), wrong, timeout=1.5)
    finally:
        await queue.disconnect()
        await redis.aclose()
    refused = slack.calls_to("apps.connections.open")
    assert refused and all(c.error == "invalid_auth" for c in refused)
    assert not slack.socket.links
