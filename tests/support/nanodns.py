"""A tiny real DNS server over UDP, for answers NSD will not give.

Subclass-free: pass a `handler(query) -> bytes | dns.message.Message | None`.
Returning None drops the query (a server that never answers); returning bytes
sends them as they are (garbage, truncated packets). It runs on its own event
loop thread, so it serves sync and async tests alike.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Handler = Callable[[dns.message.Message], "bytes | dns.message.Message | None"]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler, queries: list[dns.message.Message]) -> None:
        self.handler = handler
        self.queries = queries
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        self.queries.append(query)
        reply = self.handler(query)
        if reply is None or self.transport is None:
            return
        wire = reply if isinstance(reply, bytes) else reply.to_wire()
        self.transport.sendto(wire, addr)


class NanoDNS:
    """`with NanoDNS(handler) as server: server.address, server.port`."""

    def __init__(self, handler: Handler, address: str = "127.1.0.99", port: int = 0) -> None:
        self.handler = handler
        self.address = address
        self.port = port
        self.queries: list[dns.message.Message] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._transport: asyncio.DatagramTransport | None = None

    def __enter__(self) -> NanoDNS:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
        self._transport = future.result(timeout=5)
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    async def _close(self) -> None:
        assert self._transport is not None
        self._transport.close()
        await asyncio.sleep(0)  # the transport's socket closes on the next loop turn

    async def _open(self) -> asyncio.DatagramTransport:
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self.handler, self.queries), local_addr=(self.address, self.port)
        )
        return transport

    def __exit__(self, *exc: object) -> None:
        if self._transport is not None:
            # Closed and its socket released before this returns, so the next
            # server may bind the same address and port at once.
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def reply(
    query: dns.message.Message, rcode: int = 0, answers: Iterable[str] = ()
) -> dns.message.Message:
    """A response to `query` with `rcode` and answer records given as zone-file
    text (`"example.test. 300 IN MX 10 mx.example.test."`)."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    for text in answers:
        name, ttl, rdclass, rdtype, rdata = text.split(None, 4)
        response.answer.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata))
    return response


def zone(
    records: dict[tuple[str, str], list[str]], *, authoritative: bool = False, ttl: int = 300
) -> Handler:
    """A handler that answers from `records`, {(owner with final dot, type):
    [rdata text]}: NXDOMAIN for a name it does not know, an empty answer for a
    known name without that type, SERVFAIL for names under `broken.`; with the
    AA flag when `authoritative`, else RA (a resolver's answer)."""

    def answer(query: dns.message.Message) -> dns.message.Message:
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        if name.startswith("broken."):
            response = reply(query, dns.rcode.SERVFAIL)
        elif not any(n == name for n, _ in records):
            response = reply(query, dns.rcode.NXDOMAIN)
        else:
            found = records.get((name, rdtype), [])
            response = reply(query, answers=[f"{name} {ttl} IN {rdtype} {r}" for r in found])
        response.flags |= dns.flags.AA if authoritative else dns.flags.RA
        return response

    return answer
