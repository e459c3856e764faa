"""HTTPS (and HTTP) fetches through the network door.

MTA-STS policies and client autoconfiguration files live on web servers, at
URLs strangers write (DNS records, autodiscover redirects, Location headers,
profile links). A fetch reads the URL's host the way a browser does
(`checks.core.urls`: full-width digits, `127.1`, `2130706433`, percent-encoding...
all become one canonical host), resolves a name on the engine's resolver
(never the system's), and has the door open the connection to an address the
target policy allowed (`Network.open_socket`: the same policy check,
per-address lock, connection budget and transcript as SMTP, IMAP and POP3).
No HTTP library resolves or connects on its own: h11 only parses what passes
over the door's socket, and the certificate is verified against the system
store plus `--ca-file` for the host name. Time and bytes are bounded, and the
exchange goes to the probe's transcript. Redirects are followed by hand (at
most `redirects` hops, each parsed, resolved and checked like the first).

Failures are translated into `checks.core.errors` here, as dnspython's are in
`checks.net.door`.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urljoin

import h11

from checks.core.errors import (
    BudgetExceeded,
    ConnectFailed,
    ConnectionClosed,
    ConnectRefused,
    ConnectTimeout,
    DNSError,
    MailcheckError,
    ProtocolViolation,
    ReadTimeout,
    ResolverFailure,
    TargetRefused,
    TLSFailed,
)
from checks.core.model import Target
from checks.core.urls import HTTPURL, parse_http_url
from checks.net.door import Network, note

USER_AGENT = "mailcheck (+https://github.com/mailcheck; diagnosis)"
DEFAULT_MAX_BYTES = 64 * 1024
MAX_HEAD = 16 * 1024  # bytes of status line and headers
MAX_ADDRESSES = 4  # addresses of one host tried before giving up
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Fetched:
    """One HTTP response, after any redirects we were allowed to follow."""

    url: str  # the URL that answered
    status: int
    reason: str
    content_type: str  # media type only, lower case: "text/plain"
    body: bytes
    redirects: tuple[str, ...] = ()  # the URLs that redirected, in order
    location: str | None = None  # where a redirect we did not follow points
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


async def resolve_allowed(net: Network, host: str) -> list[str]:
    """Addresses of `host` the policy lets us reach. NXDomain or
    ResolverFailure when DNS fails; TargetRefused when every address is
    forbidden; ResolverFailure when the name has no address at all."""
    answers = await asyncio.gather(
        net.query(host, "A"), net.query(host, "AAAA"), return_exceptions=True
    )
    addresses: list[str] = []
    failure: BaseException | None = None
    for answer in answers:
        if isinstance(answer, BaseException):
            if not isinstance(answer, DNSError):
                raise answer
            failure = failure or answer
        else:
            addresses.extend(r.to_text() for r in answer.records)
    if not addresses:
        if failure is not None:
            raise failure
        raise ResolverFailure(host, "A", f"{host} has no A or AAAA record")
    allowed = []
    refusal: TargetRefused | None = None
    for address in addresses:
        try:
            net.policy.check(address)
        except TargetRefused as exc:
            refusal = refusal or exc
        else:
            allowed.append(address)
    if not allowed and refusal is not None:
        raise refusal
    return allowed


@functools.lru_cache(maxsize=8)
def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's roots plus the operator's CA file, hostname checking on.
    Made once per process: loading the system store costs tens of milliseconds
    of CPU, which every other probe of the check would wait out."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    return context


async def fetch(
    net: Network,
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    redirects: int = 0,
    data: bytes | None = None,
    content_type: str = "text/xml; charset=utf-8",
) -> Fetched:
    """GET `url` through the door (POST `data` when given). A response of any
    status is returned (the caller judges it); failures to get one raise
    `checks.core.errors`: NXDomain / ResolverFailure, TargetRefused, ConnectRefused
    / ConnectTimeout / ConnectFailed, TLSFailed (certificate or handshake),
    ReadTimeout, and ProtocolViolation (not HTTP, or a body over `max_bytes`).
    A followed 301/302/303 turns a POST into a GET, as browsers do."""
    followed: list[str] = []
    context = ssl_context(net.config.ca_file)
    while True:
        response = await _fetch_one(net, url, context, max_bytes, data, content_type)
        if response.status in _REDIRECTS and response.location is not None:
            if len(followed) >= redirects:
                return replace(response, redirects=tuple(followed))
            followed.append(url)
            url = urljoin(url, response.location)
            if response.status in (301, 302, 303):
                data = None
            continue
        return replace(response, redirects=tuple(followed))


class Reporter(Protocol):
    """What `fetch_reporting` needs of a probe's context (checks.stages.probe.ProbeContext)."""

    @property
    def net(self) -> Network: ...

    def add(self, code: str, *, target: Target, summary: str) -> Any: ...


