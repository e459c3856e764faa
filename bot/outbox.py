"""A request's Slack writes: queued in Redis by its check, delivered once each.

The check job decides what its thread shows and adds each write to the
request's outbox under a role ("parent", "report:1", "stage:dns:1",
"verdict", "changes", ...). The role is the write's idempotency key: adding
a role again (a retried job) keeps the first. A post job (bot.worker), on a
queue of its own so that Slack's pace never holds a check slot, delivers the
outbox in order until its "end".

Exactly once: before a write, its role is marked in flight; after, its
result is recorded. Every message carries its request id and role in Slack
message metadata (a file, its unique name), so a post job that finds a role
in flight (its last attempt died between Slack's answer and Redis's record)
first reads the thread back (conversations.replies, or conversations.history
for the parent) and writes only what is not there. Edits are idempotent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import Message
from bot.poster import RUN_TTL, Poster, RunState, transient

log = logging.getLogger(__name__)

METADATA_TYPE = "mailcheck_post"
END = "end"
# How far back a parent is looked for in the channel: it was posted after
# its write was marked in flight (the mark's time, minus clock skew).
SKEW = 60.0
READ_LIMIT = 200  # messages per conversations.* page
READ_PAGES = 10  # a thread or channel read back at most this far
# Tries of one write that failed on Slack's side or on the way (after 0.5,
# 1, 2 s), each after reading back whether Slack took it after all.
WRITE_TRIES = 4

# Adds the given roles (ARGV: ttl, then role, entry pairs) that are not there
# yet, in order, and rings the bell once if any was new. Returns how many.
_ADD = """
local added = 0
for i = 2, #ARGV, 2 do
    if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
        redis.call('RPUSH', KEYS[1], ARGV[i])
        added = added + 1
    end
end
for _, key in ipairs({KEYS[1], KEYS[2]}) do redis.call('EXPIRE', key, ARGV[1]) end
if added > 0 then
    redis.call('RPUSH', KEYS[3], 1)
    redis.call('EXPIRE', KEYS[3], ARGV[1])
