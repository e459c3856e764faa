"""A check's thread is never left at "Checking…": Slack's 5xx and dropped
connections are retried by the client, a job that gives up says so in its
thread, and a dead worker's job is taken over once its heartbeat is missed."""

# ruff: noqa: F811 - the fixtures imported from test_bot_e2e are parameters by name

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from saq.job import Job, Status

from bot import worker as worker_module
from bot.queue import POST_QUEUE_NAME, CheckJob, MailcheckQueue, enqueue_check, make_queue
from bot.settings import Settings
from tests.integration.test_bot_e2e import (  # noqa: F401 - fixtures, used by name
    USER,
    Worker,
    replies,
    settings,
    slack,
    top_level,
    worker,
    worker_log,
    worker_process,
)
from tests.support.fakeserver import FakeServer
from tests.support.jobs import finished, until_job
from tests.support.slackapi import SlackAPIStandIn

pytestmark = pytest.mark.lab
REDIS_DB = 13  # only these tests use it: the e2e tests flush DB 0, maybe while these run


@pytest.fixture
def lab_redis(lab_redis: Any) -> Any:
    """The lab's Redis, at this module's own database (the e2e fixtures flush it)."""
    return SimpleNamespace(url=f"{lab_redis.url.rsplit('/', 1)[0]}/{REDIS_DB}")


_channels = itertools.count(1)


def check(domain: str, stages: tuple[str, ...] | None = ("dns",)) -> CheckJob:
    """A check in a channel of its own: no two tests share a job key, so a
    job left behind by the last test's worker cannot pass for this one's."""
    return CheckJob(f"C0FAIL{next(_channels):04d}", USER, domain, domain, stages)


async def queued(settings: Settings, job: CheckJob) -> str:
    """Queue `job` as the bot does; its saq key."""
    queue = make_queue(settings)
    try:
        assert await enqueue_check(queue, job, settings)
    finally:
        await queue.disconnect()
    return job.dedupe_key


async def sweep_now(queue: Any) -> list[Job]:
    """One sweep now, whoever swept last (the sweep lock lifted)."""
    await queue.redis.delete(queue.namespace("sweep"))
    return await worker_module.sweep_once(queue, 1)


async def saq_job(settings: Settings, key: str) -> Job:
    queue = make_queue(settings)
    try:
        found = await queue.job(key)
    finally:
        await queue.disconnect()
    assert found is not None, key
    return found


async def until(settings: Settings, key: str, done: Callable[[Job], bool], timeout: float) -> Job:
    """The job once `done(job)`, polled in Redis."""
    return await until_job(settings, key, timeout, done)


async def delivered(settings: Settings, key: str, timeout: float) -> tuple[Job, Job]:
    """The check job of `key` once finished, and then its post job (which
    delivers the check's thread to Slack) once finished."""
    done = await until_job(settings, key, timeout)
    post_key = f"post:{(done.kwargs or {})['request_id']}"
    return done, await until_job(settings, post_key, timeout, queue_name=POST_QUEUE_NAME)


async def run_to_the_end(settings: Settings, job: CheckJob) -> tuple[Job, Job]:
    """Queue `job`, run a worker until its thread is delivered: both jobs."""
    key = await queued(settings, job)
    w = Worker(settings)
    w.start()
    try:
        return await delivered(settings, key, timeout=60)
    finally:
        await w.stop()


def live(settings: Settings) -> Settings:
    """No grace: the thread goes live ("Checking…", stage by stage, then the verdict)."""
    return replace(settings, slack_grace=0)


def the_parent(slack: SlackAPIStandIn) -> dict[str, Any]:
    """The one top-level message, as it reads in Slack now."""
    (parent,) = top_level(slack)
    return slack.messages[(parent.params["channel"], parent.response["ts"])]


def has_rerun(message: dict[str, Any]) -> bool:
    return "mailcheck_rerun" in json.dumps(message.get("blocks"))


# -- Slack fails: the client retries, the check is not run again ----------------------------

# (method, domain, stages, live): a chat.update only when the thread goes
# live; a file upload only for a report with a problem (its transcripts).
FAILING = [
    ("chat.postMessage", "healthy.test", ("dns",), False),
    ("chat.update", "healthy.test", ("dns",), True),
    ("files.getUploadURLExternal", "smtp-notls.test", ("connect",), False),
    ("upload", "smtp-notls.test", ("connect",), False),
    ("files.completeUploadExternal", "smtp-notls.test", ("connect",), False),
]