async def fetch_reporting(ctx: Reporter, url: str, **options: Any) -> Fetched:
    """`fetch`, where an address the target policy refuses (the URL's own host,
    or a redirect's) is also reported as `connect.target.refused`, as the mail
    protocols' probes report theirs. The error is raised all the same."""
    try:
        return await fetch(ctx.net, url, **options)
    except TargetRefused as exc:
        if not isinstance(exc, BudgetExceeded):  # the check reports a spent budget once
            where = exc.url or url
            ctx.add(
                "connect.target.refused",
                target=Target(host=_host_of(where), address=exc.address, protocol="https"),
                summary=f"{where[:200]}: {exc.address} is {exc.reason}; not fetched",
            )
        raise


def _host_of(url: str) -> str | None:
    try:
        return parse_http_url(url).host
    except ProtocolViolation:
        return None


@dataclass(frozen=True)
class _Ask:
    """One request: where, what it sends, and how much of an answer it takes."""

    where: HTTPURL
    data: bytes | None
    content_type: str
    max_bytes: int

    @property
    def method(self) -> str:
        return "GET" if self.data is None else "POST"


async def _fetch_one(
    net: Network,
    url: str,
    context: ssl.SSLContext,
    max_bytes: int,
    data: bytes | None,
    content_type: str,
) -> Fetched:
    ask = _Ask(parse_http_url(url), data, content_type, max_bytes)
    note(f"== {ask.method} {url}")
    started = time.monotonic()
    try:
        if ask.where.literal:
            net.policy.check(ask.where.host)
            addresses = [ask.where.host]
        else:
            addresses = await resolve_allowed(net, ask.where.host)
        result = await _exchange(net, ask, addresses, context)
    except MailcheckError as exc:
        note(f"  -> {exc}")
        if isinstance(exc, TargetRefused) and exc.url is None:
            exc.url = url
        raise
    result = replace(result, url=url)
    elapsed = (time.monotonic() - started) * 1000
    where_to = f", Location: {result.location[:200]}" if result.location else ""
    note(
        f"  -> {result.status} {result.reason[:80]} ({result.content_type or 'no type'}, "
        f"{len(result.body)} bytes) in {elapsed:.1f} ms{where_to}"
    )
    return result


async def _exchange(
    net: Network, ask: _Ask, addresses: list[str], context: ssl.SSLContext
) -> Fetched:
    """One request and its response, over a connection the door opened to the
    first of `addresses` that answers (each checked by the policy, locked and
    counted there): never a name resolved by anyone else."""
    where = ask.where
    failure: MailcheckError | None = None
    for address in addresses[:MAX_ADDRESSES]:
        target = Target(host=where.host, address=address, port=where.port, protocol=where.scheme)
        try:
            async with net.open_socket(target) as sock:
                return await _over(net, sock, ask, context)
        except (ConnectRefused, ConnectTimeout, ConnectFailed) as exc:
            failure = exc  # the next address, as any client would
    assert failure is not None
    raise failure


