"""The Slack front end: a Bolt AsyncApp that validates, enqueues and acks.

    mailcheck bot     # Socket Mode by default; MAILCHECK_SLACK_MODE=http for HTTP

It never runs a check itself: workers do (bot/worker.py), so a slow domain
can never make Slack's 3-second acknowledgement late.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from redis.asyncio import Redis
from saq import Queue
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import listeners
from bot.listeners.deps import Deps
from bot.poster import slack_client
from bot.queue import make_queue, redis_client
from bot.settings import Settings
from checks.core.errors import InputError

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

log = logging.getLogger(__name__)
SOCKET_CONNECT_TIMEOUT = 60.0  # apps.connections.open and the WebSocket, retries included
SOCKET_CLOSE_TIMEOUT = 10.0


def build_app(
    settings: Settings, queue: Queue, redis: Redis, client: AsyncWebClient | None = None
) -> AsyncApp:
    http = settings.slack_mode == "http"
    if http and not settings.slack_signing_secret:
        raise InputError("SLACK_SIGNING_SECRET is required in HTTP mode")
    app = AsyncApp(
        client=client or slack_client(settings),
        signing_secret=settings.slack_signing_secret if http else None,
        # Socket Mode traffic is authenticated by the app token instead.
        request_verification_enabled=http,
        logger=log,
    )
    listeners.register(app, Deps(settings, queue, redis))
    return app


async def serve_http(app: AsyncApp, settings: Settings) -> web.AppRunner:
    """Start the HTTP endpoint (POST /slack/events); the caller keeps the runner."""
    runner = web.AppRunner(app.web_app(path="/slack/events", port=settings.http_port))
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    return runner


async def serve_socket(
    app: AsyncApp, settings: Settings, timeout: float = SOCKET_CONNECT_TIMEOUT
) -> AsyncSocketModeHandler:
    """Open the Socket Mode link; the caller closes the handler (close_async).

    The link is asked of app.client, so apps.connections.open goes to
    SLACK_API_URL like every other call, with the app token."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    handler = AsyncSocketModeHandler(app, settings.slack_app_token, web_client=app.client)
    try:
        # The SDK retries a failed connect for ever, a wrong token included:
        # give up and say so, and the service manager starts the bot again.
        await asyncio.wait_for(handler.connect_async(), timeout)  # type: ignore[no-untyped-call]
    except TimeoutError:
        await asyncio.wait_for(handler.close_async(), SOCKET_CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
        raise InputError(
            f"no Socket Mode link to Slack within {timeout:g} s: check SLACK_APP_TOKEN "
            "(xapp-..., scope connections:write) and SLACK_API_URL; the log has Slack's answer"
        ) from None
    except BaseException:
        await asyncio.wait_for(handler.close_async(), SOCKET_CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
        raise
    return handler


async def run_bot(settings: Settings) -> None:
    settings.require_slack()
    if settings.slack_mode == "socket" and not settings.slack_app_token:
        raise InputError("SLACK_APP_TOKEN (xapp-...) is required in Socket Mode")
    redis = redis_client(settings.redis_url)
    queue = make_queue(settings)
    app = build_app(settings, queue, redis)
    try:
        if settings.slack_mode == "http":
            runner = await serve_http(app, settings)
            log.info(
                "listening on http://%s:%d/slack/events", settings.http_host, settings.http_port
            )
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()
        else:
            handler = await serve_socket(app, settings)
            log.info("connected to Slack in Socket Mode")
            try:
                await asyncio.Event().wait()
            finally:
                # Else the link stays open, its tasks still pinging, after the bot stopped.
                await asyncio.wait_for(handler.close_async(), SOCKET_CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
    finally:
        await queue.disconnect()
        await redis.aclose()
