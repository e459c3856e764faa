"""The door's own UDP exchange and stub resolution (checks.net.door.exchange_udp,
Network._resolve), against tests/support/nanodns servers on loopback: the
transport and the turn of nameservers are ours, the messages dnspython's."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.nameserver
import dns.query
import dns.rcode
import dns.resolver
import dns.rrset
import pytest

from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.errors import NXDomain, ResolverFailure, ResolverTimeout
from checks.core.targets import TargetPolicy, parse_networks
from checks.net.door import Network, _parsed, exchange_udp, nameservers
from tests.support import nanodns
from tests.support.nanodns import NanoDNS, reply, zone

RECORDS = {("example.test.", "A"): ["192.0.2.1"], ("example.test.", "MX"): ["10 mx.example.test."]}
BIG = [f'"chunk {i:02d} {"x" * 60}"' for i in range(30)]  # about 2 kB: no UDP answer holds it


def door(server: NanoDNS, dns_timeout: float = 2.0) -> Network:
    return Network(
        EngineConfig(
            nameservers=(Nameserver(server.address, server.port),),
            policy=TargetPolicy(parse_networks([server.address])),
            timeouts=Timeouts(dns=dns_timeout, check=10),
        )
    )


def question(name: str = "example.test", rdtype: str = "A") -> dns.message.Message:
    return dns.message.make_query(name, rdtype, payload=1232)


class _DecoyFirst(nanodns._Protocol):
    """Sends, before each reply, a reply with the ID off by one and another
    address: a datagram from the right server that answers no query of ours."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        decoy = reply(query, answers=[f"{query.question[0].name} 300 IN A 192.0.2.66"])
        decoy.id = (query.id + 1) % 65536
        assert self.transport is not None
        self.transport.sendto(decoy.to_wire(), addr)
        super().datagram_received(data, addr)


@pytest.fixture
def decoys(monkeypatch: pytest.MonkeyPatch) -> None:
    """NanoDNS servers started under this fixture send a decoy first."""
    monkeypatch.setattr(nanodns, "_Protocol", _DecoyFirst)


def truncated(query: dns.message.Message) -> dns.message.Message:
    """What a server sends when the answer does not fit: no records, TC set."""
    response = reply(query)
    response.flags |= dns.flags.TC
    return response


def big(query: dns.message.Message) -> dns.message.Message:
    name = query.question[0].name
    return reply(query, answers=[f"{name} 300 IN TXT {text}" for text in BIG])


@asynccontextmanager
async def tcp_twin(
    server: NanoDNS, handler: Callable[[dns.message.Message], dns.message.Message]
) -> AsyncIterator[list[dns.message.Message]]:
    """A DNS-over-TCP server on `server`'s address and port: the queries it got."""
    queries: list[dns.message.Message] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int.from_bytes(await reader.readexactly(2), "big")
        query = dns.message.from_wire(await reader.readexactly(length))
        queries.append(query)
        wire = handler(query).to_wire(max_size=65535)
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(serve, server.address, server.port)
    async with listener:
        yield queries


