"""The history of finished checks, per channel, in Redis.

Every finished run is recorded as a Run (who asked, when, the verdict, the
thread it was posted in) and indexed by time:

    mailcheck:history:run:<request_id>                  the Run, JSON
    mailcheck:history:domain:<channel>:<domain>         sorted set of request ids, by start time
    mailcheck:history:channel:<channel>                 the same, every domain
    mailcheck:history:user:<channel>:<user>             the same, one requester
    mailcheck:history:userchannels:<user>               channels that user asked in, by last time

The report itself stays where the worker stores it, `mailcheck:report:<id>`.
Everything is kept `retention_days`: index entries older than that are
trimmed on every write, and every key expires that long after it was last
written. Listing is always for one channel: a channel's history never shows
another channel's checks (the user index is per channel too), so there is
no way to list across channels at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

PREFIX = "mailcheck:history:"
REPORT_PREFIX = "mailcheck:report:"
MAX_LIMIT = 100


@dataclass(frozen=True)
class Run:
    request_id: str
    domain: str  # A-labels
    display: str  # U-labels
    channel: str
    user: str
    started_at: str  # ISO 8601, with offset
    worst: str  # Severity value
    counts: dict[str, int] = field(default_factory=dict)  # Severity value -> findings
    parent_ts: str = ""  # the thread's parent message
    stages: tuple[str, ...] | None = None  # None: every stage
    trigger: str = ""  # "": someone asked; "watch": a watch's run (user: its setter); "sendtest"

    @property
    def asked(self) -> bool:
        """Someone asked for it (a check or a send test), not a watch's schedule."""
        return self.trigger != "watch"

    @property
    def sendtest(self) -> bool:
        """A send test's verdict: compared only with other send tests."""
        return self.trigger == "sendtest"

    @property
    def timestamp(self) -> float:
        return datetime.fromisoformat(self.started_at).timestamp()

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Run:
        data = json.loads(text)
        stages = data.get("stages")
        return cls(
            request_id=str(data["request_id"]),
            domain=str(data["domain"]),
            display=str(data.get("display") or data["domain"]),
            channel=str(data["channel"]),
            user=str(data["user"]),
            started_at=str(data["started_at"]),
            worst=str(data["worst"]),
            counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
            parent_ts=str(data.get("parent_ts") or ""),
            stages=tuple(stages) if stages is not None else None,
            trigger=str(data.get("trigger") or ""),
        )

    @classmethod
    def from_report(
        cls,
        report: dict[str, Any],
        *,
        request_id: str,
        channel: str,
        user: str,
        parent_ts: str,
        trigger: str = "",
    ) -> Run:
        """The Run of a report in its JSON form (checks/report/jsonreport.py)."""
        stages = report.get("stages")
        return cls(
            request_id=request_id,
            domain=str(report["domain"]),
            display=str(report.get("domain_display") or report["domain"]),
            channel=channel,
            user=user,
            started_at=str(report["started_at"]),
            worst=str(report["worst"]),
            counts={str(k): int(v) for k, v in (report.get("counts") or {}).items()},
            parent_ts=parent_ts,
            stages=tuple(stages) if stages is not None else None,
            trigger=trigger,
        )