@pytest.mark.parametrize(
    ("method", "domain", "stages", "is_live"), FAILING, ids=[m for m, *_ in FAILING]
)
async def test_slack_500s_on_each_method_are_retried_to_a_verdict(
    settings: Settings,
    slack: SlackAPIStandIn,
    method: str,
    domain: str,
    stages: tuple[str],
    is_live: bool,
) -> None:
    timed = live(settings) if is_live else settings
    slack.fail(method, status=500, times=2)
    job, posting = await run_to_the_end(timed, check(domain, stages))
    assert job.status == Status.COMPLETE and posting.status == Status.COMPLETE, posting.error
    assert job.attempts == 1 and posting.attempts == 1  # the client retried the call
    parent = the_parent(slack)
    assert has_rerun(parent) and "Checking" not in parent["text"]
    if method != "upload":
        assert [c.status for c in slack.calls_to(method)][:3] == [500, 500, 200]
    updates = len(slack.calls_to("chat.update"))
    assert updates == ((3 if method == "chat.update" else 1) if is_live else 0)


async def test_the_issue_17_outage_ends_with_a_verdict(
    settings: Settings, slack: SlackAPIStandIn
) -> None:
    """Two 500s to chat.postMessage and one to chat.update used to fail all
    three attempts and leave the thread at "Checking healthy.test…"."""
    timed = live(settings)
    slack.fail("chat.postMessage", status=500, times=2)
    slack.fail("chat.update", status=500, times=1)
    slack.drop("chat.postMessage", times=1)  # and a connection lost on the way
    job, posting = await run_to_the_end(timed, check("healthy.test"))
    assert job.status == Status.COMPLETE and posting.status == Status.COMPLETE, posting.error
    parent = the_parent(slack)
    assert has_rerun(parent) and "Checking" not in parent["text"]
    headers = [
        b["text"]["text"]
        for c in replies(slack, top_level(slack)[0].response["ts"])
        for b in c.params["blocks"]
        if b["type"] == "header"
    ]
    assert headers.count("DNS") == 1  # posted once, however often Slack failed