def closed_port(address: str) -> int:
    """A UDP port on `address` where nothing listens (it answers ICMP unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
    return port


# -- exchange_udp ------------------------------------------------------------------------


async def test_an_answer_comes_back_over_udp() -> None:
    with NanoDNS(zone(RECORDS)) as server:
        query = question()
        response, tcp = await exchange_udp(query, server.address, server.port, 2.0)
    assert not tcp and query.is_response(response)
    assert [r.to_text() for rs in response.answer for r in rs] == ["192.0.2.1"]
    assert len(server.queries) == 1 and server.queries[0].id == query.id


@pytest.mark.usefixtures("decoys")
async def test_a_datagram_with_the_wrong_id_is_ignored() -> None:
    with NanoDNS(zone(RECORDS)) as server:
        response, _ = await exchange_udp(question(), server.address, server.port, 2.0)
    assert [r.to_text() for rs in response.answer for r in rs] == ["192.0.2.1"]


@pytest.mark.usefixtures("decoys")
async def test_strict_takes_the_first_datagram_as_the_answer() -> None:
    with NanoDNS(zone(RECORDS)) as server, pytest.raises(dns.query.BadResponse):
        await exchange_udp(question(), server.address, server.port, 2.0, strict=True)


async def test_garbage_is_ignored_unless_strict() -> None:
    garbage = b"\x00\x01\x81\x80" + b"garbage" * 3  # a response's flags, TC clear
    with NanoDNS(lambda q: garbage) as server:
        started = time.monotonic()
        with pytest.raises(dns.exception.Timeout):
            await exchange_udp(question(), server.address, server.port, 0.3)
        assert 0.3 <= time.monotonic() - started < 1.0
        with pytest.raises(dns.exception.FormError):
            await exchange_udp(question(), server.address, server.port, 2.0, strict=True)


async def test_a_truncated_answer_is_asked_again_over_tcp() -> None:
    with NanoDNS(truncated) as server:
        async with tcp_twin(server, big) as tcp_queries:
            query = question(rdtype="TXT")
            response, tcp = await exchange_udp(query, server.address, server.port, 2.0)
    assert tcp and not response.flags & dns.flags.TC
    assert [r.to_text() for rs in response.answer for r in rs] == BIG
    assert len(server.queries) == 1 and [q.id for q in tcp_queries] == [query.id]


async def test_silence_is_dnspythons_timeout_within_the_time_given() -> None:
    with NanoDNS(lambda q: None) as server:
        started = time.monotonic()
        with pytest.raises(dns.exception.Timeout):
            await exchange_udp(question(), server.address, server.port, 0.3)
    assert 0.3 <= time.monotonic() - started < 1.0


# -- the resolver behind Network.query ------------------------------------------------------


def test_the_configured_nameservers_are_asked_in_order() -> None:
    config = EngineConfig(nameservers=(Nameserver("127.1.0.99", 5353), Nameserver("::1", 53)))
    assert nameservers(config) == (("127.1.0.99", 5353), ("::1", 53))


def test_the_system_resolvers_servers_keep_their_addresses_and_ports() -> None:
    system = dns.resolver.Resolver()  # /etc/resolv.conf; nothing is sent
    expected = [
        (ns, system.port) if isinstance(ns, str) else (ns.address, ns.port)
        for ns in system.nameservers
        if isinstance(ns, str | dns.nameserver.Do53Nameserver)
    ]
    assert expected and list(nameservers(EngineConfig())) == expected


def test_no_resolv_conf_means_no_nameserver_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(self: dns.resolver.Resolver, f: str = "") -> None:
        raise dns.resolver.NoResolverConfiguration("no /etc/resolv.conf")

    monkeypatch.setattr(dns.resolver.Resolver, "read_resolv_conf", missing)
    assert nameservers(EngineConfig()) == ()


async def test_without_nameservers_a_lookup_fails_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("checks.net.door.nameservers", lambda config: ())
    with pytest.raises(ResolverFailure) as info:
        await Network(EngineConfig()).query("example.test", "A")
    assert str(info.value).endswith("no nameserver to ask")


async def test_a_lookup_gets_its_answer() -> None:
    with NanoDNS(zone(RECORDS)) as server:
        answer = await door(server).query("example.test", "MX")
    assert answer.texts() == ["10 mx.example.test."] and answer.ttl == 300


@pytest.mark.usefixtures("decoys")
async def test_a_lookup_ignores_the_wrong_id_and_takes_the_answer() -> None:
    with NanoDNS(zone(RECORDS)) as server:
        answer = await door(server).query("example.test", "A")
    assert answer.texts() == ["192.0.2.1"]
    assert len(server.queries) == 1  # no retry: the real answer was waited for


async def test_a_truncated_lookup_is_retried_over_tcp_by_the_resolver() -> None:
    with NanoDNS(truncated) as server:
        async with tcp_twin(server, big) as tcp_queries:
            answer = await door(server).query("example.test", "TXT")
    assert answer.texts() == BIG
    assert len(server.queries) == 1 and len(tcp_queries) == 1


async def test_silence_is_retried_then_a_timeout_within_the_lifetime() -> None:
    with NanoDNS(lambda q: None) as server:
        started = time.monotonic()
        with pytest.raises(ResolverTimeout) as info:
            await door(server, dns_timeout=1.0).query("example.test", "A")
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.5 and "no answer within 1 s" in str(info.value)
    assert len(server.queries) == 2  # two attempts of half the lifetime each, as dnspython does


async def test_a_closed_port_is_silence_as_before_not_a_failure() -> None:
    address = "127.1.0.99"
    config = EngineConfig(
        nameservers=(Nameserver(address, closed_port(address)),),
        timeouts=Timeouts(dns=0.3, check=10),
    )
    with pytest.raises(ResolverTimeout):
        await Network(config).query("example.test", "A")


async def test_nxdomain_still_raises() -> None:
    with NanoDNS(zone(RECORDS)) as server, pytest.raises(NXDomain) as info:
        await door(server).query("nothere.example.test", "A")
    assert "NXDOMAIN" in str(info.value)


# -- the direct questions ------------------------------------------------------------------


@pytest.mark.usefixtures("decoys")
async def test_a_server_asked_directly_is_reported_for_a_wrong_id_as_before() -> None:
    with (
        NanoDNS(zone(RECORDS, authoritative=True)) as server,
        pytest.raises(ResolverFailure) as info,
    ):
        await door(server).ask_server(server.address, "example.test", "A", server.port)
    assert str(info.value) == (
        f"{server.address}: A DNS query response does not respond to the question asked"
    )


async def test_a_server_asked_directly_answers_over_tcp_when_truncated() -> None:
    with NanoDNS(truncated) as server:
        async with tcp_twin(server, big):
            answer = await door(server).ask_server(
                server.address, "example.test", "TXT", server.port
            )
    assert answer.tcp and [r.to_text() for r in answer.records()] == BIG


async def test_a_signed_lookup_answers_over_tcp_when_truncated() -> None:
    with NanoDNS(truncated) as server:
        async with tcp_twin(server, big):
            answer = await door(server).query_dnssec("example.test", "TXT")
    assert answer.tcp and answer.server == f"{server.address}:{server.port}"
    assert [r.to_text() for rs in answer.answer for r in rs] == BIG


# -- each answer parsed once ----------------------------------------------------------------


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the datagrams dnspython parsed, from an empty memo."""
    sizes: list[int] = []
    real = dns.message.from_wire

    def counted(wire: bytes, *args: Any, **kwargs: Any) -> dns.message.Message:
        if len(wire) > 2 and wire[2] & 0x80:  # a response (NanoDNS parses the queries)
            sizes.append(len(wire))
        return real(wire, *args, **kwargs)

    monkeypatch.setattr(dns.message, "from_wire", counted)
    _parsed.cache_clear()
    return sizes


