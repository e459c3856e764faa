"""Socket Mode for the Slack stand-in (tests/support/slackapi.py): the app's
side of Slack's WebSocket link, as Slack runs it.

    async with SlackAPIStandIn(app_token="xapp-test-token") as server:
        # the app calls apps.connections.open (with the xapp- token) on server.url,
        # then connects to the ws:// URL it answered: the link says hello.
        await server.socket.wait_for_connection()
        ack = await server.socket.send("slash_commands", {"command": "/mailcheck", ...})
        ack.payload["text"]                         # what the app acked with
        await server.socket.refresh()               # {"type": "disconnect", ...}
        await server.socket.wait_for_connection(2)  # the app opened a new link

Slack's protocol, as far as the SDK relies on it: apps.connections.open
answers a single-use URL (a second connection with the same ticket is
refused, as Slack refuses it, so an app that reconnects without asking for a
new URL is caught); the link sends `{"type": "hello", ...}`, then envelopes
`{"envelope_id", "type", "payload", "accepts_response_payload"}` (types
`slash_commands`, `interactive`, `events_api`); the app answers each with an
ack `{"envelope_id", "payload"?}` on the same link. `refresh()` sends
`{"type": "disconnect", "reason": "refresh_requested"}` and, like Slack,
closes that link only once the app has opened its next one (or after
`REFRESH_GRACE` seconds), so nothing is in flight on a dead link.

Envelopes go to the newest open link (Slack picks any one of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

APP_ID = "A0MAILCHECK"
REFRESH_GRACE = 10.0  # seconds a refreshed link stays open for the app to move over
SEND_TIMEOUT = 5.0  # writing one frame to a link
LINK_WAIT = 10.0  # how long an envelope waits for the app to have a link open


@dataclass(frozen=True)
class Ack:
    """The app's answer to one envelope."""

    envelope_id: str
    payload: Mapping[str, Any]  # {} when the app acked without a payload
    link: int  # which connection it came on (1, 2, ...)
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


@dataclass
class Link:
    """One WebSocket connection from the app."""

    number: int  # 1 for the first connection, and so on (0 until it is said hello to)
    ticket: str
    ws: web.WebSocketResponse
    opened: float = field(default_factory=time.monotonic)
    closed: float | None = None  # when it closed, from either side
    received: list[Any] = field(default_factory=list)  # every frame the app sent, decoded

    @property
    def open(self) -> bool:
        return self.closed is None


