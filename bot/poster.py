"""Posting to Slack at a pace Slack accepts, from any worker.

Slack allows about one message per second per channel: a Redis key per
channel paces every worker, and slack_sdk's rate-limit handler waits out a
429's Retry-After. RunState records what a request has posted. A check's
thread goes through bot.outbox, which makes each write exactly once (message
metadata, read back after a crash); the send tests' threads use Thread
below, whose one window is a worker killed between Slack's answer and
Redis's record (that part is posted again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks, terminal
from bot.blocks import Message
from bot.history import Run
from bot.settings import Settings
from checks.core.model import Report, Severity, Stage

log = logging.getLogger(__name__)
RUN_TTL = 7 * 24 * 3600  # bookkeeping outlives any retry by far
PACE_MS = 1100
# Retries of one Slack call that failed on Slack's side or on the way there:
# after 0.5, 1 and 2 s (plus up to 1 s of jitter each), about 4-7 s in all.
SLACK_RETRIES = 3


class ServerErrorRetryHandler(AsyncServerErrorRetryHandler):
    """Any 5xx: slack_sdk's handler retries only 500 and 503, and a proxy's
    502 or 504 in front of Slack passes just the same."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code >= 500


def slack_client(settings: Settings, *, blind_retries: bool = True) -> AsyncWebClient:
    """A Web API client that waits out 429s and, with `blind_retries`,
    retries 5xx answers and lost connections. A write retried blindly may
    be posted twice (Slack may have taken it before failing): bot.outbox
    uses a client without them and retries itself, reading back first."""
    client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    # slack_sdk retries only what this list names (by default: one lost
    # connection). Without the 5xx handler, two 500s failed a job's every attempt.
    handlers: list[AsyncRetryHandler] = [AsyncRateLimitErrorRetryHandler(max_retry_count=5)]
    if blind_retries:
        handlers += [
            AsyncConnectionErrorRetryHandler(max_retry_count=SLACK_RETRIES),
            ServerErrorRetryHandler(max_retry_count=SLACK_RETRIES),
        ]
    client.retry_handlers = handlers
    return client


def transient(exc: BaseException) -> bool:
    """A Slack call that failed on Slack's side (5xx) or on the way there:
    worth trying again, once it is known whether Slack took it."""
    if isinstance(exc, SlackApiError):
        return int(exc.response.status_code) >= 500
    return isinstance(exc, SlackClientError | aiohttp.ClientError | OSError | TimeoutError)


# Slack errors that no retry will fix: tell the user, and end the job.
FINAL_ERRORS = {
    "not_in_channel",
    "channel_not_found",
    "is_archived",
    "invalid_auth",
    "account_inactive",
    "missing_scope",
}


class RunState:
    """What one request has already posted (Redis hash + set, expiring)."""

    def __init__(self, redis: Redis, request_id: str) -> None:
        self.redis = redis
        self.key = f"mailcheck:run:{request_id}"
        self.parts_key = f"{self.key}:posted"
        self.left_out_key = f"{self.key}:left_out"

    async def get(self, field: str) -> str | None:
        value = await self.redis.hget(self.key, field)
        return value.decode() if isinstance(value, bytes) else value

    async def set(self, field: str, value: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, field, value)
            pipe.expire(self.key, RUN_TTL)
            await pipe.execute()

    async def posted(self, part: str) -> bool:
        return bool(await self.redis.sismember(self.parts_key, part))

    async def mark(self, part: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self.parts_key, part)
            pipe.expire(self.parts_key, RUN_TTL)
            await pipe.execute()

    # A report's thread replies are counted, so that a long one stops at
    # MAILCHECK_SLACK_MAX_REPLIES and a retry neither posts a page twice nor
    # counts a left-out finding twice.

    async def replies(self) -> int:
        """Thread replies of findings posted so far."""
        return int(await self.get("replies") or 0)

    async def page_posted(self, part: str, pages: int) -> None:
        """One more reply of `part` is up: `pages` of its pages in all."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, part, pages)
            pipe.hincrby(self.key, "replies", 1)
            pipe.expire(self.key, RUN_TTL)
            await pipe.execute()

    async def finish(self, part: str, left_out: Mapping[str, int]) -> None:
        """`part` is done; `left_out` counts what it did not show, per
        "severity code" (added once, with the mark, in one transaction)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for field, count in left_out.items():
                pipe.hincrby(self.left_out_key, field, count)
            pipe.expire(self.left_out_key, RUN_TTL)
            pipe.sadd(self.parts_key, part)
            pipe.expire(self.parts_key, RUN_TTL)
            await pipe.execute()

    async def left_out(self) -> dict[str, int]:
        """What the thread did not show: "severity code" -> count."""
        found = await self.redis.hgetall(self.left_out_key)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in found.items()}