async def test_a_retried_job_reuses_the_report_its_first_attempt_stored(
    settings: Settings, slack: SlackAPIStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt dies after its check (the report stored) and before
    it queued the thread: the retry posts that report, without checking again."""
    checks: list[float] = []
    stream, finish = worker_module.run_stream, worker_module._finish

    def counted(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        checks.append(time.monotonic())
        return stream(*args, **kwargs)

    async def dies_once(*args: Any, **kwargs: Any) -> None:
        if len(checks) == 1 and not getattr(dies_once, "died", False):
            dies_once.died = True  # type: ignore[attr-defined]
            raise RuntimeError("the worker died")
        await finish(*args, **kwargs)

    monkeypatch.setattr(worker_module, "run_stream", counted)
    monkeypatch.setattr(worker_module, "_finish", dies_once)
    job, posting = await run_to_the_end(settings, check("healthy.test"))
    assert job.status == Status.COMPLETE and job.attempts == 2
    assert posting.status == Status.COMPLETE
    assert len(checks) == 1  # checked once, posted from the stored report
    parent = the_parent(slack)
    assert has_rerun(parent) and "healthy.test" in parent["text"]
    (reply,) = replies(slack, top_level(slack)[0].response["ts"])
    assert "DNS" in json.dumps(reply.params["blocks"])


# -- a job that gives up says so ------------------------------------------------------------


async def test_a_job_that_raises_ends_with_a_visible_failure(
    settings: Settings, slack: SlackAPIStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise RuntimeError("a bug in a probe")
        yield  # an async generator, like runner.stream

    monkeypatch.setattr(worker_module, "run_stream", broken)
    job, posting = await run_to_the_end(settings, check("healthy.test"))
    assert job.status == Status.FAILED and job.attempts == settings.job_retries
    assert posting.status == Status.COMPLETE
    # It failed within the grace period: the failure is the thread's parent,
    # no "Checking…" before it, no edit.
    assert not slack.calls_to("chat.update")
    parent = the_parent(slack)
    text = json.dumps(parent["blocks"])
    assert "healthy.test" in text and "RuntimeError" in text and "3 attempts" in text
    assert has_rerun(parent)
    assert "a bug in a probe" not in text  # exception text stays in the logs


async def test_a_job_past_its_deadline_ends_with_a_visible_failure(
    settings: Settings, slack: SlackAPIStandIn, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stuck(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await asyncio.sleep(3600)
        yield  # an async generator, like runner.stream

    monkeypatch.setattr(worker_module, "run_stream", stuck)
    job = check("healthy.test")
    queue = make_queue(settings)
    try:  # as enqueue_check does, with a deadline of 2 s and no retry
        await queue.enqueue(
            "check_job",
            key=job.dedupe_key,
            timeout=2,
            heartbeat=settings.job_heartbeat,
            retries=1,
            **job.with_id().kwargs(),
        )
    finally:
        await queue.disconnect()
    worker.start()
    done, _ = await delivered(settings, job.dedupe_key, timeout=30)
    assert done.status in (Status.FAILED, Status.ABORTED)  # saq's timeout, or its sweeper's
    parent = the_parent(slack)
    assert "past its deadline" in json.dumps(parent["blocks"]) and has_rerun(parent)


async def test_a_job_whose_slack_posts_keep_failing_still_says_so(
    settings: Settings, slack: SlackAPIStandIn, worker: Worker
) -> None:
    """Slack answers 500 to every chat.update of every attempt: the posting
    gives up, and when even its last word cannot edit, it says so in the thread."""
    one = live(replace(settings, job_retries=1))
    slack.fail("chat.update", status=500, times=40)
    key = await queued(one, check("healthy.test"))
    w = Worker(one)
    w.start()
    try:
        job, posting = await delivered(one, key, timeout=120)
        await slack.wait_for("chat.postMessage", 3, timeout=60)  # parent, DNS, failure
    finally:
        await w.stop()
    assert job.status == Status.COMPLETE and posting.status == Status.FAILED
    (parent,) = top_level(slack)
    last = replies(slack, parent.response["ts"])[-1]
    text = json.dumps(last.params["blocks"])
    assert "Slack" in text and "500" in text and has_rerun(last.params)


async def test_a_killed_worker_on_the_last_attempt_ends_with_a_visible_failure(
    settings: Settings, slack: SlackAPIStandIn, worker: Worker, stalling_mx: FakeServer
) -> None:
    """No retry left: the sweeper aborts the job, and says so in its thread."""
    one = replace(settings, job_retries=1)
    key = await queued(one, check("smtp-stall.test", None))
    victim = worker_process(settings)
    try:
        await slack.wait_for("chat.postMessage", 2, timeout=30)  # parent + DNS stage
        await asyncio.sleep(0.5)
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 5)
        worker.start()
        job, _ = await delivered(settings, key, timeout=30)
    except TimeoutError:
        raise AssertionError("no failure shown; log:\n" + worker_log(victim)) from None
    finally:
        if victim.poll() is None:
            victim.kill()
    assert job.status == Status.ABORTED
    parent = the_parent(slack)
    text = json.dumps(parent["blocks"])
    assert "smtp-stall.test" in text and "stopped" in text and has_rerun(parent)


# -- takeover -------------------------------------------------------------------------------


async def test_a_swept_job_is_queued_again_at_once(
    settings: Settings, slack: SlackAPIStandIn
) -> None:
    """Once the sweeper finds a job without its heartbeat, it is ready for
    the next dequeue: no retry delay, no wait for a dead worker to abort."""
    key = await queued(settings, check("healthy.test"))
    queue = make_queue(settings)
    try:
        job = await queue.dequeue(timeout=1)
        assert job is not None and job.key == key
        job.attempts += 1
        missed = int(time.time() * 1000) - 10_000  # its last heartbeat, 10 s ago
        await job.update(status=Status.ACTIVE, started=missed, touched=missed)
        await worker_module.sweep_once(queue, 1)
        assert await queue.count("queued") == 1
        again = await queue.dequeue(timeout=1)
        assert again is not None and again.key == key and again.error == "swept"
    finally:
        await queue.disconnect()


async def test_a_job_swept_before_it_started_is_left_to_its_worker(
    settings: Settings, slack: SlackAPIStandIn
) -> None:
    """Dequeued but not yet marked active when the sweeper looks: its worker
    is about to start it, so the sweep neither aborts nor queues it again
    (saq's sweeper aborted it, and its worker then cancelled a healthy check)."""
    key = await queued(settings, check("healthy.test"))
    queue = make_queue(settings)
    try:
        job = await queue.dequeue(timeout=1)
        assert job is not None and job.key == key and not job.started
        assert await sweep_now(queue) == []
        assert await queue.count("queued") == 0 and await queue.count("active") == 1
        again = await queue.job(key)
        assert again is not None and again.status == Status.QUEUED and again.error is None
    finally:
        await queue.disconnect()


async def test_a_sweep_in_the_instant_of_each_dequeue_changes_nothing(
    settings: Settings, slack: SlackAPIStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race CI hit, made certain: at each dequeue, a sweeper reads the
    job in the instant before its worker marks it active, and acts once the
    worker has. Each attempt still runs to its end, once, on its worker, and
    the job fails once, after all its attempts, telling its thread once.
    (saq's sweep wrote its stale copy over the started job, aborting it.)"""
    runs: list[float] = []

    async def broken(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        runs.append(time.monotonic())
        await asyncio.sleep(2.5)  # long enough for the worker's abort poll (every 1 s)
        raise RuntimeError("a bug in a probe")
        yield  # an async generator, like runner.stream

    dequeue, abort = MailcheckQueue.dequeue, MailcheckQueue.abort
    sweeps: set[asyncio.Task[list[Job]]] = set()

    async def swept_as_dequeued(self: MailcheckQueue, *args: Any, **kwargs: Any) -> Job | None:
        job = await dequeue(self, *args, **kwargs)
        if job is not None:
            sweeps.add(asyncio.create_task(sweep_now(make_queue(settings))))
            await asyncio.sleep(0.2)  # the sweeper has read it
        return job

    async def abort_once_started(self: MailcheckQueue, job: Job, *args: Any, **kw: Any) -> None:
        for _ in range(100):
            stored = await self.job(job.key)
            if stored is not None and stored.status == Status.ACTIVE:
                break
            await asyncio.sleep(0.05)
        await abort(self, job, *args, **kw)

    monkeypatch.setattr(MailcheckQueue, "abort", abort_once_started)
    monkeypatch.setattr(worker_module, "run_stream", broken)
    monkeypatch.setattr(MailcheckQueue, "dequeue", swept_as_dequeued)
    key = await queued(settings, check("healthy.test"))
    w = Worker(settings)
    w.start()
    try:
        job = await until(settings, key, finished, timeout=60)
        await slack.wait_for("chat.update", 1, timeout=30)
        await asyncio.sleep(2)  # a second run or a second failure would show now
    finally:
        await w.stop()
        for task in sweeps:
            task.cancel()
        await asyncio.gather(*sweeps, return_exceptions=True)
    assert job.status == Status.FAILED and job.attempts == settings.job_retries
    assert len(runs) == settings.job_retries
    assert len(slack.calls_to("chat.update")) == 1


async def test_a_job_whose_worker_died_before_starting_it_is_taken_over(
    settings: Settings, slack: SlackAPIStandIn
) -> None:
    """Dequeued, then nothing for a whole heartbeat: its worker died between
    taking the job and starting it. The sweep that sees it so queues it again
    at once, like a started job whose heartbeat stopped."""
    key = await queued(settings, check("healthy.test"))
    queue = make_queue(settings)
    try:
        job = await queue.dequeue(timeout=1)
        assert job is not None and job.key == key
        assert await sweep_now(queue) == []  # first seen: left alone
        await asyncio.sleep(job.heartbeat + 0.2)
        await sweep_now(queue)
        assert await queue.count("queued") == 1
        again = await queue.dequeue(timeout=1)
        assert again is not None and again.key == key and again.error == "swept"
        assert again.attempts == 0  # it never ran
    finally:
        await queue.disconnect()


async def test_takeover_after_a_kill_within_heartbeat_and_sweep(
    settings: Settings, slack: SlackAPIStandIn, stalling_mx: FakeServer
) -> None:
    """Heartbeat 5 s, sweep every 2 s: the README promises a killed worker's
    job is picked up within 7 s. Prints the time measured (no wall-clock
    assert); asserts the order of events."""
    timed = replace(settings, job_heartbeat=5, sweep_interval=2)
    key = await queued(timed, check("smtp-stall.test", None))
    victim = worker_process(timed)
    survivor = Worker(timed)
    try:
        await slack.wait_for("chat.postMessage", 2, timeout=30)
        survivor.start()
        for _ in range(400):  # its startup done: sweeping
            if "sweeper" in survivor.worker.context:
                break
            await asyncio.sleep(0.02)
        first = await saq_job(timed, key)
        assert first.status == Status.ACTIVE and first.attempts == 1
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time()
        await asyncio.to_thread(victim.wait, 5)
        last_beat = (await saq_job(timed, key)).touched
        taken = await until(
            timed, key, lambda j: j.attempts >= 2 and j.status == Status.ACTIVE, timeout=60
        )
        taken_at = time.time()
        await slack.wait_for("chat.update", 1, timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
        await survivor.stop()
    print(
        f"\ntakeover: {taken_at - killed_at:.2f} s after SIGKILL "
        f"({(taken.started - last_beat) / 1000:.2f} s after the last heartbeat; "
        f"promised: heartbeat 5 + sweep 2 = 7 s)"
    )
    assert taken.error == "swept"  # found by the sweeper, not by chance
    assert last_beat / 1000 <= killed_at  # the victim's heartbeat stopped with it...
    assert taken.started - last_beat > 5_000  # ...and it was taken only once missed
    assert len(top_level(slack)) == 1 and len(slack.calls_to("chat.update")) == 1
