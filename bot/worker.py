"""The worker: runs queued checks and posts them as a Slack thread.

For one job: post the parent message ("Checking example.com…"), reply in its
thread as each stage finishes, upload the transcripts, keep the report, then
edit the parent into a one-line verdict with a Re-run button. Every step is
recorded (bot.poster.RunState), so when a worker dies mid-check and saq hands
the job to another, the thread gets no duplicate: the parent is edited, done
parts are skipped. A job that gives up (no attempt left, past its deadline, a
bug) says so: its parent is edited into a failure verdict with a Re-run button.

    mailcheck worker       # SIGTERM: finish (or hand back) in-flight jobs, then exit
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job, Queue, Worker
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.types import PartialTimersDict
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import access, blocks
from bot.commands import describe_every
from bot.history import HistoryStore
from bot.poster import (
    FINAL_ERRORS,
    Poster,
    ReportFile,
    RunState,
    Thread,
    permalink,
    slack_client,
)
from bot.queue import (
    CheckJob,
    heartbeat,
    make_queue,
    raise_if_cancelled,
    redis_client,
)
from bot.sendjobs import sendtest_job
from bot.settings import Settings
from bot.watches import Watch, WatchStore, expiring_certificates, schedule, should_post
from checks import jsonreport
from checks.diff import diff_reports
from checks.model import CheckRequest, Finding, Report, Stage
from checks.policy.dmarc import organizational_domain
from checks.runner import CheckDone, ProbeFinished, dedupe, default_probes, plan, sort_findings
from checks.runner import run as run_check
from checks.runner import stream as run_stream

log = logging.getLogger(__name__)

# Of those, the ones that mean a watch there can never post again.
CHANNEL_GONE = {"not_in_channel", "channel_not_found", "is_archived"}
# Telling a thread its check gave up: tries (each with the client's own
# retries), then the whole act's deadline.
GIVE_UP_TRIES = 4
GIVE_UP_DEADLINE = 120.0


def rerun_value(job: CheckJob) -> str:
    value = {"d": job.domain, "s": job.stages, "a": job.account}
    if job.dkim_selectors:
        value["k"] = job.dkim_selectors
    if job.sender_ips:
        value["i"] = job.sender_ips
    return json.dumps(value, separators=(",", ":"))


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    ctx["redis"] = redis_client(settings.redis_url)
    await access.publish_accounts(ctx["redis"], settings.accounts)  # names and domains only
    ctx["poster"] = Poster(slack_client(settings), ctx["redis"])
    ctx["giving_up"] = set()
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
            for job in await sweep_once(ctx["worker"].queue, every):
                # Beside the sweeping: a slow Slack must not delay the next takeover.
                check = CheckJob.from_kwargs(job.kwargs or {})
                task = asyncio.create_task(give_up(ctx, check, swept_reason(job)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except Exception:  # a Redis hiccup must not end the sweeping
            log.exception("sweep failed")
        raise_if_cancelled()
        await asyncio.sleep(every)


async def sweep_once(queue: RedisQueue, every: int) -> list[Job]:
    """One sweep (if no worker swept in the last `every` seconds): each job
    without a heartbeat is queued again at once (bot.queue.MailcheckQueue),
    or aborted when it has no attempt left. Returns the checks aborted.
    (A job that is stuck but whose worker is alive gets saq's 5 s to see its abort.)"""
    swept = await queue.sweep(lock=every)
    found = [await queue.job(queue.job_key_from_id(job_id)) for job_id in swept]
    return [
        job
        for job in found
        if job is not None and job.function == "check_job" and job.status == Status.ABORTED
    ]


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
    if job is None or job.function != "check_job":
        return
    if job.status not in (Status.FAILED, Status.ABORTED):
        return  # done, or queued again for another attempt
    reason = failure_reason(ctx.get("exception"), job.attempts)
    await give_up(ctx, CheckJob.from_kwargs(job.kwargs or {}), reason)


async def give_up(ctx: dict[str, Any], job: CheckJob, reason: str) -> bool:
    """A check's last act when it will not be tried again: its parent edited
    into a failure verdict naming `reason`, with the Re-run button; if the
    parent cannot be edited, the same in its thread; if there is no parent
    yet, posted as one. Retried; True once shown."""
    try:
        return await asyncio.wait_for(_give_up(ctx, job, reason), GIVE_UP_DEADLINE)
    except Exception:
        log.exception("could not tell %s its check of %s failed", job.channel, job.domain)
        return False


async def _give_up(ctx: dict[str, Any], job: CheckJob, reason: str) -> bool:
    poster: Poster = ctx["poster"]
    state = RunState(ctx["redis"], job.request_id)
    for part in ("verdict", "done", "failed"):
        if await state.posted(part):
            return False  # its verdict is up (a later step failed), or it was told already
    parent = await state.get("parent_ts")
    if job.watch and not parent:
        log.warning("watch %s: the run of slot %d failed: %s", job.watch, job.slot, reason)
        return False  # a quiet run fails quietly; the next slot runs as usual
    message = blocks.failure_message(job.display, job.user, reason, rerun_value(job))
    log.warning("check of %s in %s failed: %s", job.domain, job.channel, reason)
    for attempt in range(GIVE_UP_TRIES):
        try:
            if not parent:
                parent = await poster.post(job.channel, message)
                await state.set("parent_ts", parent)
            elif attempt < GIVE_UP_TRIES // 2:
                await poster.update(job.channel, parent, message)
            else:  # the parent will not take the edit: say it in its thread
                await poster.post(job.channel, message, thread_ts=parent)
            await state.mark("failed")
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
    try:
        async with heartbeat(ctx, settings):
            return await _run(ctx, job, settings)
    except SlackApiError as exc:
        error = exc.response.get("error", "")
        if error in FINAL_ERRORS:
            log.warning("cannot post to %s: %s", job.channel, error)
            if job.watch and error in CHANNEL_GONE:
                await WatchStore(ctx["redis"]).remove(job.channel, job.domain)
                log.warning("watch %s ended: the channel is gone (%s)", job.watch, error)
            return {"error": error}
        raise


async def _run(ctx: dict[str, Any], job: CheckJob, settings: Settings) -> dict[str, Any]:
    if job.watch:
        return await _run_watch(ctx, job, settings)
    poster: Poster = ctx["poster"]
    state = RunState(ctx["redis"], job.request_id)
    parent = await state.get("parent_ts")
    if parent is None:
        parent = await poster.post(
            job.channel, blocks.pending_message(job.display, job.user, job.stages)
        )
        await state.set("parent_ts", parent)

    request = _request(job)
    planned = plan(default_probes(), request)
    pending = {p.name for p in planned}
    found: dict[Stage, list[Finding]] = {}
    order = list(Stage)
    report: Report | None = None
    outbox: asyncio.Queue[tuple[Stage, tuple[Finding, ...]] | None] = asyncio.Queue()
    thread = Thread(poster, state, job.channel, parent, settings.slack_max_replies)

    async def post_stages() -> None:
        # Posting waits on Slack's pace: it runs beside the check, not in its way.
        while (item := await outbox.get()) is not None:
            stage, findings = item
            partial = Report(request, datetime.now(UTC), 0.0, findings)
            await thread.stage(partial, stage)

    def complete(stage: Stage) -> bool:
        """No probe of this stage, or of an earlier one, is still running."""
        return not any(
            p.name in pending and order.index(p.stage) <= order.index(stage) for p in planned
        )

    posting = asyncio.create_task(post_stages())
    try:
        next_stage = 0
        async for event in run_stream(request, settings.engine_config()):
            if isinstance(event, ProbeFinished):
                pending.discard(event.timing.probe)
                for f in event.findings:
                    found.setdefault(f.stage, []).append(f)
                while next_stage < len(order) and complete(order[next_stage]):
                    stage = order[next_stage]
                    next_stage += 1
                    outbox.put_nowait((stage, tuple(sort_findings(dedupe(found.get(stage, []))))))
            elif isinstance(event, CheckDone):
                report = event.report
        assert report is not None
        for stage in order[next_stage:]:
            outbox.put_nowait((stage, tuple(f for f in report.findings if f.stage is stage)))
        outbox.put_nowait(None)
        await posting
    finally:
        posting.cancel()

    await thread.left_out(report, _report_file(job, settings))
    await _post_transcripts(poster, state, job, parent, report)

    history = HistoryStore(ctx["redis"], settings.retention_days)
    await history.keep(
        jsonreport.dumps(report),
        request_id=job.request_id,
        channel=job.channel,
        user=job.user,
        parent_ts=parent,
    )
    await poster.update(
        job.channel, parent, blocks.verdict_message(report, job.user, rerun_value(job))
    )
    await state.mark("verdict")
    await post_changes(poster, history, state, job, parent)
    return {"worst": report.worst.value, "parent_ts": parent}


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


def _report_file(job: CheckJob, settings: Settings) -> ReportFile:
    return ReportFile.of(
        settings, f"mailcheck-{job.domain}-report.txt", f"Full report: {job.display}"
    )


async def _post_transcripts(
    poster: Poster, state: RunState, job: CheckJob, parent: str, report: Report
) -> None:
    if await state.posted("transcripts"):
        return
    text = "\n".join(
        f"## {probe}\n" + "\n".join(lines) for probe, lines in report.transcripts.items() if lines
    )
    if text:
        await poster.upload(
            job.channel,
            parent,
            f"mailcheck-{job.domain}-transcripts.txt",
            f"Transcripts: {job.display}",
            text,
        )
    await state.mark("transcripts")


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
    report_json = jsonreport.dumps(report_dict)
    worst = blocks.report_verdict(report)[0].value
    expiring = expiring_certificates(report_dict)
    now = time.time()
    decided = await state.get("post")
    if decided is None:
        post, reason = should_post(watch, worst, expiring, now)
        decided = reason if post else ""
        await state.set("post", decided)
    parent = ""
    if decided:
        parent = await state.get("parent_ts") or ""
        if not parent:
            message = blocks.watch_message(
                report,
                watch.user,
                describe_every(watch.every),
                decided,
                watch.last_worst,
                expiring,
                rerun_value(job),
            )
            parent = await poster.post(job.channel, message)
            await state.set("parent_ts", parent)
        thread = Thread(poster, state, job.channel, parent, settings.slack_max_replies)
        for stage in Stage:
            await thread.stage(report, stage)
        await thread.left_out(report, _report_file(job, settings))
        await _post_transcripts(poster, state, job, parent, report)

    history = HistoryStore(redis, settings.retention_days)
    await history.keep(
        report_json,
        request_id=job.request_id,
        channel=job.channel,
        user=watch.user,
        parent_ts=parent,
        trigger="watch",
    )
    if decided:
        await post_changes(poster, history, state, job, parent)
    await watches.finished(watch, job.slot, job.request_id, worst, expiring, bool(decided), now)
    await state.mark("done")
    return {"worst": worst, "posted": decided, "slot": job.slot, "parent_ts": parent}


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


async def post_changes(
    poster: Poster, history: HistoryStore, state: RunState, job: CheckJob, parent: str
) -> bool:
    """Post "Changes since <the previous check>" in the thread when this
    channel checked the domain before and something changed. Once per request:
    a retried job does not post it again. True when it was posted now."""
    if await state.posted("diff"):
        return False
    posted = False
    previous = await history.previous(job.channel, job.domain, job.request_id)
    if previous is not None:
        before = await history.report(previous.request_id)
        after = await history.report(job.request_id)
        changes = None
        if before and after:
            try:
                changes = diff_reports(before, after)
            except Exception:  # a report it cannot read must not fail the check
                log.exception("could not compare %s with %s", previous.request_id, job.request_id)
        if changes is not None and not changes.empty:
            link = await permalink(poster.client, job.channel, previous.parent_ts)
            since = blocks.link(link, blocks.when(previous.started_at))
            await poster.post(job.channel, blocks.changes_message(changes, since), thread_ts=parent)
            posted = True
    await state.mark("diff")
    return posted


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


async def run_worker(settings: Settings) -> None:
    settings.require_slack()
    worker = build_worker(settings)
    worker.context["settings"] = settings
    await worker.start()
