"""App Home: how to use mailcheck (history and watches come with their issue)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.commands import USAGE
from bot.listeners.deps import Deps


def home_view() -> dict[str, Any]:
    return {
        "type": "home",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "mailcheck"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": USAGE[:2900]}},
        ],
    }


def register(app: AsyncApp, deps: Deps) -> None:
    @app.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") == "home":
            await client.views_publish(user_id=event["user"], view=home_view())
