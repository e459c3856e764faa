"""The worker: runs queued checks; its post worker puts them in Slack threads.

A check job runs the check and decides its thread; it never waits for Slack.
What it decides goes into the request's outbox (bot.outbox), and a post job
on the post queue (its own slots, MAILCHECK_POST_CONCURRENCY) delivers it at
the channel's pace. A check done within MAILCHECK_SLACK_GRACE seconds is
posted whole: the verdict as the parent, one reply with every stage (more
only when Slack's block limits need them). A longer one goes live: the
parent says "Checking example.com…", each stage is a reply as it finishes,
and the parent is edited into the verdict at the end. Either way, a thread
cut short at MAILCHECK_SLACK_MAX_REPLIES counts what it left out and attaches
the full report; a report with a problem attaches its transcripts.

The report is kept in Redis the moment it exists: a retried job (its worker
died) reuses it instead of checking again, and every Slack write happens once
(bot.outbox). A job that gives up (no attempt left, past its deadline, a bug)
says so in its thread, with a Re-run button.

    mailcheck worker       # SIGTERM: finish (or hand back) in-flight jobs, then exit
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job, Queue, Worker
from saq.job import Status
from saq.types import PartialTimersDict
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import access, blocks, terminal
from bot.grammar import describe_every
from bot.history import HistoryStore
from bot.outbox import END, Delivery, Outbox, Write, reply
from bot.poster import FINAL_ERRORS, Poster, ReportFile, RunState, slack_client
from bot.queue import (
    POST_QUEUE_NAME,
    CheckJob,
    MailcheckQueue,
    enqueue_post,
    heartbeat,
    make_queue,
    post_timeout,
    raise_if_cancelled,
    redis_client,
)
from bot.sendtest_jobs import sendtest_job
from bot.settings import Settings
from bot.watches import Watch, WatchStore, expiring_certificates, schedule, should_post
from checks.core.model import CheckRequest, Report, Severity, Stage
from checks.engine.runner import CheckDone, StageDone
from checks.engine.runner import run as run_check
from checks.engine.runner import stream as run_stream
from checks.report import jsonreport
from checks.report.diff import diff_reports
from checks.rules.dmarc import organizational_domain

log = logging.getLogger(__name__)

# Of those, the ones that mean a watch there can never post again.
CHANNEL_GONE = {"not_in_channel", "channel_not_found", "is_archived"}
# Telling a thread its check gave up: tries (each with the client's own
# retries), then the whole act's deadline.
GIVE_UP_TRIES = 4
GIVE_UP_DEADLINE = 120.0


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    ctx["redis"] = redis_client(settings.redis_url)
    await access.publish_accounts(ctx["redis"], settings.accounts)  # names and domains only
    ctx["poster"] = Poster(slack_client(settings), ctx["redis"])
    # For the threads: no blind retries (bot.outbox retries, reading back first).
    ctx["exact_poster"] = Poster(slack_client(settings, blind_retries=False), ctx["redis"])
    ctx["giving_up"] = set()
    # Slack posting: its own queue and worker, beside the check slots.
    posting = build_post_worker(settings, ctx)
    ctx["post_queue"] = posting.queue
    ctx["posting"] = asyncio.create_task(posting.start())
    ctx["post_worker"] = posting
    ctx["sweeper"] = asyncio.create_task(_sweep(ctx, settings.sweep_interval))
    ctx["scheduler"] = asyncio.create_task(schedule(ctx["worker"].queue, ctx["redis"], settings))
    # Load the Public Suffix List now: parsed on first use, it would stall the
    # event loop (and the heartbeats) in the middle of someone's check.
    await asyncio.to_thread(organizational_domain, "example.com")


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx["sweeper"].cancel()
    ctx["scheduler"].cancel()
    await asyncio.gather(ctx["sweeper"], ctx["scheduler"], return_exceptions=True)
    if ctx["giving_up"]:  # each bounded by GIVE_UP_DEADLINE
        await asyncio.wait(ctx["giving_up"], timeout=GIVE_UP_DEADLINE)
    posting: MailcheckWorker = ctx["post_worker"]
    try:
        await asyncio.wait_for(posting.stop(), GIVE_UP_DEADLINE)
    except TimeoutError:
        log.warning("the posting worker did not stop in time")
    ctx["posting"].cancel()
    await asyncio.gather(ctx["posting"], return_exceptions=True)
    await posting.queue.disconnect()
    await ctx["redis"].aclose()


async def _sweep(ctx: dict[str, Any], every: int) -> None:
    """Find jobs whose worker died (no heartbeat) and hand them to a live one.
    saq's own sweeper holds a 60 s lock between runs, whatever its interval;
    ours locks for `every`, so a dead worker's check resumes within
    MAILCHECK_JOB_HEARTBEAT + `every` seconds. A job with no attempt left is
    aborted instead, and its thread told so."""
    tasks: set[asyncio.Task[bool]] = ctx["giving_up"]
    while True:
        try:
            aborted = await sweep_once(ctx["post_queue"], every)
            aborted += await sweep_once(ctx["worker"].queue, every)
            for job in aborted:
                # Beside the sweeping: a slow Slack must not delay the next takeover.
                check = CheckJob.from_kwargs(job.kwargs or {})
                if job.function == "check_job":
                    told = give_up(ctx, check, swept_reason(job))
                elif not check.watch:  # the posting itself died: straight to Slack
                    told = tell_directly(ctx, check, swept_reason(job))
                else:
                    continue
                task = asyncio.create_task(told)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except Exception:  # a Redis hiccup must not end the sweeping
            log.exception("sweep failed")
        raise_if_cancelled()
        await asyncio.sleep(every)


async def sweep_once(queue: MailcheckQueue, every: int) -> list[Job]:
    """One sweep (if no worker swept in the last `every` seconds): each job
    without a heartbeat is queued again at once (bot.queue.MailcheckQueue),
    or aborted when it has no attempt left. Returns the jobs aborted.
    (A job that is stuck but whose worker is alive gets saq's 5 s to see its abort.)"""
    swept = await queue.takeover(lock=every)
    found = [await queue.job(queue.job_key_from_id(job_id)) for job_id in swept]
    return [job for job in found if job is not None and job.status == Status.ABORTED]


def swept_reason(job: Job) -> str:
    """Why the sweeper aborted a job: past its deadline, or its worker silent."""
    if job.timeout and job.started and time.time() * 1000 - job.started > job.timeout * 1000:
        what = "it ran past its deadline"
    else:
        what = f"the worker running it stopped (no heartbeat for {job.heartbeat} s)"
    return f"{what}, after {_attempts(job.attempts)}"


def failure_reason(exc: BaseException | None, attempts: int) -> str:
    """Why a job failed, in a few words for its thread: the exception's type,
    never its text (which can carry anything, a remote server's words included)."""
    if isinstance(exc, SlackApiError):
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        error = data.get("error") or "no answer"
        what = f"Slack kept failing ({error}, HTTP {exc.response.status_code})"
    elif isinstance(exc, TimeoutError):
        what = "it ran past its deadline"
    elif exc is None:
        what = "it was stopped"
    else:
        what = f"an internal error ({type(exc).__name__})"
    return f"{what}, after {_attempts(attempts)}"


def _attempts(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


async def after_process(ctx: dict[str, Any]) -> None:
    """saq's hook after each job: a check that failed for good (its last
    attempt raised or ran past its deadline, or it was aborted) says so."""
    job: Job | None = ctx.get("job")
    if job is None or job.function not in ("check_job", "post_job"):
        return
    if job.status not in (Status.FAILED, Status.ABORTED):
        return  # done, or queued again for another attempt
    reason = failure_reason(ctx.get("exception"), job.attempts)
    check = CheckJob.from_kwargs(job.kwargs or {})
    if job.function == "post_job":  # Slack kept failing: one last try, straight to it
        if not check.watch:
            await tell_directly(ctx, check, reason)
        return
    await give_up(ctx, check, reason)


async def give_up(ctx: dict[str, Any], job: CheckJob, reason: str) -> bool:
    """A check's last act when it will not be tried again: its thread is
    told, through the outbox (its parent edited into a failure verdict
    naming `reason`, with the Re-run button, or posted as one if there is no
    parent yet), and the outbox ended. True when that was queued now."""
    try:
        outbox = Outbox(ctx["redis"], job.request_id)
        if await outbox.has(END):
            return False  # its thread was complete (a later step failed)
        if job.watch and not await outbox.has("parent"):
            log.warning("watch %s: the run of slot %d failed: %s", job.watch, job.slot, reason)
            await outbox.add([(END, Write(END))])
            return False  # a quiet run fails quietly; the next slot runs as usual
        log.warning("check of %s in %s failed: %s", job.domain, job.channel, reason)
        message = blocks.failure_message(job.display, job.user, reason, job.rerun_value())
        await outbox.add([("failed", Write("parent_or_edit", message)), (END, Write(END))])
        await asyncio.wait_for(_ensure_posting(ctx, job), GIVE_UP_DEADLINE)
        return True
    except Exception:
        log.exception("could not tell %s its check of %s failed", job.channel, job.domain)
        return False


async def tell_directly(ctx: dict[str, Any], job: CheckJob, reason: str) -> bool:
    """When the posting itself gave up (Slack kept failing, or its workers
    died): one last try to show the failure, straight to Slack. True once shown."""
    try:
        return await asyncio.wait_for(_tell_directly(ctx, job, reason), GIVE_UP_DEADLINE)
    except Exception:
        log.exception("could not tell %s its check of %s failed", job.channel, job.domain)
        return False


async def _tell_directly(ctx: dict[str, Any], job: CheckJob, reason: str) -> bool:
    poster: Poster = ctx["poster"]
    state = RunState(ctx["redis"], job.request_id)
    parent = await state.get("parent_ts")
    message = blocks.failure_message(job.display, job.user, reason, job.rerun_value())
    for attempt in range(GIVE_UP_TRIES):
        try:
            if not parent:
                await poster.post(job.channel, message)
            elif attempt < GIVE_UP_TRIES // 2:
                await poster.update(job.channel, parent, message)
            else:  # the parent will not take the edit: say it in its thread
                await poster.post(job.channel, message, thread_ts=parent)
            return True
        except SlackApiError as exc:
            if exc.response.get("error") in FINAL_ERRORS:
                log.warning("cannot post to %s: %s", job.channel, exc.response.get("error"))
                return False
            log.warning("telling %s its check failed: %s", job.channel, exc)
        except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("telling %s its check failed: %r", job.channel, exc)
        await asyncio.sleep(2**attempt)
    return False


async def check_job(ctx: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The saq job function; kwargs are a CheckJob's."""
    job = CheckJob.from_kwargs(kwargs)
    settings: Settings = ctx["settings"]
    async with heartbeat(ctx, settings):
        return await _run(ctx, job, settings)


async def post_job(ctx: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The saq job that delivers a check's outbox to Slack (bot.outbox), on
    the post queue: it waits for its channel's pace without holding a check slot."""
    job = CheckJob.from_kwargs(kwargs)
    settings: Settings = ctx["settings"]
    delivery = Delivery(ctx["exact_poster"], ctx["redis"], job.request_id, job.channel)
    delivery.on_parent = lambda ts: HistoryStore(ctx["redis"], settings.retention_days).set_parent(
        job.request_id, ts
    )
    try:
        async with heartbeat(ctx, settings):
            ended = await delivery.run(time.monotonic() + post_timeout(settings) - 10)
    except SlackApiError as exc:
        error = exc.response.get("error", "")
        if error in FINAL_ERRORS:
            log.warning("cannot post to %s: %s", job.channel, error)
            if job.watch and error in CHANNEL_GONE:
                await WatchStore(ctx["redis"]).remove(job.channel, job.domain)
                log.warning("watch %s ended: the channel is gone (%s)", job.watch, error)
            return {"error": error}
        raise
    if not ended:
        raise TimeoutError("the check added nothing more before the post job's deadline")
    return {"parent_ts": await delivery.state.get("parent_ts") or ""}


async def _ensure_posting(ctx: dict[str, Any], job: CheckJob) -> None:
    """The request's post job is queued (or running, or done)."""
    await enqueue_post(ctx["post_queue"], job, ctx["settings"])


async def _run(ctx: dict[str, Any], job: CheckJob, settings: Settings) -> dict[str, Any]:
    if job.watch:
        return await _run_watch(ctx, job, settings)
    redis: Redis = ctx["redis"]
    state = RunState(redis, job.request_id)
    outbox = Outbox(redis, job.request_id)
    if not await outbox.has(END):
        stored = await state.get("report")
        if stored is not None:  # a retry: the first attempt's check is reused
            report = jsonreport.loads(stored)
        else:
            report = await _check(ctx, job, settings, state, outbox)
            await state.set("report", jsonreport.dumps(report))
        await _finish(ctx, job, settings, state, outbox, report)
    await _ensure_posting(ctx, job)
    return {"request_id": job.request_id}


async def _check(
    ctx: dict[str, Any], job: CheckJob, settings: Settings, state: RunState, outbox: Outbox
) -> Report:
    """Run the check. Done within MAILCHECK_SLACK_GRACE, it posts nothing
    yet (its whole thread goes at once). Longer, it goes live: "Checking…"
    now, then each stage's replies as the stage completes."""
    request = _request(job)
    done: list[StageDone] = []  # the runner's, in stage order
    live = await state.get("mode") == "live"
    sent = 0  # stages whose replies are queued
    budget = Budget(settings.slack_max_replies - 1)

    async def send_complete() -> None:
        nonlocal sent
        writes: list[tuple[str, Write]] = []
        for stage_done in done[sent:]:
            partial = Report(request, datetime.now(UTC), 0.0, stage_done.findings)
            writes += budget.stage_writes(partial, stage_done.stage)
        sent = len(done)
        await outbox.add(writes)

    async def go_live() -> None:
        nonlocal live
        live = True
        await state.set("mode", "live")
        message = blocks.pending_message(job.display, job.user, job.stages)
        await outbox.add([("parent", Write("parent", message))])
        await _ensure_posting(ctx, job)
        await send_complete()

    if live:
        await go_live()
    events: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in run_stream(request, settings.engine_config()):
                events.put_nowait(event)
        except BaseException as exc:  # handed to the loop below, which raises it
            events.put_nowait(exc)
            raise
        events.put_nowait(None)

    loop = asyncio.get_running_loop()
    grace_ends = loop.time() + settings.slack_grace
    pumping = asyncio.create_task(pump())
    report: Report | None = None
    try:
        while True:
            wait = None if live else max(0.0, grace_ends - loop.time())
            try:
                event = await asyncio.wait_for(events.get(), wait)
            except TimeoutError:
                await go_live()
                continue
            if event is None:
                break
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, StageDone):
                done.append(event)
                if live:
                    await send_complete()
            elif isinstance(event, CheckDone):
                report = event.report
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumping
    assert report is not None
    return report


class Budget:
    """A thread's replies of findings, at most `replies`: which pages are
    shown (the same ones on every attempt) and what is left out."""

    def __init__(self, replies: int) -> None:
        self.replies = replies
        self.used = 0
        self.left: Counter[tuple[Severity, str]] = Counter()

    def writes(self, role: str, pages: Sequence[blocks.Page]) -> list[tuple[str, Write]]:
        shown: list[tuple[str, Write]] = []
        for n, page in enumerate(pages, 1):
            if self.used < self.replies:
                shown.append((f"{role}:{n}", reply(page.message)))
                self.used += 1
            else:
                self.left.update((f.severity, f.code) for f in page.findings)
        return shown

    def stage_writes(self, report: Report, stage: Stage) -> list[tuple[str, Write]]:
        return self.writes(f"stage:{stage.value}", blocks.stage_pages(report, stage))


async def _finish(
    ctx: dict[str, Any],
    job: CheckJob,
    settings: Settings,
    state: RunState,
    outbox: Outbox,
    report: Report,
) -> None:
    """Keep the report, and queue the rest of its thread and the outbox's end
    in one go: all of it, for a check done within the grace period."""
    redis: Redis = ctx["redis"]
    live = await state.get("mode") == "live"
    history = HistoryStore(redis, settings.retention_days)
    await _keep(history, state, job, report, job.user)
    verdict = blocks.verdict_message(report, job.user, job.rerun_value())
    writes: list[tuple[str, Write]] = []
    budget = Budget(settings.slack_max_replies - 1)
    if live:
        for stage in Stage:
            writes += budget.stage_writes(report, stage)
    else:
        writes.append(("parent", Write("parent", verdict)))
        writes += budget.writes("report", blocks.report_pages(report))
    writes += await _thread_end(job, settings, report, budget)
    if live:
        writes.append(("verdict", Write("edit", verdict)))
    changes = await changes_write(ctx, history, job)
    if changes is not None:
        writes.append(("changes", changes))
    await outbox.add([*writes, (END, Write(END))])


async def _keep(
    history: HistoryStore,
    state: RunState,
    job: CheckJob,
    report: Report | dict[str, Any],
    user: str,
    trigger: str = "",
) -> None:
    """Keep the report in the channel's history; the thread's parent is
    filled in by the post job (HistoryStore.set_parent) once it is up."""
    parent = await state.get("parent_ts") or ""
    await history.keep(
        jsonreport.dumps(report),
        request_id=job.request_id,
        channel=job.channel,
        user=user,
        parent_ts=parent,
        trigger=trigger,
    )
    if not parent and (parent := await state.get("parent_ts") or ""):
        await history.set_parent(job.request_id, parent)  # posted while it was kept


async def _thread_end(
    job: CheckJob, settings: Settings, report: Report, budget: Budget
) -> list[tuple[str, Write]]:
    """What follows the findings: when the thread could not show them all, a
    reply counting those left out per code and the full report as a file;
    when the check found a problem, its transcripts as a file."""
    writes: list[tuple[str, Write]] = []
    if budget.left:
        message = blocks.left_out_message(budget.left, settings.slack_max_replies)
        file = ReportFile.of(
            settings, f"mailcheck-{job.domain}-report.txt", f"Full report: {job.display}"
        )
        text = await asyncio.to_thread(terminal.plain_text, report, resolver=file.resolver)
        upload = Write("upload", filename=file.filename, title=file.title, content=text)
        writes += [("left_out", reply(message)), ("report_file", upload)]
    if report.worst < Severity.INCONCLUSIVE:
        return writes
    text = "\n".join(
        f"## {probe}\n" + "\n".join(lines) for probe, lines in report.transcripts.items() if lines
    )
    if text:
        name, title = f"mailcheck-{job.domain}-transcripts.txt", f"Transcripts: {job.display}"
        writes.append(("transcripts", Write("upload", filename=name, title=title, content=text)))
    return writes


def _request(job: CheckJob) -> CheckRequest:
    stages = frozenset(Stage(s) for s in job.stages) if job.stages else None
    return CheckRequest(
        job.domain,
        job.display,
        job.domain,
        stages,
        dkim_selectors=job.dkim_selectors,
        sender_ips=job.sender_ips,
        account=job.account,
    )


async def _run_watch(ctx: dict[str, Any], job: CheckJob, settings: Settings) -> dict[str, Any]:
    """A watch's run of one slot: check quietly, keep the report, and post a
    thread only when it is worth it (bot.watches.should_post)."""
    redis: Redis = ctx["redis"]
    watches = WatchStore(redis)
    watch = await watches.get(job.watch)
    if watch is None or watch.generation != job.watch_generation:
        return {"skipped": "unwatched"}
    if access.refusal(settings, watch.channel, watch.user):
        return await _end_unallowed(ctx, watches, watch, settings)
    state = RunState(redis, job.request_id)
    if await state.posted("done"):
        return {"skipped": "done"}
    if not await watches.lock(watch, job.request_id, settings.job_timeout):
        log.info("watch %s: slot %d skipped, the last run is still going", watch.id, job.slot)
        return {"skipped": "the last run is still going"}
    try:
        if not await watches.claim(watch, job.slot, job.request_id):
            log.info("watch %s: slot %d already ran", watch.id, job.slot)
            return {"skipped": "slot already run"}
        return await _watch_slot(ctx, job, settings, watches, state)
    finally:
        with contextlib.suppress(RedisError, OSError):  # else it expires; the retry takes it
            await watches.unlock(watch, job.request_id)


async def _watch_slot(
    ctx: dict[str, Any], job: CheckJob, settings: Settings, watches: WatchStore, state: RunState
) -> dict[str, Any]:
    """One slot's run, alone (the watch's lock is held): the watch read here
    says what the run before found."""
    redis: Redis = ctx["redis"]
    poster: Poster = ctx["poster"]
    watch = await watches.get(job.watch)
    if watch is None or watch.generation != job.watch_generation:
        return {"skipped": "unwatched"}
    if watch.last_slot > job.slot:
        return {"skipped": "a later slot ran first"}
    # Each run is a check of the domain: it counts against the domain's hourly
    # limit like a command's. Decided once per request, so a retry of this job
    # neither counts twice nor changes its mind.
    rated = await state.get("rate")
    if rated is None:
        over = await access.over(redis, f"domain:{watch.domain}", settings.domain_rate)
        rated = "over" if over else "within"
        await state.set("rate", rated)
    if rated == "over":
        return await _skip_over_rate(poster, watches, state, watch, job.slot, settings)

    report = await run_check(_request(job), settings.engine_config())
    report_dict = jsonreport.report_to_dict(report)
    worst = blocks.report_verdict(report)[0].value
    expiring = expiring_certificates(report_dict)
    now = time.time()
    decided = await state.get("post")
    if decided is None:
        post, reason = should_post(watch, worst, expiring, now)
        decided = reason if post else ""
        await state.set("post", decided)
    history = HistoryStore(redis, settings.retention_days)
    await _keep(history, state, job, report_dict, watch.user, trigger="watch")
    if decided:
        message = blocks.watch_message(
            report,
            watch.user,
            describe_every(watch.every),
            decided,
            watch.last_worst,
            expiring,
            job.rerun_value(),
        )
        budget = Budget(settings.slack_max_replies - 1)
        writes = [("parent", Write("parent", message))]
        writes += budget.writes("report", blocks.report_pages(report))
        writes += await _thread_end(job, settings, report, budget)
        changes = await changes_write(ctx, history, job)
        if changes is not None:
            writes.append(("changes", changes))
        await Outbox(redis, job.request_id).add([*writes, (END, Write(END))])
        await _ensure_posting(ctx, job)
    await watches.finished(watch, job.slot, job.request_id, worst, expiring, bool(decided), now)
    await state.mark("done")
    return {"worst": worst, "posted": decided, "slot": job.slot}


async def _end_unallowed(
    ctx: dict[str, Any], watches: WatchStore, watch: Watch, settings: Settings
) -> dict[str, Any]:
    """The watch's channel or setter is no longer allowed (the allow-lists
    changed since it was set): end it rather than run checks in their name,
    and say so in the channel once (the job that removed it says it)."""
    if await watches.remove(watch.channel, watch.domain) is None:
        return {"skipped": "unwatched"}
    setter = blocks.mention(watch.user)
    if settings.allowed_channels and watch.channel not in settings.allowed_channels:
        why = "mailcheck is no longer enabled in this channel."
    else:
        why = f"{setter} is no longer on the list of mailcheck users."
    log.warning("watch %s ended: %s", watch.id, why)
    text = (
        f":no_entry: Stopped watching {blocks.code_span(watch.display, 300)} "
        f"(every {blocks.escape(describe_every(watch.every))}, set by {setter}): {why}"
    )
    poster: Poster = ctx["poster"]
    await poster.post(watch.channel, blocks.watch_notice(text))
    return {"skipped": "not allowed", "ended": True}


async def _skip_over_rate(
    poster: Poster,
    watches: WatchStore,
    state: RunState,
    watch: Watch,
    slot: int,
    settings: Settings,
) -> dict[str, Any]:
    """Skip this slot: the domain was checked as often as allowed this hour.
    Told in the channel when a run of skipped slots begins, not at every one."""
    log.info("watch %s: slot %d skipped, the domain's hourly limit is reached", watch.id, slot)
    first = watch.skipped_slot <= watch.last_slot  # it ran since the last skip, if any
    await watches.skipped(watch, slot)
    if first and not await state.posted("skipped"):
        shown = blocks.code_span(watch.display, 300)
        text = (
            f":hourglass: Skipped the watch of {shown} (every "
            f"{blocks.escape(describe_every(watch.every))}, set by "
            f"{blocks.mention(watch.user)}): {shown} was checked {settings.domain_rate} times "
            "in the last hour, the most allowed. Its runs resume when the hour is over; "
            "the next is told here only if its verdict changes."
        )
        await poster.post(watch.channel, blocks.watch_notice(text))
        await state.mark("skipped")
    await state.mark("done")
    return {"skipped": "domain rate", "slot": slot}


async def changes_write(ctx: dict[str, Any], history: HistoryStore, job: CheckJob) -> Write | None:
    """ "Changes since <the previous check>", for the thread, when this
    channel checked the domain before and something changed; else None.
    (The report of `job` is kept already.)"""
    previous = await history.previous(job.channel, job.domain, job.request_id)
    if previous is None:
        return None
    before = await history.report(previous.request_id)
    after = await history.report(job.request_id)
    if not before or not after:
        return None
    try:
        changes = diff_reports(before, after)
    except Exception:  # a report it cannot read must not fail the check
        log.exception("could not compare %s with %s", previous.request_id, job.request_id)
        return None
    if changes.empty:
        return None
    poster: Poster = ctx["poster"]
    link = await poster.link(job.channel, previous.parent_ts)
    since = blocks.link(link, blocks.when(previous.started_at))
    return reply(blocks.changes_message(changes, since))


class MailcheckWorker(Worker[Any]):
    """saq's Worker, with a shutdown that waits for running checks only.

    saq's own grace period waits for all its tasks, including the endless
    upkeep loops, so an idle worker would take the whole period to stop. Here
    SIGTERM stops taking jobs, gives running checks `grace` seconds, then
    cancels the rest, which saq queues again for another worker.
    """

    grace: float = 0.0

    async def stop(self) -> None:
        self.event.set()
        running = [c["task"] for c in self.job_task_contexts.values() if not c["task"].done()]
        if running:
            log.info("waiting up to %.0f s for %d running check(s)", self.grace, len(running))
            await asyncio.wait(running, timeout=self.grace)
        await super().stop()


def build_worker(settings: Settings, queue: Queue | None = None) -> MailcheckWorker:
    # saq types its context as a closed TypedDict; ours carries settings,
    # redis and poster too, hence Worker[Any].
    worker = MailcheckWorker(
        queue or make_queue(settings),
        functions=[("check_job", check_job), ("sendtest_job", sendtest_job)],
        concurrency=settings.worker_concurrency,
        startup=startup,
        shutdown=shutdown,
        after_process=after_process,
        timers=cast(PartialTimersDict, {"sweep": 3600}),  # ours runs instead, see _sweep
        dequeue_timeout=1.0,  # idle process loops notice a stop within a second
        shutdown_grace_period_s=0,  # MailcheckWorker.stop waits for checks itself
    )
    # On SIGTERM, in-flight checks get this long to finish; then they are
    # cancelled and saq queues them again for another worker.
    worker.grace = settings.timeout + 30
    return worker


def build_post_worker(settings: Settings, shared: dict[str, Any]) -> MailcheckWorker:
    """The worker of the post queue, inside a check worker's process: it
    shares that worker's settings, Redis and Slack client (`shared`)."""
    worker = MailcheckWorker(
        make_queue(settings, POST_QUEUE_NAME),
        functions=[("post_job", post_job)],
        concurrency=settings.post_concurrency,
        after_process=after_process,
        timers=cast(PartialTimersDict, {"sweep": 3600}),  # the check worker's sweeper does it
        dequeue_timeout=1.0,
        shutdown_grace_period_s=0,
    )
    worker.grace = 10.0  # a thread in the middle of posting: the rest goes to a retry
    # SIGTERM is the check worker's to handle (its shutdown stops this one);
    # saq's start would take the handlers over, and the process never stop.
    worker.SIGNALS = []
    worker.context.update(
        {key: shared[key] for key in ("settings", "redis", "poster", "exact_poster", "giving_up")}
    )
    worker.context["post_queue"] = worker.queue
    return worker


async def run_worker(settings: Settings) -> None:
    settings.require_slack()
    worker = build_worker(settings)
    worker.context["settings"] = settings
    await worker.start()
