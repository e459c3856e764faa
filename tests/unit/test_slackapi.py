"""The Slack Web API stand-in (tests/support/slackapi.py), driven by the real slack_sdk."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.support.slackapi import BOT_USER_ID, MAX_BLOCKS, Call, SlackAPIStandIn

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
    before = time.time()
    stamps = [(await client.chat_postMessage(channel="C1", text="x"))["ts"] for _ in range(3)]
    assert before - 1 <= float(stamps[0]) <= time.time() + 1  # the time it was posted, as Slack's
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


# --- message metadata, conversations.history and .replies, the after_call hook ---------------

RUN = {"event_type": "mailcheck_run", "event_payload": {"job": "j1", "domain": "example.com"}}


async def test_metadata_is_listed_only_when_asked_for(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    parent = await client.chat_postMessage(channel="C1", text="checking", metadata=RUN)
    step = {"event_type": "mailcheck_step", "event_payload": {"n": 1}}
    reply = await client.chat_postMessage(
        channel="C1", thread_ts=parent["ts"], text="dns", metadata=step
    )
    assert server.messages[("C1", parent["ts"])]["metadata"] == RUN

    plain = await client.conversations_history(channel="C1")
    assert [m["ts"] for m in plain["messages"]] == [parent["ts"]]  # the reply is in the thread
    assert "metadata" not in plain["messages"][0]
    full = await client.conversations_history(channel="C1", include_all_metadata=True)
    assert full["messages"][0]["metadata"] == RUN
    listed = full["messages"][0]
    assert (listed["thread_ts"], listed["reply_count"], listed["latest_reply"]) == (
        parent["ts"],
        1,
        reply["ts"],
    )

    thread = await client.conversations_replies(channel="C1", ts=parent["ts"])
    assert [m["ts"] for m in thread["messages"]] == [parent["ts"], reply["ts"]]
    assert all("metadata" not in m for m in thread["messages"])
    thread = await client.conversations_replies(
        channel="C1", ts=parent["ts"], include_all_metadata=True
    )
    assert [m["metadata"] for m in thread["messages"]] == [RUN, step]
    # The flag as a form or JSON argument reads the same: "true" and true, but not "false".
    for flag in ("true", True, "false"):
        answer = await client.api_call(
            "conversations.history", json={"channel": "C1", "include_all_metadata": flag}
        )
        assert ("metadata" in answer["messages"][0]) is (flag != "false")


async def test_metadata_sent_as_a_form_field(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    posted = await client.api_call(
        "chat.postMessage", data={"channel": "C1", "text": "t", "metadata": json.dumps(RUN)}
    )
    assert server.messages[("C1", posted["ts"])]["metadata"] == RUN


async def test_update_replaces_the_metadata(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C1", text="running", metadata=RUN)
    done = {"event_type": "mailcheck_done", "event_payload": {"job": "j1", "replies": 3}}
    await client.chat_update(channel="C1", ts=posted["ts"], text="done", metadata=done)
    history = await client.conversations_history(channel="C1", include_all_metadata=True)
    [message] = history["messages"]
    assert (message["text"], message["metadata"]) == ("done", done)


@pytest.mark.parametrize(
    "metadata",
    [
        {"event_type": "", "event_payload": {}},
        {"event_type": "has space", "event_payload": {}},
        {"event_type": "dotted.name", "event_payload": {}},
        {"event_type": 7, "event_payload": {}},
        {"event_payload": {}},
        {"event_type": "ok_type", "event_payload": ["not", "an", "object"]},
        {"event_type": "ok_type"},
        "not json",
        ["event_type"],
    ],
)
async def test_invalid_metadata_is_rejected(
    server: SlackAPIStandIn, client: AsyncWebClient, metadata: Any
) -> None:
    encoded = metadata if isinstance(metadata, str) else json.dumps(metadata)
    with pytest.raises(SlackApiError, match="invalid_metadata_format"):
        await client.api_call(
            "chat.postMessage", data={"channel": "C1", "text": "t", "metadata": encoded}
        )
    assert server.messages == {}
    posted = await client.chat_postMessage(channel="C1", text="t", metadata=RUN)
    with pytest.raises(SlackApiError, match="invalid_metadata_format"):
        await client.api_call(
            "chat.update",
            data={"channel": "C1", "ts": posted["ts"], "text": "u", "metadata": encoded},
        )
    assert server.messages[("C1", posted["ts"])]["text"] == "t"
    assert server.messages[("C1", posted["ts"])]["metadata"] == RUN


async def test_history_pages_newest_first(server: SlackAPIStandIn, client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text=str(i)))["ts"] for i in range(5)]
    await client.chat_postMessage(channel="C1", thread_ts=stamps[0], text="a reply")
    await client.chat_postMessage(channel="C2", text="elsewhere")

    first = await client.conversations_history(channel="C1", limit=2)
    assert [m["ts"] for m in first["messages"]] == [stamps[4], stamps[3]]
    assert first["has_more"] is True
    # A message posted between two pages neither repeats one nor skips one.
    newest = (await client.chat_postMessage(channel="C1", text="late"))["ts"]
    seen = [m["ts"] for m in first["messages"]]
    cursor = first["response_metadata"]["next_cursor"]
    while cursor:
        page = await client.conversations_history(channel="C1", limit=2, cursor=cursor)
        seen += [m["ts"] for m in page["messages"]]
        assert page["has_more"] is bool(page["response_metadata"]["next_cursor"])
        cursor = page["response_metadata"]["next_cursor"]
    assert seen == stamps[::-1]
    assert len(server.calls_to("conversations.history")) == 3

    everything = await client.conversations_history(channel="C1")
    assert [m["ts"] for m in everything["messages"]] == [newest, *stamps[::-1]]
    assert everything["has_more"] is False
    assert everything["response_metadata"]["next_cursor"] == ""
    with pytest.raises(SlackApiError, match="invalid_cursor"):
        await client.conversations_history(channel="C1", cursor="bogus")


async def test_history_between_oldest_and_latest(client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text=str(i)))["ts"] for i in range(5)]
    between = await client.conversations_history(channel="C1", oldest=stamps[1], latest=stamps[4])
    assert [m["ts"] for m in between["messages"]] == [stamps[3], stamps[2]]  # exclusive
    inclusive = await client.conversations_history(
        channel="C1", oldest=stamps[1], latest=stamps[4], inclusive=True
    )
    assert [m["ts"] for m in inclusive["messages"]] == stamps[4:0:-1]
    after = await client.conversations_history(channel="C1", oldest=stamps[3])
    assert [m["ts"] for m in after["messages"]] == [stamps[4]]
    with pytest.raises(SlackApiError, match="invalid_ts_oldest"):
        await client.conversations_history(channel="C1", oldest="yesterday")


async def test_history_of_a_channel_never_posted_to_is_empty(client: AsyncWebClient) -> None:
    answer = await client.conversations_history(channel="C0QUIET")
    assert answer["ok"] and answer["messages"] == [] and answer["has_more"] is False
    with pytest.raises(SlackApiError, match="invalid_limit"):
        await client.conversations_history(channel="C0QUIET", limit=0)


async def test_replies_page_the_parent_first_then_oldest_first(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    parent = (await client.chat_postMessage(channel="C1", text="parent"))["ts"]
    replies = [
        (await client.chat_postMessage(channel="C1", thread_ts=parent, text=str(i)))["ts"]
        for i in range(3)
    ]
    await client.chat_postMessage(channel="C1", text="not in the thread")

    first = await client.conversations_replies(channel="C1", ts=parent, limit=2)
    assert [m["text"] for m in first["messages"]] == ["parent", "0"]
    assert first["has_more"] is True
    second = await client.conversations_replies(
        channel="C1", ts=parent, limit=2, cursor=first["response_metadata"]["next_cursor"]
    )
    assert [m["ts"] for m in second["messages"]] == replies[1:]  # the parent only once
    assert second["has_more"] is False and second["response_metadata"]["next_cursor"] == ""

    # Any message of the thread names the thread; the default page holds it all.
    whole = await client.conversations_replies(channel="C1", ts=replies[1])
    assert [m["ts"] for m in whole["messages"]] == [parent, *replies]
    server.conversations_page_size = 3
    capped = await client.conversations_replies(channel="C1", ts=parent, limit=1000)
    assert len(capped["messages"]) == 3 and capped["has_more"] is True


@pytest.mark.parametrize(("channel", "ts"), [("C1", "1700000099.000100"), ("C2", "")])
async def test_replies_to_no_message(client: AsyncWebClient, channel: str, ts: str) -> None:
    posted = await client.chat_postMessage(channel="C1", text="x")
    with pytest.raises(SlackApiError, match="thread_not_found"):
        await client.conversations_replies(channel=channel, ts=ts or posted["ts"])


async def test_a_file_shared_into_a_thread_is_a_reply(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    parent = (await client.chat_postMessage(channel="C1", text="checking"))["ts"]
    uploaded = await client.files_upload_v2(
        channel="C1",
        thread_ts=parent,
        content=b"{}",
        filename="example.com.json",
        title="Full report",
        initial_comment="the JSON report",
    )
    file_id = uploaded["file"]["id"]
    thread = await client.conversations_replies(channel="C1", ts=parent)
    [_, shared] = thread["messages"]
    assert shared["files"] == [{"id": file_id, "name": "example.com.json", "title": "Full report"}]
    assert (shared["upload"], shared["text"], shared["user"], shared["thread_ts"]) == (
        True,
        "the JSON report",
        BOT_USER_ID,
        parent,
    )
    assert float(shared["ts"]) > float(parent)
    history = await client.conversations_history(channel="C1")
    assert [m["ts"] for m in history["messages"]] == [parent]  # the share is in the thread

    # Without a thread_ts the file is a message of the channel; without a channel, nowhere.
    await client.files_upload_v2(channel="C1", content=b"x", filename="top.txt")
    [top, _] = (await client.conversations_history(channel="C1"))["messages"]
    assert [f["name"] for f in top["files"]] == ["top.txt"] and top["text"] == ""
    before = len(server.messages)
    await client.files_upload_v2(content=b"x", filename="private.txt")
    assert len(server.messages) == before


async def test_after_call_runs_before_the_client_has_its_answer(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    arrived: asyncio.Queue[Call] = asyncio.Queue()
    go_on = asyncio.Semaphore(0)

    async def hold(call: Call) -> None:
        await arrived.put(call)
        await go_on.acquire()

    server.after_call = hold

    async def post_and_upload() -> str:
        parent = await client.chat_postMessage(channel="C1", text="checking")
        await client.files_upload_v2(
            channel="C1", thread_ts=parent["ts"], content=b"report", filename="r.json"
        )
        return str(parent["ts"])

    task = asyncio.create_task(post_and_upload())
    held: list[Call] = []
    for method in (
        "chat.postMessage",
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ):
        call = await asyncio.wait_for(arrived.get(), timeout=5)
        held.append(call)
        assert call.method == method and call.ok
        await asyncio.sleep(0.05)
        assert not task.done()  # the client is still waiting for this answer
        # ...and the call is already applied and recorded.
        if method == "chat.postMessage":
            assert ("C1", call.response["ts"]) in server.messages
            assert server.calls[-1] is call
        elif method == "upload":
            assert server.files[call.params["file_id"]].data == b"report"
            assert call.params["length"] == len(b"report")
            assert server.upload_calls == [call] and server.calls_to("upload") == [call]
        elif method == "files.completeUploadExternal":
            [shared] = [m for m in server.messages.values() if m.get("files")]
            assert shared["files"][0]["id"] == call.params["files"][0]["id"]
        go_on.release()
    parent = await asyncio.wait_for(task, timeout=5)
    assert arrived.empty() and held[0].response["ts"] == parent
    # Upload posts are not Web API calls: server.calls holds only those.
    assert "upload" not in [c.method for c in server.calls]


async def test_after_call_sees_rejected_and_dropped_calls_too(
    server: SlackAPIStandIn, client: AsyncWebClient
) -> None:
    seen: list[tuple[str, int, bool]] = []

    async def note(call: Call) -> None:
        seen.append((call.method, call.status, call.ok))

    server.after_call = note
    server.drop("chat.postMessage")
    server.fail("upload", status=503)
    # slack_sdk's connection-error retry handler sends the dropped call again.
    posted = await client.chat_postMessage(channel="C1", text="x")
    with pytest.raises(SlackApiError, match="no_text"):
        await client.api_call("chat.postMessage", json={"channel": "C1", "text": ""})
    url = await client.files_getUploadURLExternal(filename="a.txt", length=1)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url["upload_url"], data=b"a") as answer,
    ):
        assert answer.status == 503
    assert seen == [
        ("chat.postMessage", 0, False),
        ("chat.postMessage", 200, True),
        ("chat.postMessage", 200, False),
        ("files.getUploadURLExternal", 200, True),
        ("upload", 503, False),
    ]
    assert server.files[url["file_id"]].data is None
    assert list(server.messages) == [("C1", posted["ts"])]  # the dropped call applied nothing