async def _over(net: Network, sock: socket.socket, ask: _Ask, context: ssl.SSLContext) -> Fetched:
    reply = net.config.timeouts.reply
    tls = ask.where.scheme == "https"
    try:
        async with asyncio.timeout(reply):
            reader, writer = await asyncio.open_connection(
                sock=sock,
                ssl=context if tls else None,
                server_hostname=ask.where.host if tls else None,
            )
    except ssl.SSLCertVerificationError as exc:
        raise TLSFailed(f"certificate not accepted: {_cert_message(exc)}") from exc
    except ssl.SSLError as exc:
        raise TLSFailed(f"TLS handshake failed: {_short(exc)}") from exc
    except TimeoutError as exc:
        raise ReadTimeout(f"no TLS handshake within {reply:g} s") from exc
    except ConnectionError as exc:  # reset or closed by the server: busy, not broken
        raise ConnectionClosed(f"the server closed the connection: {_short(exc)}") from exc
    except OSError as exc:
        raise ConnectFailed(_short(exc)) from exc
    try:
        return await _converse(reader, writer, ask, reply)
    finally:
        writer.transport.abort()  # it owns the door's socket: end it before the door does


async def _converse(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ask: _Ask, reply_timeout: float
) -> Fetched:
    """HTTP/1.1 by h11: its parser bounds the head (MAX_HEAD), we bound the body."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    headers = [
        ("Host", ask.where.authority),
        ("User-Agent", USER_AGENT),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ]
    if ask.data is not None:
        headers += [("Content-Type", ask.content_type), ("Content-Length", str(len(ask.data)))]
    response: h11.Response | None = None
    answered = False  # any byte of a response came
    body = bytearray()
    try:
        request = h11.Request(method=ask.method, target=ask.where.target, headers=headers)
        out = conn.send(request)
        out += conn.send(h11.Data(data=ask.data)) if ask.data else b""
        out += conn.send(h11.EndOfMessage())
        writer.write(out)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    async with asyncio.timeout(reply_timeout):
                        await writer.drain()
                        chunk = await reader.read(65536)
                except TimeoutError:
                    raise ReadTimeout(f"no response within {reply_timeout:g} s") from None
                if not chunk and not answered:  # read the request, then hung up: busy
                    raise ConnectionClosed("the server closed the connection before answering")
                answered = answered or bool(chunk)
                conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > ask.max_bytes:
                    raise ProtocolViolation(f"the response is larger than {ask.max_bytes} bytes")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    except h11.ProtocolError as exc:
        raise ProtocolViolation(f"no valid HTTP response: {_short(exc)}") from exc
    except ConnectionError as exc:  # reset or closed by the server: busy, not broken
        raise ConnectionClosed(f"the server closed the connection: {_short(exc)}") from exc
    except ssl.SSLError as exc:
        raise ProtocolViolation(f"no valid HTTP response: {_short(exc)}") from exc
    if response is None:
        raise ProtocolViolation("no valid HTTP response: the server closed the connection")
    pairs = tuple((k.decode("latin-1"), _header_text(v)) for k, v in response.headers)
    found = dict(pairs)
    return Fetched(
        url=str(ask.where),
        status=response.status_code,
        reason=response.reason.decode("latin-1"),
        content_type=found.get("content-type", "").split(";")[0].strip().lower(),
        body=bytes(body),
        location=found.get("location"),
        headers=pairs,
    )


def _header_text(value: bytes) -> str:
    """A header value as browsers read a Location: UTF-8 when it is, else Latin-1."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _cert_message(error: Any) -> str:
    message = getattr(error, "verify_message", None) or getattr(error, "reason", None)
    return str(message or error)[:300]


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


def curl(net: Network, url: str) -> str:
    """The curl command that repeats a fetch by hand."""
    ca = f" --cacert {net.config.ca_file}" if net.config.ca_file else ""
    return f"curl -sS -D -{ca} '{url}'"
