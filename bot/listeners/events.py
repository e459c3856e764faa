"""App Home: the user's recent checks and the watches they set, and how to use mailcheck.

History is scoped to the channel it was made in, so the Home tab shows only
what happened in channels the user is a member of right now, as Slack's
`users.conversations` tells (for a bot token, a private channel is listed
only when the bot is in it too). When Slack will not tell, nothing of any
channel is shown: the tab fails closed, with a note of the scopes it needs.

`home_view` builds the view from data alone; `register` fetches the data.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.grammar import USAGE, describe_every
from bot.history import HistoryStore, Run
from bot.listeners.deps import Deps
from bot.poster import permalinks
from bot.watches import Watch, WatchStore

log = logging.getLogger(__name__)

HOME_RUNS = 15  # recent checks shown
HOME_WATCHES = 50  # watches shown; the rest are counted
HOME_CHANNELS = 50  # channels whose history is read
MAX_BLOCKS = 100  # Slack's limit for a Home tab
MEMBER_TYPES = "public_channel,private_channel,mpim,im"
MEMBER_PAGE = 200
MEMBER_PAGES = 10
MEMBER_TIMEOUT = 5.0  # listing the user's channels, every page
READ_TIMEOUT = 3.0  # reading the history and the watches from Redis
LINK_TIMEOUT = 1.0  # the permalinks are a nicety: without them, times without links

SCOPE_HINT = (
    ":lock: Your recent checks and watches are not shown: listing the channels you are in "
    "needs the `channels:read`, `groups:read`, `im:read` and `mpim:read` scopes. "
    "Ask an admin to add them to the app and reinstall it."
)
MEMBERS_UNAVAILABLE = (
    ":warning: Your recent checks and watches are not shown: Slack did not say which "
    "channels you are in. Open this tab again in a minute."
)
HISTORY_UNAVAILABLE = (
    ":warning: Your recent checks and watches are not shown: history unavailable right now. "
    "Open this tab again in a minute."
)

_CHANNEL_ID = re.compile("[CGD][A-Z0-9]{2,31}")


# --- the view, from data ---------------------------------------------------------------


def home_view(
    runs: Sequence[Run] = (),
    watches: Sequence[Watch] = (),
    links: Mapping[str, str | None] | None = None,
    notice: str | None = None,
) -> dict[str, Any]:
    """The Home tab: `runs` (newest first, at most HOME_RUNS shown, each linked
    to its thread by `links`: request_id -> permalink), `watches`, then the
    usage. `notice` (our own mrkdwn) replaces both lists when given: it says
    why they are not shown. Within Slack's limits whatever the data."""
    links = links or {}
    parts: list[Block] = [HeaderBlock(text=PlainTextObject(text="mailcheck"))]
    if notice is not None:
        parts.append(_section(notice))
    else:
        parts.append(HeaderBlock(text=PlainTextObject(text="Your recent checks")))
        parts += blocks.sections(_run_lines(runs, links) or [_NO_RUNS])
        parts.append(HeaderBlock(text=PlainTextObject(text="Watches you set")))
        parts += blocks.sections(_watch_lines(watches) or [_NO_WATCHES])
    usage = blocks.sections(USAGE.splitlines())
    kept = parts[: MAX_BLOCKS - len(usage) - 1]
    if len(kept) < len(parts):
        kept.append(_context("_More not shown._"))
    return {"type": "home", "blocks": [b.to_dict() for b in [*kept, *usage]]}


_NO_RUNS = (
    "_No checks of yours in the channels you are in yet._ "
    "Type `/mailcheck example.com` in a channel to run one."
)
_NO_WATCHES = (
    "_No watches of yours in the channels you are in._ "
    "`/mailcheck watch example.com every=6h` in a channel sets one."
)


def _run_lines(runs: Sequence[Run], links: Mapping[str, str | None]) -> list[str]:
    return [
        f"• {blocks.link(links.get(run.request_id), blocks.when(run.started_at))} · "
        f"{channel_mention(run.channel)} · {blocks.code_span(run.display, 300)} · "
        f"{blocks.run_verdict(run.worst, run.counts)}"
        for run in runs[:HOME_RUNS]
    ]


def _watch_lines(watches: Sequence[Watch]) -> list[str]:
    lines = [
        f"• {channel_mention(w.channel)} · {blocks.watch_line(w, describe_every)}"
        for w in watches[:HOME_WATCHES]
    ]
    if len(watches) > HOME_WATCHES:
        lines.append(f"_{len(watches) - HOME_WATCHES} more not shown_")
    return lines


