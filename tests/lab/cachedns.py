"""A recursive resolver's stand-in whose cache still holds an old answer.

After a zone changes, resolvers keep serving what they cached until its TTL
runs out; mailcheck compares what the resolver it is given says with what the
zone's authoritative servers say, and reports the stale answer with the time
it has left. NSD only answers authoritatively and Unbound would cache the
current answer, so this stand-in fakes the one stale cache entry and forwards
everything else to the lab NSD, as a forwarding resolver would.

It is a real server on UDP and TCP (the engine retries over TCP when an
answer is truncated), running its own event loop thread, so sync and async
tests alike can use it as a context manager:

    with StaleCacheResolver() as resolver:
        ...  # point the engine at resolver.address
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .zones import CACHE_RESOLVER_ADDRESS, CACHE_SCENARIO, CACHE_STALE_MX, CACHE_STALE_TTL
from .zones import NS_ADDRESS as UPSTREAM

FORWARD_TIMEOUT = 2.0
START_TIMEOUT = 5.0
# RFC 1035's UDP limit, for a query without EDNS.
CLASSIC_UDP_SIZE = 512

STALE_QUESTION = (
    dns.name.from_text(CACHE_SCENARIO.domain),
    dns.rdatatype.MX,
    dns.rdataclass.IN,
)


class StaleCacheResolver:
    """Serves CACHE_STALE_MX for the cache scenario's MX with CACHE_STALE_TTL
    left, as a cache would (RA set, AA clear); forwards every other question to
    the lab NSD and relays its answer the same way.

    `queries` records (transport, question text) of each query, so a test can
    tell what was asked and over which transport ("udp" or "tcp").
    """

    def __init__(self, address: str = CACHE_RESOLVER_ADDRESS, port: int = 53) -> None:
        self.address = address
        self.port = port
        self.queries: list[tuple[str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> StaleCacheResolver:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(START_TIMEOUT)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(START_TIMEOUT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=START_TIMEOUT)
        self._loop.close()

    async def _open(self) -> None:
        self._udp, _ = await self._loop.create_datagram_endpoint(
            lambda: _UDPProtocol(self), local_addr=(self.address, self.port)
        )
        # With port 0 the system picks the UDP port; TCP takes the same one.
        self.port = self._udp.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(self._serve_tcp, self.address, self.port)

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Any) -> None:
        # The loop keeps only weak references to tasks; hold them until done.
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_udp(self, data: bytes, client: Any) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # not DNS: a resolver drops it too
        response = await self._answer(query, "udp")
        limit = max(query.payload, CLASSIC_UDP_SIZE) if query.edns >= 0 else CLASSIC_UDP_SIZE
        try:
            wire = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            # Too big for the client's buffer: say so, and it asks again over TCP.
            response = _reply(query)
            response.flags |= dns.flags.TC
            wire = response.to_wire()
        if self._udp is not None:
            self._udp.sendto(wire, client)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # a client may send several queries on one connection
                length = int.from_bytes(await reader.readexactly(2), "big")
                query = dns.message.from_wire(await reader.readexactly(length))
                wire = (await self._answer(query, "tcp")).to_wire()
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, dns.exception.DNSException):
            pass  # the client closed the connection, or sent something that is not DNS
        finally:
            writer.close()

    async def _answer(self, query: dns.message.Message, transport: str) -> dns.message.Message:
        if len(query.question) != 1:
            response = _reply(query)
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((transport, f"{question.name} {rdtype}"))
        if (question.name, question.rdtype, question.rdclass) == STALE_QUESTION:
            response = _reply(query)
            response.answer.append(
                dns.rrset.from_text(question.name, CACHE_STALE_TTL, "IN", "MX", CACHE_STALE_MX)
            )
            return response
        try:
            response, _ = await dns.asyncquery.udp_with_fallback(
                query, UPSTREAM, timeout=FORWARD_TIMEOUT
            )
        except (dns.exception.DNSException, OSError):
            # What a resolver says when the authoritative server fails it.
            response = _reply(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        response.flags |= dns.flags.RA
        response.flags &= ~dns.flags.AA  # relayed from a cache, not from the zone
        return response


def _reply(query: dns.message.Message) -> dns.message.Message:
    """An empty response as a recursive resolver sends it: RA set, AA clear."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    return response


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: StaleCacheResolver) -> None:
        self.resolver = resolver

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # Forwarding waits on NSD; answer in a task so queries do not queue.
        self.resolver._spawn(self.resolver._answer_udp(data, addr))