async def test_an_answer_seen_again_is_not_parsed_again(parses: list[int]) -> None:
    with NanoDNS(zone(RECORDS)) as server:
        first, second = question(), question()
        assert first.id != second.id
        one, _ = await exchange_udp(first, server.address, server.port, 2.0)
        two, _ = await exchange_udp(second, server.address, server.port, 2.0)
    assert len(parses) == 1  # the server's two datagrams differ only in their IDs
    assert (one.id, two.id) == (first.id, second.id)
    assert first.is_response(one) and second.is_response(two)
    assert one.answer == two.answer and [r.to_text() for r in two.answer[0]] == ["192.0.2.1"]


async def test_a_changed_answer_is_read_afresh(parses: list[int]) -> None:
    """What the memo never does: keep an answer the server no longer gives
    (the record an on-call engineer just fixed)."""
    records = dict(RECORDS)
    with NanoDNS(zone(records)) as server:
        before = await door(server).query("example.test", "A")
        records[("example.test.", "A")] = ["192.0.2.2"]  # the server answers from the dict
        after = await door(server).query("example.test", "A")
    assert before.texts() == ["192.0.2.1"] and after.texts() == ["192.0.2.2"]
    assert len(parses) == 2


async def test_a_datagram_bigger_than_asked_for_is_not_kept(parses: list[int]) -> None:
    """A hostile server's 64 kB datagrams cannot fill the memo: only answers
    within the 1,232 bytes the query offers are kept."""
    with NanoDNS(lambda query: big(query).to_wire(max_size=65535)) as server:
        for _ in range(2):
            response, tcp = await exchange_udp(
                question(rdtype="TXT"), server.address, server.port, 2.0
            )
            assert not tcp and [r.to_text() for rs in response.answer for r in rs] == BIG
    assert len(parses) == 2 and min(parses) > 1232


# -- the turn of nameservers ------------------------------------------------------------------


def two_servers(first: NanoDNS, second: NanoDNS, dns_timeout: float = 2.0) -> Network:
    return Network(
        EngineConfig(
            nameservers=(
                Nameserver(first.address, first.port),
                Nameserver(second.address, second.port),
            ),
            timeouts=Timeouts(dns=dns_timeout, check=10),
        )
    )