class Poster:
    """Slack writes, paced per channel."""

    def __init__(self, client: AsyncWebClient, redis: Redis) -> None:
        self.client = client
        self.redis = redis
        self._team_url: str | None = None  # the workspace's address (auth.test), once

    async def link(self, channel: str, ts: str) -> str | None:
        """The permalink of a top-level message, built as Slack builds it
        from the workspace's address (asked once per process, not once per
        message); None when there is no message or no address."""
        if not ts:
            return None
        if self._team_url is None:
            try:
                url = (await self.client.auth_test()).get("url")
            except (SlackApiError, SlackClientError, aiohttp.ClientError, OSError, TimeoutError):
                log.info("no workspace address: links to earlier threads are left out")
                return None
            valid = isinstance(url, str) and url.startswith("https://")
            self._team_url = str(url).rstrip("/") if valid else ""
        if not self._team_url:
            return None
        return f"{self._team_url}/archives/{channel}/p{ts.replace('.', '')}"

    async def _pace(self, channel: str) -> None:
        """Wait for this channel's slot: at most one post per PACE_MS, across workers."""
        key = f"mailcheck:pace:{channel}"
        while not await self.redis.set(key, 1, px=PACE_MS, nx=True):
            left = await self.redis.pttl(key)
            await asyncio.sleep(max(left, 50) / 1000)

    async def post(
        self,
        channel: str,
        message: Message,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        await self._pace(channel)
        kwargs: dict[str, Any] = {
            "channel": channel,
            "text": message.text,
            "blocks": message.blocks,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        if metadata:
            kwargs["metadata"] = metadata
        response = await self.client.chat_postMessage(**kwargs)
        return str(response["ts"])

    async def update(self, channel: str, ts: str, message: Message) -> None:
        await self._pace(channel)
        await self.client.chat_update(
            channel=channel, ts=ts, text=message.text, blocks=message.blocks
        )

    async def upload(
        self, channel: str, thread_ts: str, filename: str, title: str, content: str
    ) -> None:
        await self._pace(channel)
        await self.client.files_upload_v2(
            channel=channel, thread_ts=thread_ts, filename=filename, title=title, content=content
        )


@dataclass(frozen=True)
class ReportFile:
    """How a report too long for its thread is attached in full."""

    filename: str
    title: str
    resolver: str  # as the report's head names it

    @classmethod
    def of(cls, settings: Settings, filename: str, title: str) -> ReportFile:
        resolver = ", ".join(str(ns) for ns in settings.resolvers) or "system resolver"
        return cls(filename, title, resolver)


class Thread:
    """One report's thread replies, at most `max_replies` of them (the last
    kept for `left_out`): stage by stage, each page once, a retry going on
    from the page it stopped at; what does not fit is counted per code."""

    def __init__(
        self, poster: Poster, state: RunState, channel: str, ts: str, max_replies: int
    ) -> None:
        self.poster = poster
        self.state = state
        self.channel = channel
        self.ts = ts
        self.max_replies = max_replies

    async def stage(self, report: Report, stage: Stage) -> None:
        """The replies of one stage (none when it found nothing), once per request."""
        part = f"stage:{stage.value}"
        if not any(f.stage is stage for f in report.findings) or await self.state.posted(part):
            return
        pages = blocks.stage_pages(report, stage)
        shown = int(await self.state.get(part) or 0)
        while shown < len(pages) and await self.state.replies() < self.max_replies - 1:
            await self.poster.post(self.channel, pages[shown].message, thread_ts=self.ts)
            shown += 1
            await self.state.page_posted(part, shown)
        left = Counter(f"{f.severity.value} {f.code}" for p in pages[shown:] for f in p.findings)
        await self.state.finish(part, left)

    async def left_out(self, report: Report, file: ReportFile) -> None:
        """When the thread could not show every finding: a last reply counting
        those it left out per code, the worst first, and the full report as a file."""
        left: dict[tuple[Severity, str], int] = {}
        for key, count in (await self.state.left_out()).items():
            severity, _, code = key.partition(" ")
            left[(Severity(severity), code)] = count
        if not left:
            return
        if not await self.state.posted("left_out"):
            message = blocks.left_out_message(left, self.max_replies)
            await self.poster.post(self.channel, message, thread_ts=self.ts)
            await self.state.mark("left_out")
        if not await self.state.posted("report_file"):
            text = await asyncio.to_thread(terminal.plain_text, report, resolver=file.resolver)
            await self.poster.upload(self.channel, self.ts, file.filename, file.title, text)
            await self.state.mark("report_file")


async def permalink(client: AsyncWebClient, channel: str, ts: str) -> str | None:
    """The link to a message, or None when Slack does not give one."""
    if not ts:
        return None
    try:
        response = await client.chat_getPermalink(channel=channel, message_ts=ts)
    except SlackApiError as exc:
        log.info("no permalink for %s/%s: %s", channel, ts, exc.response.get("error"))
        return None
    link = response.get("permalink")
    return link if isinstance(link, str) else None


async def permalinks(
    client: AsyncWebClient, runs: Sequence[Run], timeout: float
) -> dict[str, str | None]:
    """request_id -> the link to its run's thread, all asked at once; those
    not answered within `timeout` are None (a time without a link)."""
    tasks = [asyncio.ensure_future(permalink(client, r.channel, r.parent_ts)) for r in runs]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    links: dict[str, str | None] = {}
    for run, task in zip(runs, tasks, strict=True):
        if task.done() and not task.cancelled() and task.exception() is None:
            links[run.request_id] = task.result()
        else:
            task.cancel()
            links[run.request_id] = None
    return links
