"""A Redis database of the lab's server for one test module's use: emptied
before each test and after it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis


@contextlib.asynccontextmanager
async def empty_db(url: str, db: int) -> AsyncIterator[Redis]:
    """A client of database `db` on the server of `url`, emptied around its use."""
    client = Redis.from_url(f"{url.rsplit('/', 1)[0]}/{db}")
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()
