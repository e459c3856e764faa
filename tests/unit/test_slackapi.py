"""The Slack Web API stand-in (tests/support/slackapi.py), driven by the real slack_sdk."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.support.slackapi import MAX_BLOCKS, SlackAPIStandIn

TOKEN = "xoxb-test-token"


@pytest.fixture
async def server() -> AsyncIterator[SlackAPIStandIn]:
    async with SlackAPIStandIn(address="127.1.0.80", port=0, token=TOKEN) as server:
        yield server


@pytest.fixture
def client(server: SlackAPIStandIn) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=server.url)


def section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def test_post_then_update_in_a_thread(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    parent = await client.chat_postMessage(channel="C1", text="checking example.com…")
    assert parent["ok"] and parent["channel"] == "C1"
    assert parent["message"]["text"] == "checking example.com…"
    reply = await client.chat_postMessage(
        channel="C1", thread_ts=parent["ts"], text="details", blocks=[section("*dns* ok")]
    )
    assert reply["message"]["thread_ts"] == parent["ts"]
    updated = await client.chat_update(channel="C1", ts=parent["ts"], text="example.com: 1 warning")
    assert (updated["channel"], updated["ts"], updated["text"]) == (
        "C1",
        parent["ts"],
        "example.com: 1 warning",
    )

    first, second = server.calls_to("chat.postMessage")
    assert first.params == {"channel": "C1", "text": "checking example.com…"}
    assert second.params["thread_ts"] == parent["ts"]
    assert second.params["blocks"] == [section("*dns* ok")]
    assert first.headers["authorization"] == f"Bearer {TOKEN}"  # case-insensitive
    [update] = server.calls_to("chat.update")
    assert update.params["ts"] == parent["ts"] and update.ok
    assert server.messages[("C1", parent["ts"])]["text"] == "example.com: 1 warning"
    assert server.messages[("C1", reply["ts"])]["thread_ts"] == parent["ts"]


async def test_ts_are_unique_and_increasing(client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text="x"))["ts"] for _ in range(3)]
    assert stamps[0] == "1700000000.000100"
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 3


async def test_rate_limited_then_retried(server: SlackAPIStandIn, client: AsyncWebClient) -> None:
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    server.rate_limit("chat.postMessage", times=1, retry_after=1)
    started = time.monotonic()
    response = await client.chat_postMessage(channel="C1", text="hello")
    assert response["ok"]
    assert time.monotonic() - started >= 1.0  # slack_sdk honoured Retry-After
    limited, passed = server.calls_to("chat.postMessage")
    assert (limited.status, limited.error) == (429, "ratelimited")
    assert (passed.status, passed.ok) == (200, True)


async def test_rate_limited_without_retry_handler(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    server.rate_limit("chat.update", times=2, retry_after=7)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            await client.chat_update(channel="C1", ts="1.2", text="x")
        assert info.value.response.status_code == 429
        assert info.value.response["error"] == "ratelimited"
        assert info.value.response.headers["Retry-After"] == "7"
    # Then the method answers normally again (here: nothing to update).
    with pytest.raises(SlackApiError, match="message_not_found"):
        await client.chat_update(channel="C1", ts="1.2", text="x")


async def test_injected_failures(server: SlackAPIStandIn, client: AsyncWebClient) -> None:
    server.fail("chat.postMessage", error="channel_not_found", times=1)
    server.fail("auth.test", error="account_inactive", times=2)
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="C404", text="x")
    assert info.value.response["error"] == "channel_not_found"
    assert (await client.chat_postMessage(channel="C404", text="x"))["ok"]
    for _ in range(2):
        with pytest.raises(SlackApiError, match="account_inactive"):
            await client.auth_test()
    assert (await client.auth_test())["user_id"] == "UBOT"


@pytest.mark.parametrize("token", ["xoxb-wrong", None])
async def test_invalid_auth(server: SlackAPIStandIn, token: str | None) -> None:
    client = AsyncWebClient(token=token, base_url=server.url)
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="C1", text="x")
    assert info.value.response["error"] == "invalid_auth"
    assert server.calls[0].error == "invalid_auth"
    assert server.messages == {}


async def test_token_checking_can_be_turned_off() -> None:
    async with SlackAPIStandIn(token=None) as server:
        client = AsyncWebClient(token="xoxb-anything", base_url=server.url)
        assert (await client.auth_test())["ok"]


async def test_more_than_50_blocks_are_rejected(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    blocks = [section(f"line {i}") for i in range(MAX_BLOCKS + 1)]
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        await client.chat_postMessage(channel="C1", text="x", blocks=blocks)
    posted = await client.chat_postMessage(channel="C1", text="x", blocks=blocks[:MAX_BLOCKS])
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        await client.chat_update(channel="C1", ts=posted["ts"], text="x", blocks=blocks)
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        await client.chat_postMessage(channel="C1", text="x", blocks=[{"text": "no type"}])


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"text": "x"}, "channel_not_found"),
        ({"channel": "C1"}, "no_text"),
        ({"channel": "C1", "text": ""}, "no_text"),
    ],
)
async def test_post_message_needs_channel_and_content(
    client: AsyncWebClient, arguments: dict[str, str], error: str
) -> None:
    with pytest.raises(SlackApiError) as info:
        await client.api_call("chat.postMessage", json=arguments)
    assert info.value.response["error"] == error


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_blocks_alone_are_enough(client: AsyncWebClient) -> None:
    assert (await client.chat_postMessage(channel="C1", blocks=[section("hi")]))["ok"]


async def test_form_encoded_calls_are_parsed(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    blocks = [section("form")]
    await client.api_call(
        "chat.postMessage", data={"channel": "C1", "text": "t", "blocks": json.dumps(blocks)}
    )
    [call] = server.calls_to("chat.postMessage")
    assert call.params == {"channel": "C1", "text": "t", "blocks": blocks}
    assert call.http_method == "POST"


async def test_update_of_an_unknown_message(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError, match="message_not_found"):
        await client.chat_update(channel="C1", ts="1700000000.999999", text="x")


async def test_ephemeral_permalink_auth_and_home(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    ephemeral = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert ephemeral["message_ts"]
    posted = await client.chat_postMessage(channel="C1", text="x")
    link = await client.chat_getPermalink(channel="C1", message_ts=posted["ts"])
    ts_digits = posted["ts"].replace(".", "")
    assert link["permalink"] == f"https://example.slack.com/archives/C1/p{ts_digits}"
    assert server.calls_to("chat.getPermalink")[0].http_method == "GET"
    identity = await client.auth_test()
    assert (identity["user_id"], identity["bot_id"], identity["team_id"]) == (
        "UBOT",
        "BBOT",
        "T1",
    )
    home = await client.views_publish(user_id="U1", view={"type": "home", "blocks": []})
    assert home["ok"]
    assert server.calls_to("views.publish")[0].params["view"] == {"type": "home", "blocks": []}


async def test_unknown_method(server: SlackAPIStandIn, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as info:
        await client.api_call("chat.doesNotExist", json={"channel": "C1"})
    assert info.value.response["error"] == "unknown_method"
    assert server.calls_to("chat.doesNotExist")[0].error == "unknown_method"


async def test_files_upload_v2_end_to_end(server: SlackAPIStandIn, client: AsyncWebClient) -> None:
    report = b'{"domain": "example.com", "findings": []}\n'
    response = await client.files_upload_v2(
        channel="C1",
        thread_ts="1700000000.000100",
        content=report,
        filename="example.com.json",
        title="Full report",
        initial_comment="the JSON report",
    )
    assert response["ok"]
    file_id = response["file"]["id"]
    assert response["file"]["title"] == "Full report"
    uploaded = server.files[file_id]
    assert uploaded.data == report and uploaded.length == len(report)
    assert (uploaded.filename, uploaded.channel, uploaded.thread_ts) == (
        "example.com.json",
        "C1",
        "1700000000.000100",
    )
    assert uploaded.completed and uploaded.initial_comment == "the JSON report"
    methods = [call.method for call in server.calls]
    assert methods == ["files.getUploadURLExternal", "files.completeUploadExternal"]


async def test_completing_an_upload_that_was_never_sent(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    url = await client.files_getUploadURLExternal(filename="a.txt", length=3)
    assert url["upload_url"].startswith(server.root)
    with pytest.raises(SlackApiError, match="file_not_found"):
        await client.files_completeUploadExternal(files=[{"id": url["file_id"]}])


async def test_response_url_posts_are_recorded(server: SlackAPIStandIn) -> None:
    webhook = AsyncWebhookClient(server.response_url("cmd1"))
    response = await webhook.send(text="Checking example.com…", response_type="ephemeral")
    assert (response.status_code, response.body) == (200, "ok")
    [post] = await server.wait_for_response("cmd1")
    assert post.body == {"text": "Checking example.com…", "response_type": "ephemeral"}
    assert server.responses_to("other") == []


async def test_wait_for_a_call_made_later(server: SlackAPIStandIn, client: AsyncWebClient) -> None:
    async def post_later() -> None:
        await asyncio.sleep(0.1)
        await client.chat_postMessage(channel="C1", text="late")

    task = asyncio.create_task(post_later())
    [call] = await server.wait_for("chat.postMessage", count=1, timeout=5)
    assert call.params["text"] == "late"
    await task
    with pytest.raises(TimeoutError, match=r"chat\.update"):
        await server.wait_for("chat.update", timeout=0.05)


async def test_upload_url_accepts_raw_bytes(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    url = await client.files_getUploadURLExternal(filename="b.bin", length=4)
    async with aiohttp.ClientSession() as session:
        async with session.post(url["upload_url"], data=b"\x00\x01\x02\x03") as answer:
            assert answer.status == 200
        async with session.post(f"{server.root}upload/v1/F404", data=b"x") as answer:
            assert answer.status == 404
    assert server.files[url["file_id"]].data == b"\x00\x01\x02\x03"


async def test_users_conversations_pages_and_fails_on_demand(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    server.memberships["U1"] = ["C1", "C2", "G3", "D4", "C5"]
    server.conversations_page_size = 2
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await client.users_conversations(user="U1", limit=200, cursor=cursor)
        assert len(page["channels"]) <= 2
        seen += [c["id"] for c in page["channels"]]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert seen == ["C1", "C2", "G3", "D4", "C5"]
    assert len(server.calls_to("users.conversations")) == 3
    nobody = await client.users_conversations(user="U404")
    assert nobody["channels"] == [] and nobody["response_metadata"]["next_cursor"] == ""
    with pytest.raises(SlackApiError, match="invalid_cursor"):
        await client.users_conversations(user="U1", cursor="bogus")
    server.fail("users.conversations", error="missing_scope")
    with pytest.raises(SlackApiError, match="missing_scope"):
        await client.users_conversations(user="U1")


async def test_a_view_of_more_than_100_blocks_is_rejected(client: AsyncWebClient) -> None:
    blocks = [section(str(i)) for i in range(101)]
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        await client.views_publish(user_id="U1", view={"type": "home", "blocks": blocks})
    assert (
        await client.views_publish(user_id="U1", view={"type": "home", "blocks": blocks[:100]})
    )["ok"]