class SocketModeLink:
    """The Socket Mode side of a SlackAPIStandIn: server.socket."""

    def __init__(self, app_token: str | None) -> None:
        self.app_token = app_token  # None: apps.connections.open accepts any token
        self.root = ""  # the stand-in's http://A:P/, set when it starts
        self.links: list[Link] = []
        self.acks: dict[str, Ack] = {}
        self.envelopes: list[dict[str, Any]] = []  # every envelope sent, in order
        self.refused: list[str] = []  # tickets that were unknown or already used
        self._tickets: set[str] = set()  # issued, not yet used
        self._envelope_ids = itertools.count(1)
        self._changed = asyncio.Event()  # a link or an ack came or went
        self._tasks: set[asyncio.Task[None]] = set()  # refreshed links closing later

    # --- apps.connections.open and the link -----------------------------------

    def open_connection(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """apps.connections.open: a fresh single-use URL."""
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        base = self.root.replace("http://", "ws://", 1)
        return {"url": f"{base}link/?ticket={ticket}&app_id={APP_ID}"}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            self.refused.append(ticket)
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)  # pongs the SDK's keep-alive pings
        await ws.prepare(request)
        link = Link(0, ticket, ws)
        try:
            await self._send(link, _hello(len(self.open_links) + 1))
            # Listed (so sent envelopes) only once it has said hello, as on Slack.
            link.number = len(self.links) + 1
            self.links.append(link)
            self._notify()
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(message.data)
                except ValueError:
                    frame = message.data
                link.received.append(frame)
                if isinstance(frame, dict) and frame.get("envelope_id"):
                    envelope_id = str(frame["envelope_id"])
                    payload = frame.get("payload") or {}
                    self.acks.setdefault(envelope_id, Ack(envelope_id, payload, link.number))
                    self._notify()
        finally:
            link.closed = time.monotonic()
            self._notify()
        return ws

    async def close(self) -> None:
        """Close every open link (the stand-in is stopping)."""
        for task in list(self._tasks):
            task.cancel()
        for link in self.links:
            if link.open:
                await asyncio.wait_for(link.ws.close(), SEND_TIMEOUT)

    # --- what a test does ---------------------------------------------------------

    @property
    def open_links(self) -> list[Link]:
        return [link for link in self.links if link.open]

    async def wait_for_connection(self, count: int = 1, timeout: float = 10.0) -> Link:
        """The `count`th link, once the app has opened it (and been said hello to)."""
        await self._wait(lambda: len(self.links) >= count, timeout, f"connection #{count}")
        return self.links[count - 1]

    async def wait_closed(self, link: Link, timeout: float = 10.0) -> None:
        await self._wait(lambda: not link.open, timeout, f"link #{link.number} to close")

    async def push(
        self,
        kind: str,
        payload: Mapping[str, Any],
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Send an envelope of `kind` on the newest open link; its envelope_id."""
        if kind not in ("slash_commands", "interactive", "events_api"):
            raise ValueError(f"not an envelope type Slack sends: {kind!r}")
        # Like Slack, hold it for an app that is between links (connecting, refreshed).
        await self._wait(lambda: bool(self.open_links), LINK_WAIT, "an open link to send on")
        envelope_id = f"env-{next(self._envelope_ids):04d}-{secrets.token_hex(4)}"
        if accepts_response_payload is None:  # Slack's: only commands may answer in the ack
            accepts_response_payload = kind == "slash_commands"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": dict(payload),
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        self.envelopes.append(envelope)
        await self._send(self.open_links[-1], envelope)
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        await self._wait(lambda: envelope_id in self.acks, timeout, f"the ack of {envelope_id}")
        return self.acks[envelope_id]

    async def send(self, kind: str, payload: Mapping[str, Any], timeout: float = 5.0) -> Ack:
        """push() an envelope and wait for the app's ack of it."""
        return await self.wait_for_ack(await self.push(kind, payload), timeout)

    async def refresh(self) -> Link:
        """Ask the app to move to a new link, as Slack does every few hours;
        the old one closes once it has (or after REFRESH_GRACE). The old link."""
        links = self.open_links
        if not links:
            raise AssertionError("no open Socket Mode link to refresh")
        old = links[-1]
        await self._send(
            old,
            {
                "type": "disconnect",
                "reason": "refresh_requested",
                "debug_info": {"host": "applink-stand-in"},
            },
        )
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return old

    async def _retire(self, old: Link) -> None:
        def moved() -> bool:
            return any(link.number > old.number and link.open for link in self.links)

        with contextlib.suppress(TimeoutError):  # close it anyway, as Slack does
            await self._wait(moved, REFRESH_GRACE, "a new link")
        if old.open:
            await asyncio.wait_for(old.ws.close(), SEND_TIMEOUT)

    # --- plumbing -------------------------------------------------------------------

    async def _send(self, link: Link, frame: Mapping[str, Any]) -> None:
        await asyncio.wait_for(link.ws.send_str(json.dumps(frame)), SEND_TIMEOUT)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"expected {what} within {timeout}s; links: "
                    f"{[(link.number, link.open) for link in self.links]}, "
                    f"acks: {sorted(self.acks)}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)


def _hello(connections: int) -> dict[str, Any]:
    return {
        "type": "hello",
        "num_connections": connections,
        "debug_info": {
            "host": "applink-stand-in",
            "build_number": 1,
            "approximate_connection_time": 18060,
        },
        "connection_info": {"app_id": APP_ID},
    }
