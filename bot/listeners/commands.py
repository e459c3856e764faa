"""/mailcheck and the Re-run button: parse, hand the command to bot.actions,
ack with its answer (well inside Slack's 3 seconds). Whatever goes wrong, the
user gets an ephemeral reply that says what, never silence."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.actions import answer_history, answer_sendtest, answer_watch, submit
from bot.grammar import (
    USAGE,
    CheckCommand,
    DiffCommand,
    HelpCommand,
    HistoryCommand,
    SendTestCommand,
    UnwatchCommand,
    UsageError,
    WatchCommand,
    WatchesCommand,
    parse,
)
from bot.listeners.deps import Deps
from bot.queue import CheckJob
from checks.core.errors import InputError

log = logging.getLogger(__name__)


def register(app: AsyncApp, deps: Deps) -> None:
    @app.command("/mailcheck")
    async def mailcheck(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        parsed = parse(command.get("text") or "")
        if isinstance(parsed, HelpCommand):
            await ack(text=USAGE)
            return
        if isinstance(parsed, UsageError):
            await ack(text=parsed.message)
            return
        if isinstance(parsed, HistoryCommand | DiffCommand):
            await ack(text=await answer_history(deps, client, command, parsed))
            return
        if isinstance(parsed, WatchCommand | UnwatchCommand | WatchesCommand):
            await ack(text=await answer_watch(deps, command, parsed))
            return
        if isinstance(parsed, SendTestCommand):
            await ack(text=await answer_sendtest(deps, command, parsed))
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
            job = CheckJob.from_rerun(
                body["actions"][0]["value"], body["channel"]["id"], body["user"]["id"]
            )
        except (KeyError, IndexError, TypeError, ValueError, InputError):
            await ack()
            log.warning("malformed Re-run payload ignored")
            return
        queued, text = await submit(deps, job)
        await ack()
        if not queued and body.get("response_url"):  # tell the clicker why not
            await _respond(body["response_url"], text)


async def _respond(url: str, text: str) -> None:
    from slack_sdk.webhook.async_client import AsyncWebhookClient

    await AsyncWebhookClient(url).send(text=text, response_type="ephemeral")