async def test_a_refusing_nameserver_is_dropped_for_the_next() -> None:
    with (
        NanoDNS(lambda q: reply(q, dns.rcode.REFUSED)) as refusing,
        NanoDNS(zone(RECORDS)) as good,
    ):
        net = two_servers(refusing, good)
        assert (await net.query("example.test", "A")).texts() == ["192.0.2.1"]
        assert (await net.query("example.test", "MX")).texts() == ["10 mx.example.test."]
    assert len(refusing.queries) == 2 and len(good.queries) == 2  # asked first each time


async def test_a_silent_nameserver_costs_one_attempt_then_the_next_answers() -> None:
    with NanoDNS(lambda q: None) as silent, NanoDNS(zone(RECORDS)) as good:
        started = time.monotonic()
        answer = await two_servers(silent, good, dns_timeout=1.0).query("example.test", "A")
        elapsed = time.monotonic() - started
    assert answer.texts() == ["192.0.2.1"] and len(silent.queries) == 1
    assert 0.5 <= elapsed < 0.9  # one attempt of half the lifetime


async def test_when_every_nameserver_fails_each_is_named() -> None:
    with (
        NanoDNS(lambda q: reply(q, dns.rcode.REFUSED)) as refusing,
        NanoDNS(lambda q: reply(q, dns.rcode.SERVFAIL)) as failing,
        pytest.raises(ResolverFailure) as info,
    ):
        await two_servers(refusing, failing).query("example.test", "A")
    assert str(info.value).endswith(
        f"REFUSED from {refusing.address}:{refusing.port}; "
        f"SERVFAIL from {failing.address}:{failing.port}"
    )


async def test_a_cname_chain_is_followed_to_its_records() -> None:
    def chain(query: dns.message.Message) -> dns.message.Message:
        assert query.question[0].name.to_text() == "www.example.test."
        return reply(
            query,
            answers=[
                "www.example.test. 60 IN CNAME web.example.test.",
                "web.example.test. 120 IN A 192.0.2.7",
            ],
        )

    with NanoDNS(chain) as server:
        answer = await door(server).query("www.example.test", "A")
    assert answer.texts() == ["192.0.2.7"] and answer.ttl == 120
    assert answer.via_cname and answer.canonical_name == "web.example.test"


async def test_each_lookup_is_a_stub_resolvers_query_with_its_own_id() -> None:
    with NanoDNS(zone(RECORDS)) as server:
        net = door(server)
        await asyncio.gather(net.query("example.test", "A"), net.query("example.test", "MX"))
        await door(server).query("example.test", "A")  # another check asks it again
    assert len(server.queries) == 3 and len({q.id for q in server.queries}) == 3
    for query in server.queries:
        assert query.flags & dns.flags.RD and not query.flags & dns.flags.CD
        assert (query.edns, query.payload) == (0, 1232)


def with_authority(query: dns.message.Message) -> dns.message.Message:
    """An answer with the zone's NS in authority and their address in additional,
    as an authoritative server or a chatty resolver sends it."""
    name = query.question[0].name
    response = reply(query, answers=[f"{name} 300 IN A 192.0.2.1"])
    response.authority.append(
        dns.rrset.from_text("example.test.", 300, "IN", "NS", "ns.example.test.")
    )
    response.additional.append(
        dns.rrset.from_text("ns.example.test.", 300, "IN", "A", "192.0.2.53")
    )
    return response


async def test_a_stub_lookup_reads_the_answer_section_alone() -> None:
    with NanoDNS(with_authority) as server:
        whole, _ = await exchange_udp(question(), server.address, server.port, 2.0)
        lean, _ = await exchange_udp(question(), server.address, server.port, 2.0, answer_only=True)
        answer = await door(server).query("example.test", "A")
    assert [rs.to_text() for rs in whole.authority] == ["example.test. 300 IN NS ns.example.test."]
    assert len(whole.additional) == 1 and whole.edns == 0
    assert lean.answer == whole.answer and lean.authority == lean.additional == []
    assert answer.texts() == ["192.0.2.1"]


async def test_an_error_answer_is_read_whole_even_for_a_stub_lookup() -> None:
    def nxdomain(query: dns.message.Message) -> dns.message.Message:
        response = reply(query, dns.rcode.NXDOMAIN)
        response.authority.append(
            dns.rrset.from_text("example.test.", 300, "IN", "SOA", "ns. host. 1 2 3 4 5")
        )
        return response

    with NanoDNS(nxdomain) as server:
        response, _ = await exchange_udp(
            question(), server.address, server.port, 2.0, answer_only=True
        )
    assert response.rcode() == dns.rcode.NXDOMAIN and len(response.authority) == 1
