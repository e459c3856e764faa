"""Socket Mode in the Slack stand-in (tests/support/socketmode.py), driven by
the real slack_sdk Socket Mode client, the one Bolt's handler runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.support.slackapi import SlackAPIStandIn

TOKEN, APP_TOKEN = "xoxb-test-token", "xapp-test-token"


@pytest.fixture
async def server() -> AsyncIterator[SlackAPIStandIn]:
    async with SlackAPIStandIn(address="127.1.0.80", token=TOKEN, app_token=APP_TOKEN) as server:
        yield server


@pytest.fixture
async def client(server: SlackAPIStandIn) -> AsyncIterator[SocketModeClient]:
    """A Socket Mode client that acks every request, echoing its payload's text."""
    web = AsyncWebClient(token=TOKEN, base_url=server.url)
    client = SocketModeClient(app_token=APP_TOKEN, web_client=web, ping_interval=1)

    async def answer(client: SocketModeClient, request: SocketModeRequest) -> None:  # type: ignore[misc]
        text = request.payload.get("text")
        payload = {"text": f"got {text}"} if text else None
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload=payload)
        )

    client.socket_mode_request_listeners.append(answer)
    try:
        yield client
    finally:
        await client.close()


async def test_connect_hello_envelope_and_ack(
    server: SlackAPIStandIn, client: SocketModeClient
) -> None:
    await client.connect()
    link = await server.socket.wait_for_connection()
    (opened,) = server.calls_to("apps.connections.open")
    assert opened.ok and opened.headers["Authorization"] == f"Bearer {APP_TOKEN}"
    assert opened.response["url"].startswith(f"ws://127.1.0.80:{server.port}/link/?ticket=")

    ack = await server.socket.send("slash_commands", {"command": "/mailcheck", "text": "a.test"})
    assert ack.payload == {"text": "got a.test"} and ack.text == "got a.test"
    assert ack.link == link.number == 1
    event = await server.socket.send("events_api", {"type": "event_callback", "event": {}})
    assert event.payload == {}  # acked without a payload
    first, second = server.socket.envelopes
    assert first["accepts_response_payload"] is True and first["type"] == "slash_commands"
    assert second["accepts_response_payload"] is False and second["retry_attempt"] == 0


async def test_a_refresh_moves_the_client_to_a_new_link(
    server: SlackAPIStandIn, client: SocketModeClient
) -> None:
    await client.connect()
    first = await server.socket.wait_for_connection()
    old = await server.socket.refresh()
    assert old is first
    second = await server.socket.wait_for_connection(2)
    await server.socket.wait_closed(first)
    assert len(server.calls_to("apps.connections.open")) == 2  # a new URL, not the old one
    assert server.socket.refused == [] and second.open
    ack = await server.socket.send("interactive", {"type": "block_actions", "text": "again"})
    assert ack.link == 2 and ack.text == "got again"


async def test_the_app_token_and_only_it_opens_a_link(server: SlackAPIStandIn) -> None:
    with pytest.raises(SlackApiError) as refused:
        await AsyncWebClient(token=TOKEN, base_url=server.url).apps_connections_open(
            app_token=TOKEN
        )
    assert refused.value.response["error"] == "not_allowed_token_type"
    app_client = AsyncWebClient(token=APP_TOKEN, base_url=server.url)
    with pytest.raises(SlackApiError) as refused:
        await app_client.chat_postMessage(channel="C1", text="hi")
    assert refused.value.response["error"] == "not_allowed_token_type"

    opened = await app_client.apps_connections_open(app_token=APP_TOKEN)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(opened["url"]) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["num_connections"] == 1
        with pytest.raises(aiohttp.WSServerHandshakeError) as again:
            await session.ws_connect(opened["url"])  # single use
        assert again.value.status == 401
    assert len(server.socket.refused) == 1
