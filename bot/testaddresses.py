"""Send tests in Redis: the tokens handed out, and the one message each may receive.

A send test is a unique address `st-<token>@<MAILCHECK_SENDTEST_DOMAIN>` that
lives `MAILCHECK_SENDTEST_TTL` seconds. The receiver (bot/receiver.py) takes
one message for a live token and stores it here; whoever waits for it (a
worker's judge job, or `mailcheck sendtest` in a terminal) judges it and then
`finish()`es the test, which deletes the message. Nothing is kept longer than
the token's lifetime plus a grace period, judged or not.

Exactly one outcome per test: the receiver accepting the message and the
deadline passing race for the same `outcome` key (SET NX), so a message that
arrives as the deadline passes is either judged or refused, never both
reported and timed out.

Keys (all expire):
  mailcheck:sendtest:test:<token>     the test (JSON); its TTL is the token's life
  mailcheck:sendtest:outcome:<token>  "arrived" or "timeout", whichever came first
  mailcheck:sendtest:message:<token>  the Received (JSON) until judged
  mailcheck:sendtest:arrived:<token>  a list pushed on arrival, for waiters (BLPOP)
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from checks.engine.sendtest import Received, token_address

PREFIX = "mailcheck:sendtest:"
GRACE = 600  # seconds a message or an outcome outlives its token, for the judge
TOKEN_BYTES = 8  # 64 random bits: not guessable within a token's life

Notify = Literal["job", "wait"]  # a worker's judge job, or a waiting terminal


@dataclass(frozen=True)
class SendTest:
    token: str
    domain: str  # the domain under test (A-labels)
    display: str
    address: str  # where to send the test message
    created_at: float
    expires_at: float
    notify: Notify = "wait"
    # Slack: where the verdict goes.
    channel: str = ""
    user: str = ""
    thread_ts: str = ""
    request_id: str = ""
    account: str | None = None

    @property
    def key(self) -> str:
        return f"{PREFIX}test:{self.token}"

    def left(self, now: float | None = None) -> float:
        return max(0.0, self.expires_at - (time.time() if now is None else now))


def _key(kind: str, token: str) -> str:
    return f"{PREFIX}{kind}:{token}"


class SendTests:
    def __init__(self, redis: Redis, receive_domain: str, ttl: int) -> None:
        self.redis = redis
        self.receive_domain = receive_domain
        self.ttl = ttl

    async def create(self, domain: str, display: str, **more: Any) -> SendTest:
        """A new test with a fresh token, live for `ttl` seconds from now."""
        token = secrets.token_hex(TOKEN_BYTES)
        now = time.time()
        test = SendTest(
            token=token,
            domain=domain,
            display=display,
            address=token_address(token, self.receive_domain),
            created_at=now,
            expires_at=now + self.ttl,
            **more,
        )
        await self.redis.set(test.key, json.dumps(asdict(test)), ex=self.ttl)
        return test

    async def update(self, test: SendTest) -> None:
        """Store changed fields (the Slack thread) for the rest of the test's life."""
        left = int(test.left()) or 1
        await self.redis.set(test.key, json.dumps(asdict(test)), ex=left + GRACE)

    async def get(self, token: str) -> SendTest | None:
        raw = await self.redis.get(_key("test", token))
        return SendTest(**json.loads(raw)) if raw else None

    async def live(self, token: str) -> SendTest | None:
        """The test if its address still takes a message (in time, none taken yet)."""
        test = await self.get(token)
        if test is None or test.left() <= 0:
            return None
        if await self.redis.exists(_key("outcome", token)):
            return None
        return test

    async def deliver(self, received: Received) -> SendTest | None:
        """Keep the message of a live test and wake its waiters; the test, or
        None when it expired, timed out or already has its message."""
        token = received.token
        test = await self.live(token)
        if test is None:
            return None
        keep = int(test.left()) + GRACE
        if not await self.redis.set(_key("outcome", token), "arrived", nx=True, ex=keep):
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_key("message", token), json.dumps(received.to_json()), ex=keep)
            pipe.rpush(_key("arrived", token), "1")
            pipe.expire(_key("arrived", token), keep)
            await pipe.execute()
        return test

    async def time_out(self, token: str) -> bool:
        """Claim the test's outcome for the deadline; False when a message came first."""
        return bool(await self.redis.set(_key("outcome", token), "timeout", nx=True, ex=GRACE))

    async def message(self, token: str) -> Received | None:
        raw = await self.redis.get(_key("message", token))
        return Received.from_json(json.loads(raw)) if raw else None

    async def wait(self, token: str, timeout: float) -> Received | None:
        """The test's message, waiting up to `timeout` seconds for it to arrive."""
        found = await self.message(token)
        if found is not None or timeout <= 0:
            return found
        await self.redis.blpop([_key("arrived", token)], timeout=max(1, round(timeout)))
        return await self.message(token)

    async def finish(self, token: str) -> None:
        """The test is judged (or timed out): delete its message and its token."""
        await self.redis.delete(_key("message", token), _key("arrived", token), _key("test", token))
