"""The App Home tab end to end: a signed app_home_opened event to the Bolt app,
the user's history and watches read from real Redis, their channels from the
Slack stand-in's users.conversations, and the view it publishes. A channel
the user is not in (a private one) never shows, nor do other people's checks.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.history import HistoryStore, Run
from bot.listeners.events import (
    HISTORY_UNAVAILABLE,
    MAX_BLOCKS,
    MEMBER_PAGES,
    SCOPE_HINT,
    home_view,
)
from bot.settings import Settings
from bot.watches import Watch, WatchStore
from tests.integration.test_bot_e2e import (  # noqa: F401 - fixtures, used by name
    USER,
    _ports,
    all_strings,
    bot,
    post,
    settings,
    signed,
    slack,
)
from tests.integration.test_history_e2e import _app
from tests.support.slackapi import SlackAPIStandIn

pytestmark = pytest.mark.lab

C_PUBLIC, C_PRIVATE = "C0PUBLIC", "C0PRIVATE"
OTHER_USER = "U0OTHER"
PARENT_TS = "1700000000.000500"


def ago(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def run(request_id: str, domain: str, channel: str, minutes_ago: int, user: str = USER) -> Run:
    return Run(
        request_id=request_id,
        domain=domain,
        display=domain,
        channel=channel,
        user=user,
        started_at=ago(minutes_ago),
        worst="warning",
        counts={"warning": 1},
        parent_ts=PARENT_TS if request_id == "r-new" else "",
    )


def watch(domain: str, channel: str) -> Watch:
    return Watch(
        channel=channel,
        domain=domain,
        display=domain,
        every=6 * 3600,
        user=USER,
        created_at=time.time() - 60,
    )


async def remember(config: Settings) -> None:
    """U's checks in the public and the private channel, another user's, and U's watches."""
    redis = Redis.from_url(config.redis_url)
    try:
        history = HistoryStore(redis, config.retention_days)
        await history.record(run("r-old", "old-public.test", C_PUBLIC, 30))
        await history.record(run("r-new", "new-public.test", C_PUBLIC, 5))
        await history.record(run("r-secret", "secret-private.test", C_PRIVATE, 1))
        await history.record(run("r-other", "someone-else.test", C_PUBLIC, 2, user=OTHER_USER))
        watches = WatchStore(redis)
        await watches.put(watch("watched-public.test", C_PUBLIC), limit=20)
        await watches.put(watch("watched-private.test", C_PRIVATE), limit=20)
    finally:
        await redis.aclose()


async def open_home(config: Settings, api: SlackAPIStandIn, event_id: str) -> dict[str, Any]:
    """Send U's app_home_opened; the view published for U."""
    event = {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": USER, "channel": "D1", "tab": "home"},
    }
    body = json.dumps(event)
    status, _ = await post(config, body, {**signed(body), "Content-Type": "application/json"})
    assert status == 200
    before = len(api.calls_to("views.publish"))
    publish = (await api.wait_for("views.publish", before + 1, timeout=10))[-1]
    assert publish.ok and publish.params["user_id"] == USER
    view = publish.params["view"]
    assert isinstance(view, dict)
    return view


def text_of(view: dict[str, Any]) -> str:
    return "\n".join(all_strings(view))


async def test_home_shows_only_the_channels_the_user_is_in(
    bot: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
) -> None:
    await remember(bot)
    slack.memberships[USER] = [C_PUBLIC, "C0ELSEWHERE"]
    view = await open_home(bot, slack, "Ev1")
    text = text_of(view)

    assert "new-public.test" in text and "old-public.test" in text
    assert text.index("new-public.test") < text.index("old-public.test")  # newest first
    assert f"<#{C_PUBLIC}>" in text
    assert "watched-public.test" in text and "every 6h" in text
    for hidden in ("secret-private.test", "watched-private.test", C_PRIVATE):
        assert hidden not in text
    assert "someone-else.test" not in text
    link = f"https://example.slack.com/archives/{C_PUBLIC}/p{PARENT_TS.replace('.', '')}"
    assert f"<{link}|" in text  # the newest run links to its thread
    assert "/mailcheck" in text  # the usage is still there

    (listing,) = slack.calls_to("users.conversations")
    assert listing.params["user"] == USER
    assert listing.params["types"] == "public_channel,private_channel,mpim,im"
    assert str(listing.params["exclude_archived"]).lower() in ("true", "1")
    (permalink,) = slack.calls_to("chat.getPermalink")
    assert (permalink.params["channel"], permalink.params["message_ts"]) == (C_PUBLIC, PARENT_TS)


