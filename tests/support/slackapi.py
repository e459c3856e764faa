"""A local stand-in for the Slack Web API, for tests that run the real slack_sdk.

    async with SlackAPIStandIn(address="127.1.0.80", token="xoxb-test-token") as server:
        client = AsyncWebClient(token="xoxb-test-token", base_url=server.url)
        await client.chat_postMessage(channel="C1", text="hi")
        [call] = server.calls_to("chat.postMessage")   # call.params["text"] == "hi"

Routes (one aiohttp app on address:port, port 0 = any free one):

    /api/{method}            the Web API, GET or POST: server.url is "http://A:P/api/"
    /upload/v1/{file_id}     where files.getUploadURLExternal sends the bytes
    /response/{name}         a slash command's response_url: server.response_url(name)
    /link/?ticket=...        the Socket Mode WebSocket (tests/support/socketmode.py)

Socket Mode: apps.connections.open, called with the app token (`app_token`,
xapp-...), answers a single-use ws:// URL of this server; `server.socket`
sends the hello and the test's envelopes there and records the app's acks.

Every Web API call is recorded in `server.calls` (a `Call`: method, params,
headers, and what was answered), rejected ones included. Params merge the
query string with the body (form, multipart or JSON); JSON-valued form fields
(blocks, attachments, files, view, metadata) are decoded, so `params["blocks"]`
is a list whichever way the client sent it. Posts of file bytes to the upload
URL are recorded apart, in `server.upload_calls` (method "upload", params
{"file_id", "length"}), so that `server.calls` stays the Web API calls alone;
`calls_to("upload")` and `wait_for("upload")` read them there.

Crash tests set `server.after_call` (an async callable taking the `Call`): it
runs for every recorded call, uploads included, after the call was applied
and recorded and before the answer is sent, so a test can kill the client
right after Slack accepted its k-th write and the client never learns of it.

Answers follow Slack's: HTTP 200 with {"ok": false, "error": ...} for API
errors, 429 with Retry-After when rate limited. Checked where cheap: the
Bearer token (or a `token` param), required arguments (chat.postMessage and
chat.update need `channel` and `text`, `blocks` or `attachments`), at most 50
blocks in a message and 100 in a view, message metadata ({"event_type":
word characters, "event_payload": an object}, else invalid_metadata_format),
and that chat.update targets a message posted here. Posted messages, as
updated, are in `server.messages[(channel, ts)]`, with their `metadata`; a
chat.update that carries metadata replaces it, one without keeps it. Files
completed into a channel are messages there too, as Slack shares them: in
the thread when completed with a thread_ts, with `files` and `"upload": true`.
Uploaded files are in `server.files[file_id]`; response_url posts in
`server.responses`.

conversations.history answers a channel's top-level messages newest first,
between `oldest` and `latest` (exclusive unless `inclusive`); an unknown
channel has no messages, not an error. conversations.replies answers a
thread, the parent first and then its replies oldest first (`thread_not_found`
when `ts` is no message of the channel). Both show `metadata` only with
`include_all_metadata`, page by `limit` with `has_more` and a cursor (a
timestamp, so posts between pages neither repeat nor skip messages).

users.conversations answers from `server.memberships` (user id -> channel
ids, set by the test; an unknown user is in none). It and the conversations
methods answer a page of `limit` at a time (at most
`server.conversations_page_size`, to exercise pagination) with
`response_metadata.next_cursor` to the next page.

Fault injection, consumed in the order set up, per method:

    server.rate_limit("chat.postMessage", times=1, retry_after=1)   # HTTP 429
    server.fail("chat.update", error="channel_not_found", times=1)  # ok: false
    server.fail("chat.postMessage", status=500, times=2)             # HTTP 500
    server.drop("chat.update", times=1)          # the connection closed, no answer
    server.fail("upload", status=503)            # the file upload URL, likewise
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.socketmode import SocketModeLink

MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100  # a Home tab or modal
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "T1"
TEAM_DOMAIN = "example"
_JSON_FIELDS = ("blocks", "attachments", "files", "view", "metadata")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_]+")  # a metadata event_type, as Slack accepts it
HISTORY_LIMIT = 100  # conversations.history: the default page, and at most 999
MAX_HISTORY_LIMIT = 999
REPLIES_LIMIT = 1000  # conversations.replies: the default page, and the largest


@dataclass(frozen=True)
class Call:
    """One Web API request (or post to the upload URL) and what the stand-in answered."""

    method: str  # "chat.postMessage"; "upload" for the bytes of a file
    params: Mapping[str, Any]  # query string and body merged; upload: file_id, length
    headers: Mapping[str, str]  # case-insensitive
    http_method: str  # "POST" or "GET"
    status: int  # HTTP status answered: 200, 429 when rate limited, 0 when dropped
    response: Mapping[str, Any]  # the JSON answered; upload: {"ok": bool, "error"?: text}
    at: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return str(error) if error is not None else None


@dataclass
class UploadedFile:
    file_id: str
    filename: str
    length: int  # as announced to files.getUploadURLExternal
    data: bytes | None = None  # None until the bytes are posted to the upload URL
    title: str | None = None
    completed: bool = False
    channel: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None


@dataclass(frozen=True)
class ResponsePost:
    """A post to a response_url."""

    name: str
    body: Any  # the JSON posted (or the text, when it was not JSON)
    headers: Mapping[str, str]
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _Fault:
    error: str
    retry_after: int | None = None  # set: answer HTTP 429
    status: int = 200  # 5xx: Slack's side failed (the body says ok: false too)
    drop: bool = False  # close the connection without answering


class _APIError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class SlackAPIStandIn:
    def __init__(
        self,
        address: str = "127.1.0.80",
        port: int = 0,
        token: str | None = "xoxb-test-token",
        app_token: str | None = "xapp-test-token",
    ) -> None:
        self.address = address
        self.port = port
        self.token = token  # None: accept any token, or none
        self.socket = SocketModeLink(app_token)  # app_token None: any token opens it
        self.calls: list[Call] = []
        self.upload_calls: list[Call] = []
        self.after_call: Callable[[Call], Awaitable[None]] | None = None
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.files: dict[str, UploadedFile] = {}
        self.responses: list[ResponsePost] = []
        self.memberships: dict[str, list[str]] = {}
        self.conversations_page_size = 1000  # Slack's largest page
        self._faults: dict[str, deque[_Fault]] = {}
        self._last_ts = 0  # microseconds
        self._file_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._handlers = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "views.publish": self._views_publish,
            "users.conversations": self._users_conversations,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "apps.connections.open": self.socket.open_connection,
        }

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        app.router.add_post("/response/{name}", self._response_url)
        app.router.add_get("/link/", self.socket.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.socket.root = self.root

    async def stop(self) -> None:
        if self._runner is not None:
            await self.socket.close()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackAPIStandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def root(self) -> str:
        return f"http://{self.address}:{self.port}/"

    @property
    def url(self) -> str:
        """The base_url for slack_sdk clients (ends with "/")."""
        return f"{self.root}api/"

    def response_url(self, name: str = "default") -> str:
        """A response_url whose posts are recorded under `name`."""
        return f"{self.root}response/{name}"

    # --- fault injection -------------------------------------------------------

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls of method answer 429 with Retry-After."""
        self._faults.setdefault(method, deque()).extend(
            [_Fault("ratelimited", retry_after)] * times
        )

    def fail(
        self, method: str, error: str = "channel_not_found", times: int = 1, status: int = 200
    ) -> None:
        """The next `times` calls of method answer {"ok": false, "error": error},
        with HTTP `status` (500, 503: as when Slack itself fails). Method
        "upload" is the file upload URL files.getUploadURLExternal hands out."""
        if status >= 500 and error == "channel_not_found":
            error = "internal_error"
        self._faults.setdefault(method, deque()).extend([_Fault(error, status=status)] * times)

    def drop(self, method: str, times: int = 1) -> None:
        """The next `times` calls of method get no answer: the connection is
        closed under them (a network fault between the client and Slack)."""
        self._faults.setdefault(method, deque()).extend([_Fault("", drop=True)] * times)

    # --- inspection ------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        calls = self.upload_calls if method == "upload" else self.calls
        return [call for call in calls if call.method == method]

    def responses_to(self, name: str) -> list[ResponsePost]:
        return [post for post in self.responses if post.name == name]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """The first `count` calls of method, once there are that many."""
        await self._wait(lambda: len(self.calls_to(method)) >= count, timeout, method, count)
        return self.calls_to(method)[:count]

    async def wait_for_response(
        self, name: str = "default", count: int = 1, timeout: float = 5.0
    ) -> list[ResponsePost]:
        """The first `count` posts to response_url(name), once there are that many."""
        what = f"response_url {name!r}"
        await self._wait(lambda: len(self.responses_to(name)) >= count, timeout, what, count)
        return self.responses_to(name)[:count]

    async def _recorded(self, calls: list[Call], call: Call) -> None:
        """Record an applied call, then let the test act before it is answered."""
        calls.append(call)
        if self.after_call is not None:
            await self.after_call(call)

    async def _wait(self, done: Any, timeout: float, what: str, count: int) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                seen = [call.method for call in self.calls]
                raise TimeoutError(
                    f"expected {count} call(s) to {what} within {timeout}s; calls so far: {seen}"
                )
            await asyncio.sleep(0.01)

    # --- HTTP ------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        headers: Mapping[str, str] = CIMultiDictProxy(CIMultiDict(request.headers))
        status, extra_headers = 200, {}
        try:
            params = await _read_params(request)
        except _APIError as exc:
            params, body = {}, {"ok": False, "error": exc.error}
        else:
            try:
                body = self._answer(method, params, headers)
            except _APIError as exc:
                retry_after = exc.extra.pop("retry_after", None)
                status = exc.extra.pop("status", 200)
                if exc.extra.pop("drop", False):
                    await self._recorded(
                        self.calls, Call(method, params, headers, request.method, 0, {})
                    )
                    return _dropped(request)
                body = {"ok": False, "error": exc.error, **exc.extra}
                if retry_after is not None:
                    status, extra_headers = 429, {"Retry-After": str(retry_after)}
        await self._recorded(
            self.calls, Call(method, params, headers, request.method, status, body)
        )
        return web.json_response(body, status=status, headers=extra_headers)

    def _answer(
        self, method: str, params: dict[str, Any], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        self._check_auth(method, params, headers)
        faults = self._faults.get(method)
        if faults:
            fault = faults.popleft()
            if fault.retry_after is not None:
                raise _APIError("ratelimited", retry_after=fault.retry_after)
            raise _APIError(fault.error, status=fault.status, drop=fault.drop)
        handler = self._handlers.get(method)
        if handler is None:
            raise _APIError("unknown_method", req_method=method)
        return {"ok": True, **handler(params)}

    def _check_auth(
        self, method: str, params: Mapping[str, Any], headers: Mapping[str, str]
    ) -> None:
        # apps.connections.open takes the app-level token and nothing else does.
        app_level = method == "apps.connections.open"
        expected = self.socket.app_token if app_level else self.token
        if expected is None:
            return
        authorization = headers.get("Authorization", "")
        given = (
            authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None
        )
        if given is None:
            given = params.get("token")
        if given != expected:
            wrong_type = str(given or "").startswith("xoxb-" if app_level else "xapp-")
            raise _APIError("not_allowed_token_type" if wrong_type else "invalid_auth")

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        faults = self._faults.get("upload")
        fault = faults.popleft() if faults else None
        upload = self.files.get(file_id)
        if fault is not None:
            status, text = (0, "") if fault.drop else (fault.status, fault.error)
        elif upload is None:
            status, text = 404, "unknown upload URL"
        else:
            upload.data = data
            status, text = 200, f"OK - {len(data)}"
        ok = status == 200 and fault is None
        call = Call(
            "upload",
            {"file_id": file_id, "length": len(data)},
            CIMultiDictProxy(CIMultiDict(request.headers)),
            request.method,
            status,
            {"ok": True} if ok else {} if status == 0 else {"ok": False, "error": text},
        )
        await self._recorded(self.upload_calls, call)
        if status == 0:
            return _dropped(request)
        return web.Response(status=status, text=text)

    async def _response_url(self, request: web.Request) -> web.Response:
        raw = await request.text()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        self.responses.append(ResponsePost(request.match_info["name"], body, headers))
        return web.Response(text="ok")

    # --- methods ---------------------------------------------------------------

    def _next_ts(self) -> str:
        """As Slack's: the time it was posted, unique and increasing in the
        workspace (a worker reading a channel back since a moment relies on it)."""
        micros = max(int(time.time() * 1_000_000), self._last_ts + 100)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _auth_test(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": "Example",
            "user": "mailcheck",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        content = _message_content(params)
        ts = self._next_ts()
        message = {**_bot_message(ts), "team": TEAM_ID, **content}
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": dict(message)}

    def _chat_update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        ts = str(params.get("ts") or "")
        if not ts:
            raise _APIError("invalid_arguments")
        content = _message_content(params)
        message = self.messages.get((channel, ts))
        if message is None:
            raise _APIError("message_not_found")
        message.update(content)
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {"channel": channel, "ts": ts, "text": message.get("text", ""), "message": message}

    def _chat_post_ephemeral(self, params: Mapping[str, Any]) -> dict[str, Any]:
        _require_channel(params)
        if not params.get("user"):
            raise _APIError("user_not_in_channel")
        _message_content(params)
        return {"message_ts": self._next_ts()}

    def _chat_get_permalink(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        ts = str(params.get("message_ts") or "")
        if not ts:
            raise _APIError("invalid_arguments")
        link = f"https://{TEAM_DOMAIN}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"channel": channel, "permalink": link}

    def _files_get_upload_url(self, params: Mapping[str, Any]) -> dict[str, Any]:
        filename = params.get("filename")
        try:
            length = int(params.get("length", ""))
        except ValueError:
            raise _APIError("invalid_arguments") from None
        if not filename:
            raise _APIError("invalid_arguments")
        file_id = f"F{next(self._file_ids):010d}"
        self.files[file_id] = UploadedFile(file_id, str(filename), length)
        return {"upload_url": f"{self.root}upload/v1/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, params: Mapping[str, Any]) -> dict[str, Any]:
        items = params.get("files")
        if not isinstance(items, list) or not items:
            raise _APIError("invalid_arguments")
        uploads = []
        for item in items:  # all found before any is completed: the call applies whole or not
            upload = self.files.get(item.get("id", "")) if isinstance(item, dict) else None
            if upload is None or upload.data is None:
                raise _APIError("file_not_found")
            uploads.append((item, upload, upload.data))
        done = []
        for item, upload, data in uploads:
            upload.title = item.get("title") or upload.filename
            upload.completed = True
            upload.channel = params.get("channel_id") or params.get("channels")
            upload.thread_ts = params.get("thread_ts")
            upload.initial_comment = params.get("initial_comment")
            done.append(
                {
                    "id": upload.file_id,
                    "name": upload.filename,
                    "title": upload.title,
                    "size": len(data),
                    "user": BOT_USER_ID,
                    "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/"
                    f"{BOT_USER_ID}/{upload.file_id}/{upload.filename}",
                }
            )
        self._share([upload for _, upload, _ in uploads], params)
        return {"files": done}

    def _share(self, uploads: list[UploadedFile], params: Mapping[str, Any]) -> None:
        """Post completed files as Slack does: one message, in the thread if one was given."""
        channel = params.get("channel_id") or params.get("channels")
        if not channel:
            return  # a private file, shared nowhere
        ts = self._next_ts()
        message: dict[str, Any] = {
            **_bot_message(ts),
            "files": [
                {"id": upload.file_id, "name": upload.filename, "title": upload.title}
                for upload in uploads
            ],
            "upload": True,
            "text": str(params.get("initial_comment") or ""),
        }
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        self.messages[(str(channel), ts)] = message

    def _views_publish(self, params: Mapping[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        if not params.get("user_id") or not isinstance(view, dict):
            raise _APIError("invalid_arguments")
        view_blocks = view.get("blocks")
        if not isinstance(view_blocks, list) or len(view_blocks) > MAX_VIEW_BLOCKS:
            raise _APIError("invalid_arguments")
        if not all(isinstance(block, dict) and block.get("type") for block in view_blocks):
            raise _APIError("invalid_arguments")
        return {"view": {"id": "V1", "team_id": TEAM_ID, **view}}

    def _limit(self, params: Mapping[str, Any], default: int, largest: int) -> int:
        try:
            limit = int(params.get("limit") or default)
        except ValueError:
            raise _APIError("invalid_limit") from None
        if limit < 1:
            raise _APIError("invalid_limit")
        return min(limit, largest, self.conversations_page_size)

    def _users_conversations(self, params: Mapping[str, Any]) -> dict[str, Any]:
        limit = self._limit(params, 100, 1000)
        cursor = str(params.get("cursor") or "")
        start = 0
        if cursor:
            prefix, _, offset = cursor.partition(":")
            if prefix != "next" or not offset.isdigit():
                raise _APIError("invalid_cursor")
            start = int(offset)
        channels = self.memberships.get(str(params.get("user") or ""), [])
        page = channels[start : start + limit]
        more = start + limit < len(channels)
        return {
            "channels": [{"id": channel} for channel in page],
            "response_metadata": {"next_cursor": f"next:{start + limit}" if more else ""},
        }

    def _conversations_history(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        limit = self._limit(params, HISTORY_LIMIT, MAX_HISTORY_LIMIT)
        inclusive = _flag(params.get("inclusive"))
        oldest = _timestamp(params.get("oldest") or "0", "invalid_ts_oldest")
        latest = _timestamp(params["latest"], "invalid_ts_latest") if params.get("latest") else None

        def within(ts: str) -> bool:
            stamp = Decimal(ts)
            if not (stamp >= oldest if inclusive else stamp > oldest):
                return False
            return latest is None or (stamp <= latest if inclusive else stamp < latest)

        top_level = [
            message
            for (where, ts), message in self.messages.items()
            if where == channel and message.get("thread_ts", ts) == ts and within(ts)
        ]
        top_level.sort(key=lambda message: Decimal(message["ts"]), reverse=True)
        return self._messages_page(channel, top_level, params, limit, newest_first=True)

    def _conversations_replies(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel = _require_channel(params)
        message = self.messages.get((channel, str(params.get("ts") or "")))
        if message is None:
            raise _APIError("thread_not_found")
        # Slack takes the ts of any message in the thread, and answers the whole thread.
        parent_ts = message.get("thread_ts", message["ts"])
        parent = self.messages.get((channel, parent_ts))
        if parent is None:
            raise _APIError("thread_not_found")
        limit = self._limit(params, REPLIES_LIMIT, REPLIES_LIMIT)
        replies = sorted(self._replies(channel, parent_ts), key=lambda reply: Decimal(reply["ts"]))
        return self._messages_page(channel, [parent, *replies], params, limit, newest_first=False)

    def _replies(self, channel: str, parent_ts: str) -> Iterable[dict[str, Any]]:
        for (where, ts), message in self.messages.items():
            if where == channel and ts != parent_ts and message.get("thread_ts") == parent_ts:
                yield message

    def _messages_page(
        self,
        channel: str,
        listing: list[dict[str, Any]],
        params: Mapping[str, Any],
        limit: int,
        newest_first: bool,
    ) -> dict[str, Any]:
        """One page of `listing` (in answer order), from the cursor on.

        The cursor names the first message of the next page by its ts, so a
        message posted between two pages shifts nothing (an offset would)."""
        start = 0
        cursor = str(params.get("cursor") or "")
        if cursor:
            prefix, _, ts = cursor.partition(":")
            if prefix != "next_ts":
                raise _APIError("invalid_cursor")
            resume = _timestamp(ts, "invalid_cursor")

            def position(stamp: Decimal) -> Decimal:  # ascending in answer order
                return -stamp if newest_first else stamp

            start = bisect.bisect_left(
                listing, position(resume), key=lambda message: position(Decimal(message["ts"]))
            )
        page, rest = listing[start : start + limit], listing[start + limit :]
        with_metadata = _flag(params.get("include_all_metadata"))
        return {
            "messages": [self._as_listed(channel, message, with_metadata) for message in page],
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": f"next_ts:{rest[0]['ts']}" if rest else ""},
        }

    def _as_listed(
        self, channel: str, message: dict[str, Any], with_metadata: bool
    ) -> dict[str, Any]:
        """A copy of message as history and replies show it: a thread's parent
        with its thread_ts and reply count, the metadata only when asked for."""
        listed = {key: value for key, value in message.items() if key != "metadata"}
        if with_metadata and "metadata" in message:
            listed["metadata"] = message["metadata"]
        reply_stamps = [reply["ts"] for reply in self._replies(channel, message["ts"])]
        if reply_stamps and "thread_ts" not in message:
            listed["thread_ts"] = message["ts"]
            listed["reply_count"] = len(reply_stamps)
            listed["latest_reply"] = max(reply_stamps, key=Decimal)
        return listed


def _dropped(request: web.Request) -> web.Response:
    """Close the connection unanswered: the client sees it disconnect."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)  # never reaches the client


def _bot_message(ts: str) -> dict[str, Any]:
    """What every message the bot posts has."""
    return {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": ts}


def _require_channel(params: Mapping[str, Any]) -> str:
    channel = params.get("channel")
    if not channel:
        raise _APIError("channel_not_found")
    return str(channel)


def _message_content(params: Mapping[str, Any]) -> dict[str, Any]:
    """text/blocks/attachments of a message, checked like Slack checks them."""
    content: dict[str, Any] = {}
    if "blocks" in params:
        blocks = params["blocks"]
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            raise _APIError("invalid_blocks")
        if not all(isinstance(block, dict) and block.get("type") for block in blocks):
            raise _APIError("invalid_blocks")
        content["blocks"] = blocks
    if "attachments" in params:
        if not isinstance(params["attachments"], list):
            raise _APIError("invalid_attachments")
        content["attachments"] = params["attachments"]
    text = params.get("text")
    if text is not None:
        content["text"] = str(text)
    if not content.get("text") and not content.get("blocks") and not content.get("attachments"):
        raise _APIError("no_text")
    if params.get("metadata") is not None:
        content["metadata"] = _metadata(params["metadata"])
    return content


def _metadata(metadata: Any) -> dict[str, Any]:
    """Message metadata, checked like Slack checks it."""
    if not isinstance(metadata, dict):
        raise _APIError("invalid_metadata_format")
    event_type, event_payload = metadata.get("event_type"), metadata.get("event_payload")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise _APIError("invalid_metadata_format")
    if not isinstance(event_payload, dict):
        raise _APIError("invalid_metadata_format")
    return {"event_type": event_type, "event_payload": event_payload}


def _flag(value: Any) -> bool:
    """A boolean argument as Slack reads it: true, "true" or "1" (slack_sdk sends "1")."""
    return str(value).lower() in ("true", "1")


def _timestamp(value: Any, error: str) -> Decimal:
    """A message ts as a number: Decimal, as a float would round away the microseconds."""
    try:
        stamp = Decimal(str(value))
    except InvalidOperation:
        raise _APIError(error) from None
    if not stamp.is_finite():
        raise _APIError(error)
    return stamp


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Query string and body (form, multipart or JSON) as one dict."""
    params: dict[str, Any] = dict(request.query)
    has_body = request.can_read_body
    if has_body and request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise _APIError("invalid_json") from None
        if not isinstance(body, dict):
            raise _APIError("invalid_json")
        params.update(body)
    elif has_body and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        for key, value in (await request.post()).items():
            params[key] = value.file.read() if isinstance(value, web.FileField) else value
    # slack_sdk sends some of these JSON-encoded in a form or the query string.
    for key in _JSON_FIELDS:
        if isinstance(params.get(key), str):
            with contextlib.suppress(ValueError):  # else left as sent, for the checks
                params[key] = json.loads(params[key])
    return params
