"""HTTP fetches through the door, against servers that misbehave on purpose.

The well-behaved side (nginx, real certificates) is in
tests/integration/test_web_lab.py; these are what no real web server does.
"""

from __future__ import annotations

import asyncio

import pytest

from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.errors import ConnectionClosed, ProtocolViolation, ReadTimeout, TargetRefused
from checks.core.targets import TargetPolicy, parse_networks
from checks.net import http
from checks.net.door import Network, recording
from tests.support.fakeserver import FakeServer

ADDRESS = "127.1.30.40"


def door(reply: float = 1.0, allow: str = "127.1.30.0/24") -> Network:
    return Network(
        EngineConfig(
            nameservers=(Nameserver("127.1.30.53"),),  # never asked: the URLs are literals
            policy=TargetPolicy(parse_networks([allow])),
            timeouts=Timeouts(connect=1.0, reply=reply, dns=1.0),
        )
    )


def responder(raw: bytes, *, stall: float = 0.0):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if stall:
            await asyncio.sleep(stall)
        writer.write(raw)
        await writer.drain()

    return handle


def response(status: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(head).encode() + body


async def test_a_plain_response_is_read_and_recorded() -> None:
    body = b"version: STSv1\r\nmode: testing\r\n"
    async with FakeServer(
        responder(response("200 OK", body, "Content-Type: text/plain; charset=utf-8")), ADDRESS
    ) as server:
        lines: list[str] = []
        with recording(lines):
            got = await http.fetch(door(), f"http://{ADDRESS}:{server.port}/policy.txt")
    assert (got.status, got.content_type, got.body) == (200, "text/plain", body)
    assert lines[0] == f"== GET http://{ADDRESS}:{server.port}/policy.txt"
    assert lines[1] == f"== http 127.1.30.40:{server.port}/http: connected"  # by the door
    assert "200 OK (text/plain, 31 bytes)" in lines[2]


async def test_garbage_instead_of_http_is_a_protocol_violation() -> None:
    async with FakeServer(responder(b"\x16\x03\x01 not http at all\r\n\r\n"), ADDRESS) as server:
        with pytest.raises(ProtocolViolation, match="no valid HTTP response"):
            await http.fetch(door(), f"http://{ADDRESS}:{server.port}/")


async def test_a_server_that_closes_without_answering_is_a_closed_connection() -> None:
    """What nginx does when it is too busy: it reads the request and closes.
    That is a busy server (ConnectionClosed, inconclusive for the probes), not
    an invalid response; a response cut off midway still is one."""
    async with FakeServer(responder(b""), ADDRESS) as server:
        with pytest.raises(ConnectionClosed, match="closed the connection before answering"):
            await http.fetch(door(), f"http://{ADDRESS}:{server.port}/")
    async with FakeServer(responder(b"HTTP/1.1 200 OK\r\nContent-Ty"), ADDRESS) as server:
        with pytest.raises(ProtocolViolation, match="no valid HTTP response"):
            await http.fetch(door(), f"http://{ADDRESS}:{server.port}/")


async def test_a_body_over_the_limit_is_refused_not_read_whole() -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for _ in range(1000):  # 64 MiB unless we stop reading
            writer.write(b"x" * 65536)
            await writer.drain()

    async with FakeServer(flood, ADDRESS) as server:
        with pytest.raises(ProtocolViolation, match="larger than 1000 bytes"):
            await http.fetch(door(), f"http://{ADDRESS}:{server.port}/", max_bytes=1000)


async def test_a_server_that_never_answers_times_out() -> None:
    async with FakeServer(responder(b"", stall=30), ADDRESS) as server:
        with pytest.raises(ReadTimeout, match=r"no response within 0\.3 s"):
            await http.fetch(door(reply=0.3), f"http://{ADDRESS}:{server.port}/")


async def test_redirects_are_not_followed_unless_allowed() -> None:
    async with FakeServer(
        responder(response("301 Moved", b"", "Location: /elsewhere")), ADDRESS
    ) as server:
        got = await http.fetch(door(), f"http://{ADDRESS}:{server.port}/")
    assert (got.status, got.location, got.redirects) == (301, "/elsewhere", ())


async def test_a_redirect_to_a_forbidden_address_is_refused_before_connecting() -> None:
    async with FakeServer(
        responder(response("302 Found", b"", "Location: http://127.1.31.1:8080/x")), ADDRESS
    ) as server:
        with pytest.raises(TargetRefused, match=r"127\.1\.31\.1"):
            await http.fetch(door(), f"http://{ADDRESS}:{server.port}/", redirects=3)
        assert server.connections == 1


async def test_followed_redirects_are_listed() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if request.startswith(b"GET /final"):
            writer.write(response("200 OK", b"done", "Content-Type: text/plain"))
        else:
            writer.write(response("308 Permanent Redirect", b"", "Location: /final"))
        await writer.drain()

    async with FakeServer(handle, ADDRESS) as server:
        url = f"http://{ADDRESS}:{server.port}/start"
        got = await http.fetch(door(), url, redirects=2)
    assert got.body == b"done" and got.redirects == (url,)
    assert got.url.endswith("/final")


async def test_an_address_literal_outside_the_policy_is_never_contacted() -> None:
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.1"):
        await http.fetch(door(), "https://10.0.0.1/.well-known/mta-sts.txt")


async def test_only_http_urls_are_fetched() -> None:
    with pytest.raises(ProtocolViolation, match="not an http"):
        await http.fetch(door(), "ftp://127.1.30.40/policy")


async def test_a_post_sends_its_body_and_a_303_turns_it_into_a_get() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        body = await reader.readexactly(length)
        seen.append(head.split(b"\r\n")[0] + b" " + body)
        if head.startswith(b"POST"):
            writer.write(response("303 See Other", b"", "Location: /answer"))
        else:
            writer.write(response("200 OK", b"<ok/>", "Content-Type: text/xml"))
        await writer.drain()

    async with FakeServer(handle, ADDRESS) as server:
        url = f"http://{ADDRESS}:{server.port}/autodiscover/autodiscover.xml"
        got = await http.fetch(door(), url, data=b"<Autodiscover/>", redirects=1)
    assert seen == [
        b"POST /autodiscover/autodiscover.xml HTTP/1.1 <Autodiscover/>",
        b"GET /answer HTTP/1.1 ",
    ]
    assert got.body == b"<ok/>" and got.redirects == (url,)