async def test_home_fails_closed_when_channels_cannot_be_listed(
    bot: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
) -> None:
    await remember(bot)
    slack.memberships[USER] = [C_PUBLIC, C_PRIVATE]
    slack.fail("users.conversations", error="missing_scope")
    view = await open_home(bot, slack, "Ev2")
    text = text_of(view)

    for domain in ("public.test", "private.test", "someone-else.test"):
        assert domain not in text
    assert C_PUBLIC not in text and C_PRIVATE not in text
    assert SCOPE_HINT in text
    assert "channels:read" in text and "groups:read" in text
    assert "/mailcheck" in text
    assert slack.calls_to("chat.getPermalink") == []


async def test_home_follows_the_cursor_over_pages(
    bot: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
) -> None:
    await remember(bot)
    slack.conversations_page_size = 25
    slack.memberships[USER] = [f"C0FILL{i:03d}" for i in range(60)] + [C_PUBLIC]
    view = await open_home(bot, slack, "Ev3")
    text = text_of(view)

    assert "new-public.test" in text and "watched-public.test" in text  # on the third page
    assert "secret-private.test" not in text
    pages = slack.calls_to("users.conversations")
    assert len(pages) == 3
    assert "cursor" not in pages[0].params or not pages[0].params["cursor"]
    assert [p.params["cursor"] for p in pages[1:]] == [
        p.response["response_metadata"]["next_cursor"] for p in pages[:-1]
    ]


async def test_home_reads_at_most_ten_pages_of_channels(
    bot: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
) -> None:
    await remember(bot)
    slack.conversations_page_size = 1
    slack.memberships[USER] = [f"C0FILL{i:03d}" for i in range(MEMBER_PAGES)] + [C_PUBLIC]
    text = text_of(await open_home(bot, slack, "Ev4"))

    assert len(slack.calls_to("users.conversations")) == MEMBER_PAGES
    assert "public.test" not in text  # past the pages read: not shown, never guessed


async def test_home_says_when_history_is_unavailable(
    settings: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
) -> None:
    dead = replace(settings, redis_url="redis://127.1.0.79:1/0", http_port=next(_ports))
    slack.memberships[USER] = [C_PUBLIC]
    async with _app(dead):
        text = text_of(await open_home(dead, slack, "Ev5"))
    assert HISTORY_UNAVAILABLE in text and "history unavailable right now" in text
    assert "/mailcheck" in text


# --- the view alone --------------------------------------------------------------------


def test_view_escapes_hostile_text_and_stays_within_slack_limits() -> None:
    hostile = "<!channel> <https://evil.example|click> *bold* `tick` &amp;" * 40
    runs = [
        replace(run(f"r{i}", "x.test", C_PUBLIC, i), display=hostile, parent_ts=f"1.{i}")
        for i in range(40)
    ]
    watches = [
        replace(watch("x.test", f"C0CH{i:03d}"), display=hostile, stages=(hostile,))
        for i in range(300)
    ]
    links = {r.request_id: "https://example.slack.com/archives/C0PUBLIC/p1" for r in runs}
    view = home_view(runs, watches, links)

    assert view["type"] == "home"
    assert len(view["blocks"]) <= MAX_BLOCKS
    texts = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
    assert texts and all(len(t) <= 3000 for t in texts)
    everything = "\n".join(all_strings(view))
    assert "<!channel>" not in everything and "<https://evil" not in everything
    assert "&lt;!channel&gt;" in everything
    assert everything.count(f"<#{C_PUBLIC}>") == 15  # the runs shown, at most HOME_RUNS
    assert "more not shown" in everything
    assert "/mailcheck" in everything  # the usage is never crowded out


def test_view_with_nothing_yet_and_with_a_notice() -> None:
    empty = "\n".join(all_strings(home_view()))
    assert "No checks of yours" in empty and "No watches of yours" in empty
    closed = "\n".join(all_strings(home_view(notice=SCOPE_HINT)))
    assert SCOPE_HINT in closed and "No checks" not in closed and "/mailcheck" in closed


def test_an_unknown_channel_id_is_not_mentioned() -> None:
    odd = replace(run("r1", "a.test", C_PUBLIC, 1), channel="<!here>")
    text = "\n".join(all_strings(home_view([odd])))
    assert "<!here>" not in text and "<#" not in text
