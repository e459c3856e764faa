"""Bolt listeners, one module per kind; each has `register(app, deps)`."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.listeners import commands, events
from bot.listeners.deps import Deps


def register(app: AsyncApp, deps: Deps) -> None:
    commands.register(app, deps)
    events.register(app, deps)