class HistoryStore:
    def __init__(self, redis: Redis, retention_days: int) -> None:
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, not {retention_days}")
        self.redis = redis
        self.retention = retention_days * 24 * 3600  # seconds

    # -- keys ------------------------------------------------------------------

    @staticmethod
    def _run_key(request_id: str) -> str:
        return f"{PREFIX}run:{request_id}"

    @staticmethod
    def _domain_key(channel: str, domain: str) -> str:
        return f"{PREFIX}domain:{channel}:{domain}"

    @staticmethod
    def _channel_key(channel: str) -> str:
        return f"{PREFIX}channel:{channel}"

    @staticmethod
    def _user_key(channel: str, user: str) -> str:
        return f"{PREFIX}user:{channel}:{user}"

    @staticmethod
    def _user_channels_key(user: str) -> str:
        return f"{PREFIX}userchannels:{user}"

    def _oldest(self) -> float:
        return time.time() - self.retention

    # -- writing ---------------------------------------------------------------

    async def record(self, run: Run) -> None:
        """Keep `run` and index it; recording the same request again replaces it."""
        score = run.timestamp
        oldest = self._oldest()
        indexes = [self._domain_key(run.channel, run.domain), self._channel_key(run.channel)]
        if run.asked:  # a user's checks are those they asked for, not their watches'
            indexes.append(self._user_key(run.channel, run.user))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._run_key(run.request_id), run.to_json(), ex=self.retention)
            for key in indexes:
                pipe.zadd(key, {run.request_id: score})
                pipe.zremrangebyscore(key, "-inf", f"({oldest}")
                pipe.expire(key, self.retention)
            if run.asked:
                places = self._user_channels_key(run.user)
                pipe.zadd(places, {run.channel: score}, gt=True)  # GT still adds new ones
                pipe.zremrangebyscore(places, "-inf", f"({oldest}")
                pipe.expire(places, self.retention)
            await pipe.execute()

    async def set_parent(self, request_id: str, parent_ts: str) -> None:
        """Fill in the thread's parent of a kept run (posted after it was kept)."""
        key = self._run_key(request_id)
        text = await self.redis.get(key)
        if text is None:
            return  # not kept yet: keeping it will record the parent
        run = Run.from_json(text)
        if run.parent_ts != parent_ts:
            await self.redis.set(key, replace(run, parent_ts=parent_ts).to_json(), keepttl=True)

    # -- reading ---------------------------------------------------------------

    async def runs(self, channel: str, domain: str, limit: int = 10) -> list[Run]:
        """The last `limit` runs of `domain` (A-labels) in `channel`, newest first."""
        return await self._list(self._domain_key(channel, domain), limit)

    async def channel_runs(self, channel: str, limit: int = 10) -> list[Run]:
        """The last `limit` runs of any domain in `channel`, newest first."""
        return await self._list(self._channel_key(channel), limit)

    async def user_runs(self, channel: str, user: str, limit: int = 10) -> list[Run]:
        """The last `limit` runs `user` asked for in `channel`, newest first."""
        return await self._list(self._user_key(channel, user), limit)

    async def user_channels(self, user: str, limit: int = 50) -> list[str]:
        """The channels `user` asked for checks in, most recent first. Only
        for the App Home, which shows those the user is still a member of."""
        names = await self.redis.zrevrangebyscore(
            self._user_channels_key(user), "+inf", self._oldest(), start=0, num=limit
        )
        return [_text(n) for n in names]

    async def keep(
        self,
        report_json: str,
        *,
        request_id: str,
        channel: str,
        user: str,
        parent_ts: str = "",
        trigger: str = "",
    ) -> Run:
        """Store a finished report (its JSON text) and record its run."""
        await self.redis.set(REPORT_PREFIX + request_id, report_json, ex=self.retention)
        run = Run.from_report(
            json.loads(report_json),
            request_id=request_id,
            channel=channel,
            user=user,
            parent_ts=parent_ts,
            trigger=trigger,
        )
        await self.record(run)
        return run

    async def previous(self, channel: str, domain: str, before_request_id: str) -> Run | None:
        """The run of `domain` in `channel` just before `before_request_id`, of
        the same kind (a check's before a check, a send test's before a send
        test); None when that one is the first, or is not in this channel's history."""
        key = self._domain_key(channel, domain)
        rank = await self.redis.zrevrank(key, before_request_id)
        if not isinstance(rank, int):  # None: not in this channel's history
            return None
        this = await self._load([before_request_id])
        kind = this[0].sendtest if this else False
        ids = await self.redis.zrevrangebyscore(
            key, "+inf", self._oldest(), start=rank + 1, num=MAX_LIMIT
        )
        return next((run for run in await self._load(ids) if run.sendtest == kind), None)

    async def checks(self, channel: str, domain: str, limit: int) -> list[Run]:
        """The last `limit` checks of `domain` in `channel` (no send tests), newest first."""
        runs = await self.runs(channel, domain, limit=MAX_LIMIT)
        return [run for run in runs if not run.sendtest][:limit]

    async def report(self, request_id: str) -> dict[str, Any] | None:
        """The stored JSON report of `request_id` (None once expired)."""
        text = await self.redis.get(f"{REPORT_PREFIX}{request_id}")
        if text is None:
            return None
        try:
            loaded = json.loads(text)
        except ValueError:
            return None
        return loaded if isinstance(loaded, dict) else None

    async def _list(self, key: str, limit: int) -> list[Run]:
        limit = max(0, min(limit, MAX_LIMIT))
        if not limit:
            return []
        # A few more than asked: an entry whose run has expired is skipped.
        ids = await self.redis.zrevrangebyscore(
            key, "+inf", self._oldest(), start=0, num=limit + 10
        )
        return (await self._load(ids))[:limit]

    async def _load(self, ids: list[Any]) -> list[Run]:
        if not ids:
            return []
        texts = await self.redis.mget([self._run_key(_text(i)) for i in ids])
        runs = []
        for text in texts:
            if text is None:
                continue
            try:
                runs.append(Run.from_json(text))
            except (ValueError, KeyError, TypeError):
                continue
        return runs


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
