"""/mailcheck and the Re-run button: validate, enqueue, ack (in that order,
well inside Slack's 3 seconds). Whatever goes wrong, the user gets an
ephemeral reply that says what, never silence."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.commands import USAGE, CheckCommand, HelpCommand, UsageError, parse
from bot.listeners.deps import Deps
from bot.queue import CheckJob, QueueUnavailable, enqueue_check
from checks.errors import InputError
from checks.names import normalize_domain, normalize_selector, normalize_sender_ip

log = logging.getLogger(__name__)
RATE_WINDOW = 3600


def register(app: AsyncApp, deps: Deps) -> None:
    @app.command("/mailcheck")
    async def mailcheck(ack: AsyncAck, command: dict[str, Any]) -> None:
        parsed = parse(command.get("text") or "")
        if isinstance(parsed, HelpCommand):
            await ack(text=USAGE)
            return
        if isinstance(parsed, UsageError):
            await ack(text=parsed.message)
            return
        assert isinstance(parsed, CheckCommand)
        job = CheckJob(
            channel=command["channel_id"],
            user=command["user_id"],
            domain=parsed.domain.ascii,
            display=parsed.domain.unicode,
            stages=tuple(sorted(s.value for s in parsed.stages)) if parsed.stages else None,
            account=parsed.account,
            dkim_selectors=parsed.dkim_selectors,
            sender_ips=parsed.sender_ips,
        )
        _queued, text = await submit(deps, job)
        await ack(text=text)

    @app.action("mailcheck_rerun")
    async def rerun(ack: AsyncAck, body: dict[str, Any]) -> None:
        try:
            value = json.loads(body["actions"][0]["value"])
            name = normalize_domain(value["d"])
            job = CheckJob(
                channel=body["channel"]["id"],
                user=body["user"]["id"],
                domain=name.ascii,
                display=name.unicode,
                stages=tuple(value["s"]) if value.get("s") else None,
                account=value.get("a"),
                dkim_selectors=tuple(normalize_selector(k) for k in value.get("k") or ()),
                sender_ips=tuple(normalize_sender_ip(i) for i in value.get("i") or ()),
            )
        except (KeyError, IndexError, TypeError, ValueError, InputError):
            await ack()
            log.warning("malformed Re-run payload ignored")
            return
        queued, text = await submit(deps, job)
        await ack()
        if not queued and body.get("response_url"):  # tell the clicker why not
            await _respond(body["response_url"], text)


async def submit(deps: Deps, job: CheckJob) -> tuple[bool, str]:
    """Authorize, rate-limit and enqueue: (queued, what to tell the user)."""
    settings = deps.settings
    if settings.allowed_channels and job.channel not in settings.allowed_channels:
        return False, ":no_entry: mailcheck is not enabled in this channel."
    if settings.allowed_users and job.user not in settings.allowed_users:
        return False, ":no_entry: You are not on the list of mailcheck users; ask your admin."
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


async def _over(deps: Deps, what: str, limit: int) -> bool:
    if limit <= 0:
        return False
    window = int(time.time()) // RATE_WINDOW
    key = f"mailcheck:rate:{what}:{window}"
    async with deps.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, RATE_WINDOW * 2)
        count, _ = await pipe.execute()
    return int(count) > limit


async def _respond(url: str, text: str) -> None:
    from slack_sdk.webhook.async_client import AsyncWebhookClient

    await AsyncWebhookClient(url).send(text=text, response_type="ephemeral")
