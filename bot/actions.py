"""What each /mailcheck command does, once the listener has parsed it:
submit a check (the channel's and user's limits, the account's owner, the
hourly rates, the queue), answer `history` and `diff` from the channel's
stored reports, manage watches, start a send test. Each returns the text of
the ephemeral reply. The listeners (bot/listeners/) only parse, ack and call
these, so they hold no rule of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot import access, blocks
from bot.grammar import (
    DiffCommand,
    HistoryCommand,
    SendTestCommand,
    UnwatchCommand,
    WatchCommand,
    WatchesCommand,
    describe_every,
)
from bot.history import HistoryStore
from bot.listeners.deps import Deps
from bot.poster import permalinks
from bot.queue import ENQUEUE_TIMEOUT, CheckJob, QueueUnavailable, enqueue_check, enqueue_sendtest
from bot.watches import NotYours, TooManyWatches, Watch, WatchStore
from checks.core.names import DomainName
from checks.report.diff import diff_reports

log = logging.getLogger(__name__)

HISTORY_RUNS = 10


READ_TIMEOUT = 2.0  # history and diff answer in the ack: Slack wants it within 3 s


LINK_TIMEOUT = 0.8  # the permalinks are a nicety: without them, times without links


def _refusal(deps: Deps, channel: str, user: str) -> str | None:
    return access.refusal(deps.settings, channel, user)


async def answer_history(
    deps: Deps,
    client: AsyncWebClient,
    command: dict[str, Any],
    parsed: HistoryCommand | DiffCommand,
) -> str:
    """The reply to `/mailcheck history|diff DOMAIN`: this channel's runs only."""
    channel, user = command["channel_id"], command["user_id"]
    refused = _refusal(deps, channel, user)
    if refused:
        return refused
    store = HistoryStore(deps.redis, deps.settings.retention_days)
    try:
        if isinstance(parsed, HistoryCommand):
            return await asyncio.wait_for(
                _history(store, client, channel, parsed.domain), READ_TIMEOUT
            )
        return await asyncio.wait_for(_diff(store, client, channel, parsed.domain), READ_TIMEOUT)
    except (TimeoutError, OSError, RedisError) as exc:
        log.warning("history unavailable: %s", exc or type(exc).__name__)
        return ":warning: The history is unavailable right now; please try again in a minute."


async def answer_watch(
    deps: Deps, command: dict[str, Any], parsed: WatchCommand | UnwatchCommand | WatchesCommand
) -> str:
    """The reply to `/mailcheck watch|unwatch|watches`, for this channel."""
    channel, user = command["channel_id"], command["user_id"]
    refused = _refusal(deps, channel, user)
    if refused:
        return refused
    store = WatchStore(deps.redis)
    try:
        return await asyncio.wait_for(_watch(deps, store, channel, user, parsed), READ_TIMEOUT)
    except (TimeoutError, OSError, RedisError) as exc:
        log.warning("watches unavailable: %s", exc or type(exc).__name__)
        return ":warning: Watches are unavailable right now; please try again in a minute."


async def _watch(
    deps: Deps,
    store: WatchStore,
    channel: str,
    user: str,
    parsed: WatchCommand | UnwatchCommand | WatchesCommand,
) -> str:
    settings = deps.settings
    if isinstance(parsed, WatchesCommand):
        return blocks.watches_text(await store.channel_watches(channel), describe_every)
    shown = blocks.code_span(parsed.domain.unicode, 300)
    admin = user in settings.admin_users
    if isinstance(parsed, UnwatchCommand):
        try:
            removed = await store.remove(channel, parsed.domain.ascii, by=user, admin=admin)
        except NotYours as exc:
            return _not_yours(shown, exc.watch)
        if removed is None:
            return f"{shown} is not watched in this channel; `/mailcheck watches` lists what is."
        return f"Stopped watching {shown} in this channel."
    if parsed.every < settings.watch_min_interval:
        return (
            f"`every=` must be at least {describe_every(settings.watch_min_interval)} "
            f"here, not {describe_every(parsed.every)}."
        )
    current = await store.get(f"{channel}:{parsed.domain.ascii}")
    if current is not None and not access.may_manage(settings, current.user, user):
        return _not_yours(shown, current)  # said before the rate limits count anything
    # Setting a watch runs its first check at once: it counts as a check of
    # the user's (a watch-unwatch loop is no way around the limit); the
    # domain's limit is only looked at here, as every run counts it (bot.worker).
    if await access.over(deps.redis, f"user:{user}", settings.user_rate):
        return (
            f":hourglass: You have run {settings.user_rate} checks in the last hour; "
            "try again later."
        )
    if await access.over(
        deps.redis, f"domain:{parsed.domain.ascii}", settings.domain_rate, count=False
    ):
        return (
            f":hourglass: {blocks.escape(parsed.domain.unicode)} was checked "
            f"{settings.domain_rate} times in the last hour; try again later (be kind to its "
            "servers)."
        )
    watch = Watch(
        channel=channel,
        domain=parsed.domain.ascii,
        display=parsed.domain.unicode,
        every=parsed.every,
        user=user,
        created_at=time.time(),
        stages=tuple(sorted(s.value for s in parsed.stages)) if parsed.stages else None,
    )
    try:
        old = await store.put(watch, settings.max_watches, admin=admin)
    except NotYours as exc:  # set by someone else since we looked
        return _not_yours(shown, exc.watch)
    except TooManyWatches:
        return (
            f"This channel has {settings.max_watches} watches, the most allowed; "
            "`/mailcheck unwatch` one first (`/mailcheck watches` lists them)."
        )
    every = describe_every(watch.every)
    was = f" (was every {describe_every(old.every)})" if old and old.every != watch.every else ""
    stages = f", stages {blocks.code_span(', '.join(watch.stages), 200)}" if watch.stages else ""
    return (
        f":eyes: Watching {shown} every {every}{was}{stages} in this channel. The first check "
        "runs now; after that, a message here only when its verdict changes or a certificate "
        f"is about to expire. `/mailcheck unwatch {blocks.escape(watch.domain)}` stops it."
    )