end
return added
"""


@dataclass(frozen=True)
class Write:
    """One Slack write. kind: "parent" (the thread's top message), "reply"
    (in the thread), "edit" (the parent edited), "parent_or_edit" (the
    parent edited, or posted if it never was), "upload" (a file in the
    thread), "end" (nothing more will come)."""

    kind: str
    message: Message | None = None
    filename: str = ""
    title: str = ""
    content: str = ""

    def to_json(self) -> str:
        data: dict[str, Any] = {"kind": self.kind}
        if self.message is not None:
            data["message"] = {"text": self.message.text, "blocks": self.message.blocks}
        if self.kind == "upload":
            data.update(filename=self.filename, title=self.title, content=self.content)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Write:
        data = json.loads(text)
        message = data.get("message")
        return cls(
            kind=data["kind"],
            message=Message(message["text"], message["blocks"]) if message else None,
            filename=data.get("filename", ""),
            title=data.get("title", ""),
            content=data.get("content", ""),
        )


def reply(message: Message) -> Write:
    return Write("reply", message)


class Outbox:
    """The ordered writes of one request (a Redis list of roles, a hash of writes)."""

    def __init__(self, redis: Redis, request_id: str) -> None:
        self.redis = redis
        self.key = f"mailcheck:out:{request_id}"
        self.writes_key = f"{self.key}:writes"
        self.bell_key = f"{self.key}:bell"
        self._script: Any = None

    async def add(self, writes: Sequence[tuple[str, Write]]) -> int:
        """Add the writes whose roles are new, in order, in one transaction."""
        if not writes:
            return 0
        if self._script is None:
            self._script = self.redis.register_script(_ADD)
        args: list[Any] = [RUN_TTL]
        for role, write in writes:
            args += [role, write.to_json()]
        added = await self._script(keys=[self.key, self.writes_key, self.bell_key], args=args)
        return int(added)

    async def roles(self, start: int = 0) -> list[str]:
        found = await self.redis.lrange(self.key, start, -1)
        return [r.decode() if isinstance(r, bytes) else r for r in found]

    async def has(self, role: str) -> bool:
        return bool(await self.redis.hexists(self.writes_key, role))

    async def write(self, role: str) -> Write:
        text = await self.redis.hget(self.writes_key, role)
        if text is None:
            raise KeyError(role)
        return Write.from_json(text)

    async def wait(self) -> None:
        """Until something is added, or a second (under any client's socket timeout)."""
        await self.redis.blpop([self.bell_key], timeout=1)


class Delivery:
    """A post job's delivery of one outbox: each write once, in order."""

    def __init__(self, poster: Poster, redis: Redis, request_id: str, channel: str) -> None:
        self.poster = poster
        self.state = RunState(redis, request_id)
        self.outbox = Outbox(redis, request_id)
        self.request_id = request_id
        self.channel = channel
        # Told the parent's ts once it is up (the run's history records it).
        self.on_parent: Callable[[str], Awaitable[None]] | None = None

    async def run(self, deadline: float) -> bool:
        """Deliver until the outbox's end (True), or until `deadline`
        (time.monotonic(); False: the rest is left for a retry)."""
        done = 0
        while time.monotonic() < deadline:
            for role in await self.outbox.roles(done):
                if role == END:
                    return True
                await self.deliver(role, await self.outbox.write(role))
                done += 1
            await self.outbox.wait()
        return False

    async def deliver(self, role: str, write: Write) -> None:
        if await self.state.get(f"ts:{role}") is not None:
            return
        parent = await self.state.get("parent_ts")
        kind = write.kind
        if kind == "parent_or_edit":
            kind = "edit" if parent else "parent"
        if kind == "parent" and parent:  # posted as another role (a failure shown early)
            await self._done(role, parent)
            return
        if kind in ("reply", "upload", "edit") and not parent:
            raise RuntimeError(f"{role}: no parent message to write under")
        if kind != "edit" and await self.state.get(f"inflight:{role}"):
            found = await self._find(role, kind, write, parent)
            if found is not None:
                log.info("%s %s: in Slack already (%s)", self.request_id, role, found)
                await self._done(role, found, parent=kind == "parent")
                return
        await self.state.set(f"inflight:{role}", str(time.time()))
        for attempt in range(WRITE_TRIES):
            try:
                ts = await self._write(role, kind, write, parent)
                break
            except Exception as exc:
                if not transient(exc) or attempt == WRITE_TRIES - 1:
                    raise
                log.info("%s %s: %r; trying again", self.request_id, role, exc)
            await asyncio.sleep(0.5 * 2**attempt)
            if kind != "edit" and (found := await self._find(role, kind, write, parent)):
                ts = found  # Slack took it before failing
                break
        await self._done(role, ts, parent=kind == "parent")

    async def _write(self, role: str, kind: str, write: Write, parent: str | None) -> str:
        meta = self.metadata(role)
        if kind == "parent":
            assert write.message is not None
            return await self.poster.post(self.channel, write.message, metadata=meta)
        assert parent is not None
        if kind == "reply":
            assert write.message is not None
            return await self.poster.post(
                self.channel, write.message, thread_ts=parent, metadata=meta
            )
        if kind == "edit":  # the parent keeps the metadata it was posted with
            assert write.message is not None
            await self.poster.update(self.channel, parent, write.message)
            return parent
        if kind == "upload":
            await self.poster.upload(
                self.channel, parent, write.filename, write.title, write.content
            )
            return parent
        raise ValueError(f"unknown write kind {kind!r}")

    async def _done(self, role: str, ts: str, *, parent: bool = False) -> None:
        async with self.state.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.state.key, f"ts:{role}", ts)
            if parent:
                pipe.hset(self.state.key, "parent_ts", ts)
            pipe.hdel(self.state.key, f"inflight:{role}")
            pipe.expire(self.state.key, RUN_TTL)
            await pipe.execute()
        if parent and self.on_parent is not None:
            await self.on_parent(ts)

    def metadata(self, role: str) -> dict[str, Any]:
        return {
            "event_type": METADATA_TYPE,
            "event_payload": {"request": self.request_id, "role": role},
        }

    async def _find(self, role: str, kind: str, write: Write, parent: str | None) -> str | None:
        """The ts of this role's message if Slack already has it (its write
        was marked in flight and never recorded)."""
        try:
            return await self._read_back(role, kind, write, parent)
        except SlackApiError as exc:
            if transient(exc):
                raise
            # No history scope, say, or a channel it may post to but not read:
            # better a message twice than a thread that stops here.
            error = exc.response.get("error")
            log.warning("%s %s: cannot read the thread back (%s)", self.request_id, role, error)
            return None

    async def _read_back(
        self, role: str, kind: str, write: Write, parent: str | None
    ) -> str | None:
        client = self.poster.client
        if kind == "parent":
            since = float(await self.state.get(f"inflight:{role}") or 0) - SKEW
            messages = _read(client, "conversations_history", self.channel, oldest=f"{since:.6f}")
            async for message in messages:
                if self._is(message, role):
                    return str(message["ts"])
            return None
        async for message in _read(client, "conversations_replies", self.channel, ts=parent):
            if kind == "upload":
                names = {f.get("name") for f in message.get("files") or () if isinstance(f, dict)}
                if write.filename in names:
                    return str(message["ts"])
            elif self._is(message, role) and message.get("ts") != parent:
                return str(message["ts"])
        return None

    def _is(self, message: dict[str, Any], role: str) -> bool:
        meta = message.get("metadata")
        if not isinstance(meta, dict) or meta.get("event_type") != METADATA_TYPE:
            return False
        payload = meta.get("event_payload")
        return (
            isinstance(payload, dict)
            and payload.get("request") == self.request_id
            and payload.get("role") == role
        )


async def _read(client: AsyncWebClient, method: str, channel: str, **kwargs: Any) -> Any:
    """The messages of a conversations.history/replies read, page by page (bounded)."""
    cursor = None
    for _ in range(READ_PAGES):
        args: dict[str, Any] = {
            "channel": channel,
            "limit": READ_LIMIT,
            "include_all_metadata": True,
            **kwargs,
        }
        if cursor:
            args["cursor"] = cursor
        response = await getattr(client, method)(**args)
        for message in response.get("messages") or ():
            if isinstance(message, dict):
                yield message
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return
