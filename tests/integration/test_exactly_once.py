"""Exactly once, proven by crashes: a worker killed right after Slack took
its k-th call, for every k of a whole check, leaves a thread with one parent,
one verdict and no reply twice.

A worker process runs the check and its posting; the Slack stand-in, having
applied call k, SIGKILLs it before answering (the worker never learns that
Slack took it). A second worker, in this process, takes the jobs over once
their heartbeat is missed: it must read the thread back (message metadata)
and post only what is missing. Once without grace (the live thread: parent,
stage by stage, the verdict edit) and once with it (the whole report at once).
"""

# ruff: noqa: F811 - the fixtures imported from test_bot_e2e are parameters by name

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from saq.job import Status

from bot.queue import POST_QUEUE_NAME, CheckJob, enqueue_check, make_queue
from bot.settings import Settings
from tests.integration.test_bot_e2e import (  # noqa: F401 - fixtures, used by name
    USER,
    Worker,
    settings,
    slack,
    worker_log,
    worker_process,
)
from tests.support.jobs import until_job
from tests.support.slackapi import Call, SlackAPIStandIn

pytestmark = pytest.mark.lab
REDIS_DB = 12  # only these tests use it


@pytest.fixture
def lab_redis(lab_redis: Any) -> Any:
    """The lab's Redis, at this module's own database."""
    from types import SimpleNamespace

    return SimpleNamespace(url=f"{lab_redis.url.rsplit('/', 1)[0]}/{REDIS_DB}")


async def _queue(settings: Settings, check: CheckJob) -> CheckJob:
    queue = make_queue(settings)
    try:
        check = check.with_id()
        assert await enqueue_check(queue, check, settings)
    finally:
        await queue.disconnect()
    return check


def thread_of(slack: SlackAPIStandIn, channel: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """The channel's top-level messages as they read now, and the replies to the first."""
    tops = sorted(
        (m for (c, _), m in slack.messages.items() if c == channel and not m.get("thread_ts")),
        key=lambda m: float(m["ts"]),
    )
    parent_ts = tops[0]["ts"] if tops else None
    thread = [
        m
        for (c, ts), m in slack.messages.items()
        if c == channel and m.get("thread_ts") == parent_ts and ts != parent_ts
    ]
    return tops, thread


def role_of(message: dict[str, Any]) -> str:
    meta = message.get("metadata") or {}
    return str((meta.get("event_payload") or {}).get("role", ""))


async def run_killed_at(
    settings: Settings, slack: SlackAPIStandIn, channel: str, k: int | None
) -> tuple[int, list[dict[str, Any]], list[Any]]:
    """Check healthy.test in `channel` with a worker process that is killed
    right after Slack took its k-th call (None: never); a second worker
    finishes. The number of Slack calls the first made, and the thread."""
    seen = 0
    victim = worker_process(settings)
    killed = asyncio.Event()

    async def after_call(call: Call) -> None:
        nonlocal seen
        if killed.is_set():
            return
        seen += 1
        if k is not None and seen == k:
            victim.send_signal(signal.SIGKILL)
            await asyncio.to_thread(victim.wait, 10)
            killed.set()

    slack.after_call = after_call
    survivor = Worker(settings)
    try:
        check = await _queue(settings, CheckJob(channel, USER, "healthy.test", "healthy.test"))
        post_key = f"post:{check.request_id}"
        if k is None:
            post = await until_job(settings, post_key, 60, queue_name=POST_QUEUE_NAME)
        else:
            await asyncio.wait_for(killed.wait(), 60)
            survivor.start()
            try:
                post = await until_job(settings, post_key, 90, queue_name=POST_QUEUE_NAME)
            except TimeoutError as exc:
                raise AssertionError(f"k={k}: {exc}\n" + worker_log(victim)) from None
        assert post.status == Status.COMPLETE, f"k={k}: {post.error}\n" + worker_log(victim)
        await asyncio.sleep(0.3)  # a duplicate on its way would land now
    finally:
        slack.after_call = None
        if victim.poll() is None:
            victim.kill()
            await asyncio.to_thread(victim.wait, 10)
        await survivor.stop()
    tops, thread = thread_of(slack, channel)
    return seen, tops, thread


def assert_once(k: int | None, tops: list[dict[str, Any]], thread: list[Any], live: bool) -> None:
    assert len(tops) == 1, f"k={k}: {len(tops)} parents"
    (parent,) = tops
    text = json.dumps(parent.get("blocks"))
    assert "mailcheck_rerun" in text and "Checking" not in parent.get("text", ""), f"k={k}"
    assert "failed" not in parent.get("text", ""), f"k={k}: {parent.get('text')}"
    roles = Counter(role_of(m) for m in thread)
    assert all(roles.values()) and max(roles.values(), default=1) == 1, f"k={k}: {roles}"
    assert "" not in roles, f"k={k}: a reply without its role: {thread}"
    bodies = Counter(json.dumps(m.get("blocks"), sort_keys=True) for m in thread)
    assert max(bodies.values(), default=1) == 1, f"k={k}: a reply posted twice"
    if live:
        assert any(r.startswith("stage:dns") for r in roles), f"k={k}: {roles}"
    else:
        assert set(roles) == {"report:1"}, f"k={k}: {roles}"


@pytest.mark.parametrize("live", [False, True], ids=["whole", "live"])
async def test_a_kill_after_each_slack_call_leaves_one_thread(
    settings: Settings, slack: SlackAPIStandIn, monkeypatch: pytest.MonkeyPatch, live: bool
) -> None:
    grace = "0" if live else "30"  # a healthy check always within 30 s
    monkeypatch.setenv("MAILCHECK_SLACK_GRACE", grace)
    monkeypatch.setenv("MAILCHECK_TRUST_ANCHORS", settings.trust_anchor_file or "")
    timed = replace(settings, slack_grace=float(grace), job_heartbeat=5, sweep_interval=1)
    prefix = "C0LIVE" if live else "C0WHOLE"

    calls, tops, thread = await run_killed_at(timed, slack, f"{prefix}00", None)
    assert_once(None, tops, thread, live)
    print(f"\n{'live' if live else 'whole'}: {calls} Slack calls in a check of healthy.test")
    if not live:
        assert calls <= 3  # the target for a healthy domain
    for k in range(1, calls + 1):
        seen, tops, thread = await run_killed_at(timed, slack, f"{prefix}{k:02d}", k)
        assert seen == k
        assert_once(k, tops, thread, live)