def _not_yours(shown: str, watch: Watch) -> str:
    return (
        f":no_entry: {shown} is watched here by {blocks.mention(watch.user)}: only they or a "
        "mailcheck admin can stop or change it."
    )


async def _history(
    store: HistoryStore, client: AsyncWebClient, channel: str, domain: DomainName
) -> str:
    runs = await store.runs(channel, domain.ascii, limit=HISTORY_RUNS)
    links = await permalinks(client, runs, LINK_TIMEOUT)
    return blocks.history_text(domain.unicode, runs, links)


async def _diff(
    store: HistoryStore, client: AsyncWebClient, channel: str, domain: DomainName
) -> str:
    shown = blocks.code_span(domain.unicode, 300)
    runs = await store.checks(channel, domain.ascii, limit=2)  # send tests are not diffed
    if len(runs) < 2:
        have = "No check" if not runs else "Only one check"
        return (
            f"{have} of {shown} in this channel so far: a diff needs two. "
            f"Run `/mailcheck {blocks.escape(domain.ascii)}` to check it again."
        )
    newer, older = runs
    after, before = await store.report(newer.request_id), await store.report(older.request_id)
    if before is None or after is None:
        return f"The report of one of the last two checks of {shown} has expired."
    try:
        changes = diff_reports(before, after)
    except Exception:  # a stored report it cannot read: say so, not nothing
        log.exception("could not compare %s with %s", older.request_id, newer.request_id)
        return f"The last two checks of {shown} could not be compared."
    links = await permalinks(client, runs, LINK_TIMEOUT)
    return blocks.diff_text(domain.unicode, older, newer, links, changes)


async def submit(deps: Deps, job: CheckJob) -> tuple[bool, str]:
    """Authorize, rate-limit and enqueue: (queued, what to tell the user)."""
    settings = deps.settings
    refused = _refusal(deps, job.channel, job.user) or await access.account_refusal(
        settings, deps.redis, job.account, job.domain
    )
    if refused:
        return False, refused
    try:
        if await _over(deps, f"user:{job.user}", settings.user_rate):
            return False, (
                f":hourglass: You have run {settings.user_rate} checks in the last hour; "
                "try again later."
            )
        if await _over(deps, f"domain:{job.domain}", settings.domain_rate):
            return False, (
                f":hourglass: {job.display} was checked {settings.domain_rate} times in the "
                "last hour; try again later (be kind to its servers)."
            )
        queued = await enqueue_check(deps.queue, job, settings)
    except (QueueUnavailable, RedisError, OSError, TimeoutError) as exc:
        log.warning("queue unavailable: %s", exc)
        return (
            False,
            ":warning: The check queue is unavailable right now; please try again in a minute.",
        )
    if not queued:
        return False, (
            f":arrows_counterclockwise: A check of {job.display} with these options is "
            "already queued or running in this channel; its report will appear here."
        )
    return True, f"Queued a check of {job.display}."


async def answer_sendtest(deps: Deps, command: dict[str, Any], parsed: SendTestCommand) -> str:
    """Queue a send test's start; the worker posts the address in the channel."""
    settings = deps.settings
    channel, user = command["channel_id"], command["user_id"]
    refused = _refusal(deps, channel, user)
    if refused:
        return refused
    if not settings.sendtest_domain:
        return (
            ":no_entry: Send tests are not set up here: the operator sets "
            "MAILCHECK_SENDTEST_DOMAIN and runs `mailcheck receiver` (see the README)."
        )
    refused = await access.account_refusal(
        settings, deps.redis, parsed.account, parsed.domain.ascii
    )
    if refused:
        return refused
    shown = parsed.domain.unicode
    try:
        if await _over(deps, f"user:{user}", settings.user_rate):
            return f":hourglass: You have run {settings.user_rate} checks in the last hour."
        request_id = uuid.uuid4().hex
        await asyncio.wait_for(
            enqueue_sendtest(
                deps.queue,
                "start",
                f"sendtest:start:{request_id}",
                settings,
                channel=channel,
                user=user,
                domain=parsed.domain.ascii,
                display=shown,
                request_id=request_id,
                account=parsed.account,
            ),
            ENQUEUE_TIMEOUT,
        )
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("queue unavailable: %s", exc)
        return ":warning: The check queue is unavailable right now; please try again in a minute."
    return f"Starting a send test of {shown}: the address to send to appears in this channel."


async def _over(deps: Deps, what: str, limit: int) -> bool:
    return await access.over(deps.redis, what, limit)
