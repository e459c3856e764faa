"""The worker's side of a Slack send test: three small jobs, none of which waits.

    start     post "Send test of example.com: waiting…", reply in its thread with the
              address and the deadline, queue the deadline job for when the address
              expires; with a test account, submit the message now
    judge     queued by the receiver when the message arrived: judge it, post the
              verdict in the thread, edit the parent, delete the message
    deadline  when the address expires without a message: post sendtest.timeout

No worker slot is held while a person goes off to send mail. Each step is
recorded in the test's RunState, so a retried job edits or skips what it
already posted; the judge and the deadline cannot both report (bot.testaddresses:
one outcome per test).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from slack_sdk.errors import SlackApiError

from bot import blocks
from bot.history import HistoryStore
from bot.poster import FINAL_ERRORS, Poster, ReportFile, RunState, Thread
from bot.queue import enqueue_sendtest, heartbeat
from bot.settings import Settings
from bot.testaddresses import SendTest, SendTests
from checks.core.model import CheckRequest, Report, Stage
from checks.engine import sendtest
from checks.report import jsonreport

log = logging.getLogger(__name__)


def _tests(ctx: dict[str, Any]) -> SendTests:
    settings: Settings = ctx["settings"]
    return SendTests(ctx["redis"], settings.require_sendtest(), settings.sendtest_ttl)


def _request(test: SendTest) -> CheckRequest:
    return sendtest.request_for(test.domain, test.display, test.account)


async def sendtest_job(ctx: dict[str, Any], *, step: str, **fields: Any) -> dict[str, Any]:
    """The saq job function of every send-test step."""
    if step not in ("start", "judge", "deadline"):
        raise ValueError(f"unknown send-test step {step!r}")
    try:
        async with heartbeat(ctx, ctx["settings"]):
            if step == "start":
                return await _start(ctx, **fields)
            if step == "judge":
                return await _judge(ctx, **fields)
            return await _deadline(ctx, **fields)
    except SlackApiError as exc:
        error = exc.response.get("error", "")
        if error in FINAL_ERRORS:  # no retry will post it: the test is over
            log.warning("send test in %s: cannot post: %s", fields.get("channel", "?"), error)
            return {"error": error}
        raise


async def _start(
    ctx: dict[str, Any],
    *,
    channel: str,
    user: str,
    domain: str,
    display: str,
    request_id: str,
    account: str | None = None,
) -> dict[str, Any]:
    settings: Settings = ctx["settings"]
    poster: Poster = ctx["poster"]
    tests = _tests(ctx)
    state = RunState(ctx["redis"], request_id)
    token = await state.get("token")
    test = await tests.get(token) if token else None
    if test is None:
        test = await tests.create(
            domain,
            display,
            notify="job",
            channel=channel,
            user=user,
            request_id=request_id,
            account=account,
        )
        await state.set("token", test.token)
    if not test.thread_ts:
        parent = await poster.post(channel, blocks.sendtest_pending_message(display, user))
        test = replace(test, thread_ts=parent)
        await tests.update(test)
    if not await state.posted("address"):
        message = blocks.sendtest_address_message(test.address, test.expires_at, account)
        await poster.post(channel, message, thread_ts=test.thread_ts)
        await state.mark("address")
    await enqueue_sendtest(
        ctx["worker"].queue,
        "deadline",
        f"sendtest:deadline:{test.token}",
        settings,
        scheduled=test.expires_at + 1,
        token=test.token,
    )
    if account and not await state.posted("submitted"):
        report = await sendtest.submit(
            _request(test), settings.engine_config(), test.address, test.token
        )
        await state.mark("submitted")
        # On success the message may already be judged, in a job beside this
        # one: the verdict's summary says where it came from. A failure is
        # all the thread will hear, so it is the report.
        if not any(f.code == "sendtest.submitted" for f in report.findings):
            if await tests.time_out(test.token):  # nothing will come: report now
                await _report(ctx, test, report)
            return {"token": test.token, "submitted": False}
    return {"token": test.token}


async def _judge(ctx: dict[str, Any], *, token: str) -> dict[str, Any]:
    settings: Settings = ctx["settings"]
    tests = _tests(ctx)
    test = await tests.get(token)
    received = await tests.message(token)
    if test is None or received is None:
        return {"token": token, "judged": False}  # judged already, or never ours
    report = await sendtest.judge_message(received, _request(test), settings.engine_config())
    await _report(ctx, test, report)
    return {"token": token, "worst": report.worst.value}


async def _deadline(ctx: dict[str, Any], *, token: str) -> dict[str, Any]:
    tests = _tests(ctx)
    test = await tests.get(token)
    if test is None or not await tests.time_out(token):
        return {"token": token, "timed_out": False}  # a message came first
    settings: Settings = ctx["settings"]
    report = sendtest.timed_out(_request(test), test.address, settings.sendtest_ttl)
    await _report(ctx, test, report)
    return {"token": token, "timed_out": True}


async def _report(ctx: dict[str, Any], test: SendTest, report: Report) -> None:
    """Post the verdict in the test's thread, edit the parent, forget the test."""
    poster: Poster = ctx["poster"]
    settings: Settings = ctx["settings"]
    state = RunState(ctx["redis"], test.request_id)
    # A hostile message can make thousands of findings: the thread stays short.
    thread = Thread(poster, state, test.channel, test.thread_ts, settings.slack_max_replies)
    await thread.stage(report, Stage.SENDTEST)
    await thread.left_out(
        report,
        ReportFile.of(
            settings,
            f"mailcheck-sendtest-{test.domain}-report.txt",
            f"Full verdict: send test of {test.display}",
        ),
    )
    lines = [line for probe in report.transcripts.values() for line in probe]
    if lines and not await state.posted("transcripts"):
        await poster.upload(
            test.channel,
            test.thread_ts,
            f"mailcheck-sendtest-{test.domain}.txt",
            f"SMTP session: send test of {test.display}",
            "\n".join(lines),
        )
        await state.mark("transcripts")
    await HistoryStore(ctx["redis"], settings.retention_days).keep(
        jsonreport.dumps(report),
        request_id=test.request_id,
        channel=test.channel,
        user=test.user,
        parent_ts=test.thread_ts,
        trigger="sendtest",
    )
    await poster.update(
        test.channel, test.thread_ts, blocks.sendtest_verdict_message(report, test.user)
    )
    await state.mark("verdict")
    await _tests(ctx).finish(test.token)
    log.info("send test %s of %s: %s", test.token, test.domain, report.worst.value)
