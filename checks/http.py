"""HTTPS (and HTTP) fetches through the network door.

MTA-STS policies and client autoconfiguration files live on web servers. A
fetch resolves names on the engine's resolver (never the system's), checks
every address against the target policy before connecting, validates the
certificate against the system store plus `--ca-file`, bounds the time and the
bytes a server can make us spend, and writes the exchange to the probe's
transcript. Redirects are followed by hand (at most `redirects` hops, each hop
resolved and checked like the first), so that an address literal in a
Location header cannot slip past the target policy.

aiohttp does the HTTP; its exceptions are translated into `checks.errors`
here, as dnspython's are in `checks.net`.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from checks.errors import (
    ConnectFailed,
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
from checks.net import Network, note
from checks.targets import parse_address

USER_AGENT = "mailcheck (+https://github.com/mailcheck; diagnosis)"
DEFAULT_MAX_BYTES = 64 * 1024
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


class _DoorResolver(AbstractResolver):
    """aiohttp's name resolution, through the door: the engine's resolver,
    then the target policy. The first refusal or DNS error is kept, since
    aiohttp wraps whatever a resolver raises."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.error: MailcheckError | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await resolve_allowed(self.net, host)
        except (DNSError, TargetRefused) as exc:
            self.error = exc
            raise OSError(str(exc)) from exc
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


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
    `checks.errors`: NXDomain / ResolverFailure, TargetRefused, ConnectRefused
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


async def _fetch_one(
    net: Network,
    url: str,
    context: ssl.SSLContext,
    max_bytes: int,
    data: bytes | None,
    content_type: str,
) -> Fetched:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProtocolViolation(f"not an http(s) URL: {url[:200]}")
    host = parts.hostname
    literal = _address_literal(host)
    if literal is not None:  # aiohttp skips the resolver for these
        net.policy.check(literal)
    timeouts = net.config.timeouts
    resolver = _DoorResolver(net)
    connector = aiohttp.TCPConnector(
        resolver=resolver, ssl=context, use_dns_cache=False, force_close=True, limit=1
    )
    client_timeout = aiohttp.ClientTimeout(
        total=None,
        connect=timeouts.connect,
        sock_connect=timeouts.connect,
        sock_read=timeouts.reply,
    )
    started = time.monotonic()
    method = "GET" if data is None else "POST"
    note(f"== {method} {url}")
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=client_timeout,
                trust_env=False,  # no proxies from the environment: the door decides
                headers={"User-Agent": USER_AGENT},
            ) as session,
            session.request(
                method,
                url,
                data=data,
                headers={"Content-Type": content_type} if data is not None else None,
                allow_redirects=False,
            ) as resp,
        ):
            body = await _read_bounded(resp, max_bytes)
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            location = resp.headers.get("Location")
            result = Fetched(
                url=url,
                status=resp.status,
                reason=resp.reason or "",
                content_type=content_type,
                body=body,
                location=location,
                headers=tuple((k, v) for k, v in resp.headers.items()),
            )
    except (DNSError, TargetRefused, ProtocolViolation) as exc:
        note(f"  -> {exc}")
        raise
    except aiohttp.ClientConnectorCertificateError as exc:
        _fail(TLSFailed(f"certificate not accepted: {_cert_message(exc.certificate_error)}"), exc)
    except aiohttp.ClientConnectorDNSError as exc:
        _fail(resolver.error or ResolverFailure(host, "A", _short(exc)), exc)
    except aiohttp.ClientSSLError as exc:
        _fail(TLSFailed(f"TLS handshake failed: {_short(exc)}"), exc)
    except aiohttp.ClientConnectorError as exc:
        if resolver.error is not None:
            _fail(resolver.error, exc)
        if isinstance(exc.os_error, ConnectionRefusedError):
            _fail(ConnectRefused("connection refused"), exc)
        _fail(ConnectFailed(_short(exc)), exc)
    except aiohttp.ConnectionTimeoutError as exc:
        _fail(ConnectTimeout(f"no answer within {timeouts.connect:g} s (filtered?)"), exc)
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        _fail(ReadTimeout(f"no response within {timeouts.reply:g} s"), exc)
    except (aiohttp.ClientError, ValueError) as exc:
        # Garbage instead of HTTP, a connection closed mid-response, bad headers.
        _fail(ProtocolViolation(f"no valid HTTP response: {_short(exc)}"), exc)
    elapsed = (time.monotonic() - started) * 1000
    where = f", Location: {result.location[:200]}" if result.location else ""
    note(
        f"  -> {result.status} {result.reason[:80]} ({result.content_type or 'no type'}, "
        f"{len(result.body)} bytes) in {elapsed:.1f} ms{where}"
    )
    return result


def _fail(error: MailcheckError, cause: BaseException) -> NoReturn:
    note(f"  -> {error}")
    raise error from cause


async def _read_bounded(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ProtocolViolation(f"the response is larger than {max_bytes} bytes")
        chunks.append(chunk)


def _address_literal(host: str) -> str | None:
    try:
        return str(parse_address(host.strip("[]")))
    except MailcheckError:
        return None


def _cert_message(error: Any) -> str:
    message = getattr(error, "verify_message", None) or getattr(error, "reason", None)
    return str(message or error)[:300]


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


def curl(net: Network, url: str) -> str:
    """The curl command that repeats a fetch by hand."""
    ca = f" --cacert {net.config.ca_file}" if net.config.ca_file else ""
    return f"curl -sS -D -{ca} '{url}'"
