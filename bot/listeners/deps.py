"""What the listeners share: created once at start-up, injected."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from saq import Queue

from bot.settings import Settings


@dataclass(frozen=True)
class Deps:
    settings: Settings
    queue: Queue
    redis: Redis
