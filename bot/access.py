"""Who may use mailcheck, and how often: the allow-lists and hourly limits
that every way in goes through (slash commands, the Re-run button, and
watches both when they are set and each time they run), so that none of them
is a way around the others.

    mailcheck:rate:<user:U…|domain:example.com>:<hour>   counter, expires after two hours
    mailcheck:accounts   hash: test account name -> JSON list of its own domains

Test accounts' passwords live on the workers only; each worker publishes the
names and domains of its accounts (never a secret) at start-up, so the bot
can refuse an account for a domain that is not its own before anything is
queued. The engine refuses again on the worker (`auth.account.refused`).
"""

from __future__ import annotations

import json
import time

from redis.asyncio import Redis

from bot import blocks
from bot.settings import Settings
from checks.core.accounts import Accounts
from checks.core.errors import InputError
from checks.core.names import normalize_domain

ACCOUNTS_KEY = "mailcheck:accounts"

RATE_WINDOW = 3600  # the limits count per clock hour


def refusal(settings: Settings, channel: str, user: str) -> str | None:
    """Why `user` may not use mailcheck in `channel` (None: they may)."""
    if settings.allowed_channels and channel not in settings.allowed_channels:
        return ":no_entry: mailcheck is not enabled in this channel."
    if settings.allowed_users and user not in settings.allowed_users:
        return ":no_entry: You are not on the list of mailcheck users; ask your admin."
    return None


def may_manage(settings: Settings, owner: str, user: str) -> bool:
    """Whether `user` may stop or replace a watch `owner` set: its setter, or
    an admin (MAILCHECK_ADMIN_USERS)."""
    return user == owner or user in settings.admin_users


async def over(redis: Redis, what: str, limit: int, *, count: bool = True) -> bool:
    """Whether `what` ("user:U…", "domain:example.com") is over `limit` this
    hour, counting this use unless `count` is False (a look, not a use).
    A limit of 0 means none."""
    if limit <= 0:
        return False
    key = f"mailcheck:rate:{what}:{int(time.time()) // RATE_WINDOW}"
    if not count:
        return int(await redis.get(key) or 0) >= limit
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, RATE_WINDOW * 2)
        used, _ = await pipe.execute()
    return int(used) > limit


async def publish_accounts(redis: Redis, accounts: Accounts) -> None:
    """Replace the directory of test accounts with these: names and own domains."""
    directory = {name: json.dumps(list(a.own_domains)) for name, a in accounts.items()}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(ACCOUNTS_KEY)
        if directory:
            pipe.hset(ACCOUNTS_KEY, mapping=directory)  # type: ignore[arg-type]
        await pipe.execute()


async def account_refusal(
    settings: Settings, redis: Redis, account: str | None, domain: str
) -> str | None:
    """Why the test account may not be used for a check of `domain` (None: it
    may, or none is named): unknown, or `domain` is not one of its own, whose
    servers would otherwise get its password. The bot's own accounts decide
    when it has any, else the directory the workers published."""
    if not account:
        return None
    name = account.lower()
    if len(settings.accounts):
        known = settings.accounts.get(name).own_domains if name in settings.accounts else None
    else:
        raw = await redis.hget(ACCOUNTS_KEY, name)
        known = tuple(json.loads(raw)) if raw else None
    if known is None:
        return f":no_entry: There is no test account named {blocks.code_span(name, 40)}."
    try:
        if normalize_domain(domain).ascii in known:
            return None
    except InputError:
        pass
    return (
        f":no_entry: Test account {blocks.code_span(name, 40)} may be used only for its own "
        f"domains ({blocks.escape(', '.join(known))}), not for {blocks.code_span(domain, 260)}: "
        "its password would go to that "
        "domain's servers. If the domain is yours too, the operator lists it in the "
        "account's `domains`."
    )
