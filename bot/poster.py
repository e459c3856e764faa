"""Posting to Slack exactly once, at a pace Slack accepts, from any worker.

Jobs run at least once (a worker can die mid-check and another retries the
job), so every post is recorded in Redis under the request's id: the parent
message's ts, and which thread parts are already up. A retry edits the parent
and posts only what is missing. One window remains: a worker killed after
Slack accepted a post but before Redis recorded it makes the retry post that
part again (Slack has no idempotency key; closing it needs the thread read
back with conversations.replies and a history scope). Slack allows about one message per second per
channel: a Redis key per channel paces every worker, and slack_sdk's
rate-limit handler waits out a 429's Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import Message
from bot.history import Run
from bot.settings import Settings

log = logging.getLogger(__name__)
RUN_TTL = 7 * 24 * 3600  # bookkeeping outlives any retry by far
PACE_MS = 1100


def slack_client(settings: Settings) -> AsyncWebClient:
    client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=5))
    return client


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


class Poster:
    def __init__(self, client: AsyncWebClient, redis: Redis) -> None:
        self.client = client
        self.redis = redis

    async def _pace(self, channel: str) -> None:
        """Wait for this channel's slot: at most one post per PACE_MS, across workers."""
        key = f"mailcheck:pace:{channel}"
        while not await self.redis.set(key, 1, px=PACE_MS, nx=True):
            left = await self.redis.pttl(key)
            await asyncio.sleep(max(left, 50) / 1000)

    async def post(self, channel: str, message: Message, thread_ts: str | None = None) -> str:
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