def channel_mention(channel: str) -> str:
    """`<#C123>` for a channel id; anything else in a code span."""
    if _CHANNEL_ID.fullmatch(channel):
        return f"<#{channel}>"
    return blocks.code_span(channel, 40) or "a channel"


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text, verbatim=True))


def _context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=text, verbatim=True)])


def newest_first(runs: Sequence[Run], limit: int = HOME_RUNS) -> list[Run]:
    """`runs` of several channels merged, newest first, at most `limit`."""

    def started(run: Run) -> float:
        try:
            return run.timestamp
        except ValueError:
            return float("-inf")

    return sorted(runs, key=started, reverse=True)[:limit]


# --- the data, from Slack and Redis ----------------------------------------------------


class MembershipUnknown(Exception):
    """Slack did not say which channels the user is in; `notice` says why."""

    def __init__(self, notice: str) -> None:
        super().__init__(notice)
        self.notice = notice


async def member_channels(client: AsyncWebClient, user: str) -> set[str]:
    """The channels `user` is a member of now (at most MEMBER_PAGES pages).
    Raises MembershipUnknown when Slack does not answer that."""
    try:
        return await asyncio.wait_for(_list_memberships(client, user), MEMBER_TIMEOUT)
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        log.warning("users.conversations failed: %s", error)
        if error == "ratelimited":
            raise MembershipUnknown(MEMBERS_UNAVAILABLE) from None
        raise MembershipUnknown(SCOPE_HINT) from None
    except (TimeoutError, OSError) as exc:
        log.warning("users.conversations unavailable: %s", exc or type(exc).__name__)
        raise MembershipUnknown(MEMBERS_UNAVAILABLE) from None


async def _list_memberships(client: AsyncWebClient, user: str) -> set[str]:
    channels: set[str] = set()
    cursor: str | None = None
    for _ in range(MEMBER_PAGES):
        response = await client.users_conversations(
            user=user,
            types=MEMBER_TYPES,
            exclude_archived=True,
            limit=MEMBER_PAGE,
            cursor=cursor,
        )
        for channel in response.get("channels") or []:
            if isinstance(channel, dict) and isinstance(channel.get("id"), str):
                channels.add(channel["id"])
        metadata = response.get("response_metadata") or {}
        cursor = metadata.get("next_cursor") if isinstance(metadata, dict) else None
        if not cursor or not isinstance(cursor, str):
            break
    return channels


async def user_home_data(deps: Deps, user: str, members: set[str]) -> tuple[list[Run], list[Watch]]:
    """The user's recent runs and watches, only in the channels of `members`."""
    history = HistoryStore(deps.redis, deps.settings.retention_days)
    places = [c for c in await history.user_channels(user, HOME_CHANNELS) if c in members]
    per_channel = await asyncio.gather(*(history.user_runs(c, user, HOME_RUNS) for c in places))
    runs = [r for found in per_channel for r in found if r.channel in members and r.user == user]
    watches = [w for w in await WatchStore(deps.redis).user_watches(user) if w.channel in members]
    return newest_first(runs), watches


async def build_home(deps: Deps, client: AsyncWebClient, user: str) -> dict[str, Any]:
    """The Home tab of `user`, failing closed when their channels are unknown."""
    try:
        members = await member_channels(client, user)
    except MembershipUnknown as exc:
        return home_view(notice=exc.notice)
    try:
        runs, watches = await asyncio.wait_for(user_home_data(deps, user, members), READ_TIMEOUT)
    except (TimeoutError, OSError, RedisError) as exc:
        log.warning("history unavailable for the Home tab: %s", exc or type(exc).__name__)
        return home_view(notice=HISTORY_UNAVAILABLE)
    return home_view(runs, watches, await permalinks(client, runs, LINK_TIMEOUT))


def register(app: AsyncApp, deps: Deps) -> None:
    @app.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        user = event.get("user")
        if event.get("tab", "home") != "home" or not isinstance(user, str):
            return
        try:
            view = await build_home(deps, client, user)
        except Exception:  # the tab still shows how to use mailcheck
            log.exception("could not build the Home tab")
            view = home_view(notice=HISTORY_UNAVAILABLE)
        try:
            await client.views_publish(user_id=user, view=view)
        except Exception as exc:
            log.warning("views.publish failed: %s", exc)
