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
is a list whichever way the client sent it.

Answers follow Slack's: HTTP 200 with {"ok": false, "error": ...} for API
errors, 429 with Retry-After when rate limited. Checked where cheap: the
Bearer token (or a `token` param), required arguments (chat.postMessage and
chat.update need `channel` and `text`, `blocks` or `attachments`), at most 50
blocks in a message and 100 in a view, and that chat.update targets a message
posted here. Posted messages, as updated, are in `server.messages[(channel, ts)]`; uploaded files in
`server.files[file_id]`; response_url posts in `server.responses`.

users.conversations answers from `server.memberships` (user id -> channel
ids, set by the test; an unknown user is in none), a page of `limit` at a
time (at most `server.conversations_page_size`, to exercise pagination)
with `response_metadata.next_cursor` to the next page.

Fault injection, consumed in the order set up, per method:

    server.rate_limit("chat.postMessage", times=1, retry_after=1)   # HTTP 429
    server.fail("chat.update", error="channel_not_found", times=1)  # ok: false
    server.fail("chat.postMessage", status=500, times=2)             # HTTP 500
    server.drop("chat.update", times=1)          # the connection closed, no answer
    server.fail("upload", status=503)            # the file upload URL, likewise
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
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
_FIRST_TS = 1_700_000_000_000_100  # microseconds: "1700000000.000100"


@dataclass(frozen=True)
class Call:
    """One Web API request and what the stand-in answered."""

    method: str  # "chat.postMessage"
    params: Mapping[str, Any]  # query string and body merged
    headers: Mapping[str, str]  # case-insensitive
    http_method: str  # "POST" or "GET"
    status: int  # HTTP status answered: 200, or 429 when rate limited
    response: Mapping[str, Any]  # the JSON answered
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
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.files: dict[str, UploadedFile] = {}
        self.responses: list[ResponsePost] = []
        self.memberships: dict[str, list[str]] = {}
        self.conversations_page_size = 1000  # Slack's largest page
        self._faults: dict[str, deque[_Fault]] = {}
        self._ts = itertools.count(_FIRST_TS, 100)
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
        return [call for call in self.calls if call.method == method]

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
                    self.calls.append(Call(method, params, headers, request.method, 0, {}))
                    return _dropped(request)
                body = {"ok": False, "error": exc.error, **exc.extra}
                if retry_after is not None:
                    status, extra_headers = 429, {"Retry-After": str(retry_after)}
        self.calls.append(Call(method, params, headers, request.method, status, body))
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
        faults = self._faults.get("upload")
        if faults:
            fault = faults.popleft()
            if fault.drop:
                return _dropped(request)
            return web.Response(status=fault.status, text=fault.error)
        upload = self.files.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="unknown upload URL")
        upload.data = await request.read()
        return web.Response(text=f"OK - {len(upload.data)}")

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
        micros = next(self._ts)
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
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "ts": ts,
            "team": TEAM_ID,
            **content,
        }
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
        done = []
        for item in items:
            upload = self.files.get(item.get("id", "")) if isinstance(item, dict) else None
            if upload is None or upload.data is None:
                raise _APIError("file_not_found")
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
                    "size": len(upload.data),
                    "user": BOT_USER_ID,
                    "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/"
                    f"{BOT_USER_ID}/{upload.file_id}/{upload.filename}",
                }
            )
        return {"files": done}

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

    def _users_conversations(self, params: Mapping[str, Any]) -> dict[str, Any]:
        try:
            limit = int(params.get("limit") or 100)
        except ValueError:
            raise _APIError("invalid_limit") from None
        if limit < 1:
            raise _APIError("invalid_limit")
        limit = min(limit, self.conversations_page_size)
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


def _dropped(request: web.Request) -> web.Response:
    """Close the connection unanswered: the client sees it disconnect."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)  # never reaches the client


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
    return content


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
