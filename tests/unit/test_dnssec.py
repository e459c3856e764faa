"""DNSSEC validation (checks.rules.dnssec) against zones signed by tests.lab.signing,
served over real UDP/TCP by a small in-process stand-in for a recursive resolver."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from checks.core.config import CPULimits, EngineConfig, Nameserver, Timeouts
from checks.core.errors import InputError, ResolverFailure
from checks.core.model import CheckRequest, Stage
from checks.engine import runner
from checks.net.door import Network, recording
from checks.rules import dnssec
from checks.rules.dnssec import ROOT_ANCHORS, Security, Validated, Validator, parse_anchors
from checks.stages import dns as dns_stage
from checks.stages import dnssec as dnssec_stage
from checks.stages.dnssec import validator_for
from tests.lab.nsd import Zone
from tests.lab.signing import BREAKAGES, sign_lab
from tests.support.keytrap import Trap, keytrap_zone, nsec3_records
from tests.support.lagprobe import LagProbe

ADDRESS = "127.1.0.97"  # port 0: the kernel picks; nothing of the lab's lives here
DAY = 86400
NOW = time.time()

CHILDREN = (
    "good",
    "plain",
    "island",
    "expired",
    "notyet",
    "badsig",
    "dsmismatch",
    "stripped",
)
MAIL = ("@ IN MX 10 mx", "mx IN A 127.1.1.2")
ZONES = [
    Zone("test", ("ns IN A 127.1.0.97", *(f"{c} IN NS ns.test." for c in CHILDREN))),
    Zone(
        "good.test",
        (
            *MAIL,
            "alias IN CNAME mx",
            "hop IN CNAME alias",
            "toplain IN CNAME www.plain.test.",
            "tobad IN CNAME badsig.test.",
            "deep IN NS ns.test.",
            # Over 1232 bytes: the UDP answer is truncated and TCP must take over.
            *(f'big IN TXT "{i:02d}{"x" * 180}"' for i in range(8)),
        ),
    ),
    Zone("deep.good.test", ("@ IN MX 10 mx.good.test.",)),
    Zone("plain.test", (*MAIL, "www IN A 127.1.1.3")),
    *(Zone(f"{c}.test", MAIL) for c in CHILDREN if c not in ("good", "plain")),
]
BROKEN = {
    "expired.test": "expired",
    "notyet.test": "not-yet-valid",
    "badsig.test": "badsig",
    "dsmismatch.test": "ds-mismatch",
    "island.test": "island",
}
LAB = sign_lab(ZONES, unsigned={"plain.test"}, broken=BROKEN, now=NOW)

Fault = Callable[[dns.message.Message], "bytes | dns.message.Message | bool | None"]


# -- a recursive resolver's stand-in --------------------------------------------------


class Resolver:
    """Answers like a recursive resolver in front of the lab's zones: data from
    the deepest zone holding the name (DS from the parent side of a cut),
    CNAMEs followed, RRSIGs and NSECs only when DO is set, NXDOMAIN/NODATA
    with the SOA (and its RRSIG) in authority. `strip` names zones whose
    RRSIGs and NSECs it drops (but for DNSKEY and DS answers); `fault` may
    answer a query first (True: fall through). `authoritative` makes it answer
    as NSD does: CNAMEs are followed only within their own zone."""

    def __init__(
        self,
        zones: Iterable[Zone],
        strip: Iterable[str] = (),
        fault: Fault | None = None,
        authoritative: bool = False,
    ) -> None:
        self.zones = {
            dns.name.from_text(z.origin): dns.zone.from_text(
                z.render(), origin=f"{z.origin}.", relativize=False
            )
            for z in zones
        }
        self.strip = {dns.name.from_text(s) for s in strip}
        self.fault = fault
        self.authoritative = authoritative

    def __call__(self, query: dns.message.Message) -> bytes | dns.message.Message | None:
        if self.fault is not None:
            faulted = self.fault(query)
            if faulted is not True:
                return faulted  # type: ignore[return-value]
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        response.flags &= ~dns.flags.AA
        do = bool(query.ednsflags & dns.flags.DO)
        if query.edns >= 0:
            response.use_edns(0, dns.flags.DO if do else 0, 1232)
        question = query.question[0]
        self._resolve(response, question.name, question.rdtype, do, hops=0)
        return response

    def _zone(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.zone.Zone | None:
        holding = [o for o in self.zones if name.is_subdomain(o)]
        if rdtype == dns.rdatatype.DS and name in holding and len(holding) > 1:
            holding.remove(name)  # a DS lives on the parent side of the cut
        return self.zones[max(holding, key=len)] if holding else None

    def _resolve(
        self,
        response: dns.message.Message,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        do: bool,
        hops: int,
    ) -> None:
        zone = self._zone(name, rdtype)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        signed = do and zone.origin not in self.strip
        node = zone.get_node(name)
        if node is not None:
            if node.get_rdataset(dns.rdataclass.IN, rdtype) is not None:
                keep = signed or (do and rdtype in (dns.rdatatype.DNSKEY, dns.rdatatype.DS))
                self._add(response.answer, zone, name, rdtype, keep)
                return
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is not None and rdtype != dns.rdatatype.CNAME and hops < 8:
                self._add(response.answer, zone, name, dns.rdatatype.CNAME, signed)
                target = cname[0].target
                if not self.authoritative or self._zone(target, rdtype) is zone:
                    self._resolve(response, target, rdtype, do, hops + 1)
                return
        elif not any(n.is_subdomain(name) for n in zone.nodes):  # not even an empty non-terminal
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert zone.origin is not None
        self._add(response.authority, zone, zone.origin, dns.rdatatype.SOA, signed)
        if signed:
            covering = max(
                (n for n, nd in zone.nodes.items() if n <= name and _has(nd, dns.rdatatype.NSEC)),
                default=None,
            )
            if covering is not None:
                self._add(response.authority, zone, covering, dns.rdatatype.NSEC, True)

    @staticmethod
    def _add(
        section: list[Any],
        zone: dns.zone.Zone,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        sigs: bool,
    ) -> None:
        """The rrset, and the RRSIGs over it when `sigs`."""
        node = zone.get_node(name)
        assert node is not None
        wanted = [(rdtype, dns.rdatatype.NONE)]
        if sigs:
            wanted.append((dns.rdatatype.RRSIG, rdtype))
        for what, covers in wanted:
            rdataset = node.get_rdataset(dns.rdataclass.IN, what, covers)
            if rdataset is not None:
                section.append(dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))


def _has(node: Any, rdtype: dns.rdatatype.RdataType) -> bool:
    return node.get_rdataset(dns.rdataclass.IN, rdtype) is not None


class Server:
    """UDP and TCP on one address and port, in a thread; truncates big UDP answers."""

    def __init__(self, handler: Resolver, address: str = ADDRESS) -> None:
        self.handler = handler
        self.address = address
        self.port = 0
        self.queries: list[tuple[str, str, str]] = []  # (transport, name, type)
        self.messages: list[dns.message.Message] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._closers: list[Callable[[], None]] = []
        self._conversations: set[asyncio.Task[None]] = set()

    def __enter__(self) -> Server:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _close(self) -> None:
        for close in self._closers:
            close()
        for task in self._conversations:
            task.cancel()
        await asyncio.gather(*self._conversations, return_exceptions=True)

    def count(self, rdtype: str, name: str | None = None) -> int:
        return sum(1 for _, n, t in self.queries if t == rdtype and name in (None, n))

    def _answer(self, wire: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        self.messages.append(query)
        question = query.question[0]
        self.queries.append(
            (transport, question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        )
        reply = self.handler(query)
        if reply is None or isinstance(reply, bytes):
            return reply
        out = reply.to_wire(max_size=65535)
        limit = max(query.payload, 512) if query.edns >= 0 else 512
        if transport == "udp" and len(out) > limit:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC
            out = truncated.to_wire()
        return out

    async def _open(self) -> None:
        server = self

        class UDP(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                out = server._answer(data, "udp")
                if out is not None:
                    self.transport.sendto(out, addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._conversations.add(task)
            try:
                while True:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    out = server._answer(await reader.readexactly(size), "tcp")
                    if out is not None:
                        writer.write(len(out).to_bytes(2, "big") + out)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
                self._conversations.discard(task)

        for _ in range(5):  # the UDP port the kernel picks may be taken on TCP
            udp, _ = await self._loop.create_datagram_endpoint(UDP, local_addr=(self.address, 0))
            port = udp.get_extra_info("sockname")[1]
            try:
                stream = await asyncio.start_server(tcp, self.address, port)
            except OSError:
                udp.close()
                continue
            self.port = port
            self._closers = [udp.close, stream.close]
            return
        raise OSError("no port free for both UDP and TCP")


@pytest.fixture
def resolver() -> Iterator[Server]:
    with Server(Resolver(LAB.zones, strip=["stripped.test"])) as server:
        yield server


def door(
    server: Server,
    anchors: Iterable[str] | None = LAB.anchors,
    dns_timeout: float = 2.0,
    cpu: CPULimits | None = None,
) -> Network:
    return Network(
        EngineConfig(
            nameservers=(Nameserver(server.address, server.port),),
            timeouts=Timeouts(dns=dns_timeout, check=10),
            trust_anchors=None if anchors is None else tuple(anchors),
            cpu=cpu or CPULimits(),
        )
    )


async def check(server: Server, name: str, rdtype: str = "MX", **kw: Any) -> Validated:
    return await validator_for(door(server, **kw)).validate(name, rdtype)


def day(offset: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(int(NOW + offset)))


# -- trust anchors --------------------------------------------------------------------


def test_root_anchors_are_the_iana_ksks() -> None:
    anchors = parse_anchors(ROOT_ANCHORS)
    assert list(anchors) == [dns.name.root]
    ds = {d.key_tag: d for d in anchors[dns.name.root].ds}
    assert sorted(ds) == [20326, 38696]
    assert all(d.algorithm == 8 and d.digest_type == 2 for d in ds.values())
    assert ds[20326].digest.hex().upper() == (
        "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"
    )
    assert ds[38696].digest.hex().upper() == (
        "683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16"
    )


def test_anchors_take_ds_and_dnskey_lines_with_ttls_and_comments() -> None:
    key = "test. 3600 IN DNSKEY 257 3 13 " + "A" * 88
    anchors = parse_anchors(
        ["; the lab", "", *LAB.anchors, key, "good.test DS 1 13 2 " + "ab" * 32]
    )
    test = anchors[dns.name.from_text("test.")]
    assert len(test.ds) == 1 and len(test.keys) == 1
    assert anchors[dns.name.from_text("good.test.")].ds[0].key_tag == 1


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("garbage", "expected"),
        ("test. IN A 127.0.0.1", "only DS and DNSKEY"),
        ("test. IN DS 1 13 2 not-hex", "bad DS data"),
        ("test. IN DNSKEY 257 3 13 !!!", "bad DNSKEY data"),
        ("test. IN DS", "has no data"),
        ("a..b IN DS 1 13 2 00", "not a DNS name"),
    ],
)
def test_anchors_reject_garbage_naming_the_line(line: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        parse_anchors([LAB.anchors[0], line])
    assert "line 2" in str(info.value) and fragment in str(info.value)


def test_a_bad_configured_anchor_fails_the_validator_not_a_lookup() -> None:
    net = Network(EngineConfig(trust_anchors=("nonsense",)))
    with pytest.raises(InputError):
        validator_for(net)


# -- the door: DO+CD lookups ----------------------------------------------------------


async def test_query_dnssec_sets_do_and_cd_and_keeps_nxdomain(resolver: Server) -> None:
    net = door(resolver)
    lines: list[str] = []
    with recording(lines):
        answer = await net.query_dnssec("nothere.good.test.", "A")
        again = await net.query_dnssec("NOTHERE.good.test", "a")
    assert answer is again and resolver.count("A") == 1
    sent = resolver.messages[0]
    assert sent.flags & dns.flags.CD and sent.flags & dns.flags.RD
    assert sent.ednsflags & dns.flags.DO and sent.payload == 1232
    assert answer.rcode == dns.rcode.NXDOMAIN and answer.answer == ()
    kinds = {dns.rdatatype.to_text(r.rdtype) for r in answer.authority}
    assert kinds == {"SOA", "NSEC", "RRSIG"}
    assert all("A nothere.good.test +dnssec -> NXDOMAIN" in line for line in lines)


async def test_query_dnssec_falls_back_to_tcp(resolver: Server) -> None:
    answer = await door(resolver).query_dnssec("big.good.test", "TXT")
    assert answer.tcp and [t for t, n, _ in resolver.queries if n == "big.good.test."] == [
        "udp",
        "tcp",
    ]
    assert answer.find(dns.name.from_text("big.good.test"), dns.rdatatype.TXT) is not None


async def test_query_dnssec_translates_failures() -> None:
    def servfail(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response

    with (
        Server(Resolver(LAB.zones, fault=servfail)) as server,
        pytest.raises(ResolverFailure) as info,
    ):
        await door(server).query_dnssec("good.test", "MX")
    assert f"SERVFAIL from {server.address}:{server.port}" in str(info.value)


# -- verdicts -------------------------------------------------------------------------


async def test_a_signed_zone_is_secure_with_the_whole_chain(resolver: Server) -> None:
    v = await check(resolver, "good.test", "MX")
    assert (v.status, v.reason, v.zone) == (Security.SECURE, "", "good.test")
    assert [r.to_text() for r in v.records] == ["10 mx.good.test."]
    assert v.chain[0].startswith("test. DNSKEY tag ") and "matches the trust anchor" in v.chain[0]
    assert v.chain[1].startswith("test. DNSKEY RRSIG by tag ")
    assert any(
        line.startswith("good.test. DS tag ")
        and "alg 13 digest 2 -> DNSKEY tag" in line
        and line.endswith("(signed by test.)")
        for line in v.chain
    )
    assert v.chain[-1].startswith("good.test. MX RRSIG by tag ")
    assert v.chain[-1].endswith(f"valid until {day(30 * DAY)}")


async def test_a_zone_two_cuts_down_is_secure(resolver: Server) -> None:
    v = await check(resolver, "deep.good.test", "MX")
    assert v.status is Security.SECURE and v.zone == "deep.good.test"
    assert any(line.startswith("deep.good.test. DS tag ") for line in v.chain)


async def test_no_ds_at_the_parent_is_insecure(resolver: Server) -> None:
    v = await check(resolver, "plain.test", "MX")
    assert v.status is Security.INSECURE and v.zone == "plain.test"
    assert v.reason == "plain.test. is not signed: test. has no DS record for it"
    assert v.records and any("plain.test. DS: none at test." in line for line in v.chain)


async def test_an_island_of_security_is_insecure_and_said_so(resolver: Server) -> None:
    v = await check(resolver, "island.test", "MX")
    assert v.status is Security.INSECURE
    assert "island.test. publishes DNSKEY records" in v.reason
    assert "test. has no DS record for it" in v.reason and "island of security" in v.reason


async def test_expired_signatures_are_bogus_with_dates(resolver: Server) -> None:
    v = await check(resolver, "expired.test", "MX")
    assert v.status is Security.BOGUS and v.zone == "expired.test"
    assert v.reason.startswith("expired.test. DNSKEY: the RRSIG by tag ")
    assert f"expired on {day(-7 * DAY)}" in v.reason and f"valid from {day(-21 * DAY)}" in v.reason


async def test_signatures_not_yet_valid_are_bogus_with_dates(resolver: Server) -> None:
    v = await check(resolver, "notyet.test", "MX")
    assert v.status is Security.BOGUS
    assert f"is not valid before {day(7 * DAY)}" in v.reason


async def test_a_signature_that_does_not_verify_is_bogus(resolver: Server) -> None:
    v = await check(resolver, "badsig.test", "MX")
    assert v.status is Security.BOGUS
    assert v.reason.startswith("badsig.test. MX: the RRSIG by tag ")
    assert "does not verify" in v.reason
    # The links above held, and say so.
    assert any(line.startswith("badsig.test. DNSKEY RRSIG by tag ") for line in v.chain)
    assert (await check(resolver, "mx.badsig.test", "A")).status is Security.SECURE


async def test_a_ds_matching_no_published_key_is_bogus(resolver: Server) -> None:
    v = await check(resolver, "dsmismatch.test", "MX")
    assert v.status is Security.BOGUS
    assert v.reason.startswith("no DNSKEY of dsmismatch.test. matches its DS at test. (DS tag ")
    assert "dsmismatch.test. publishes DNSKEY tag " in v.reason


async def test_stripped_signatures_are_bogus(resolver: Server) -> None:
    v = await check(resolver, "stripped.test", "MX")
    assert v.status is Security.BOGUS
    assert v.reason.startswith("stripped.test. MX: the answer carries no RRSIG")
    assert "a server or resolver on the path strips DNSSEC records" in v.reason


async def test_a_stripped_denial_is_bogus(resolver: Server) -> None:
    v = await check(resolver, "nothere.stripped.test", "A")
    assert v.status is Security.BOGUS and v.records == ()
    assert "A: NXDOMAIN, but the answer carries no NSEC/NSEC3 records" in v.reason


async def test_nxdomain_and_nodata_take_the_zone_status(resolver: Server) -> None:
    gone = await check(resolver, "nothere.good.test", "A")
    assert (gone.status, gone.records, gone.zone) == (Security.SECURE, (), "good.test")
    denial = gone.chain[-1]
    assert denial.startswith("nothere.good.test. A: NXDOMAIN, denied by ")
    assert "NSEC RRSIG by tag" in denial and denial.endswith("proof itself is not checked)")
    empty = await check(resolver, "_25._tcp.mx.good.test", "TLSA")
    assert empty.status is Security.SECURE and empty.records == ()
    nodata = await check(resolver, "good.test", "TLSA")
    assert nodata.status is Security.SECURE and nodata.records == ()
    unsigned = await check(resolver, "nothere.plain.test", "A")
    assert (unsigned.status, unsigned.zone) == (Security.INSECURE, "plain.test")


async def test_cname_chains_take_the_weakest_link(resolver: Server) -> None:
    both = await check(resolver, "hop.good.test", "A")
    assert both.status is Security.SECURE
    assert [r.to_text() for r in both.records] == ["127.1.1.2"]
    assert any(line.startswith("hop.good.test. CNAME RRSIG") for line in both.chain)
    assert any(line.startswith("alias.good.test. CNAME RRSIG") for line in both.chain)
    assert any(line.startswith("mx.good.test. A RRSIG") for line in both.chain)
    to_plain = await check(resolver, "toplain.good.test", "A")
    assert to_plain.status is Security.INSECURE and to_plain.zone == "good.test"
    assert "plain.test. is not signed" in to_plain.reason
    to_bad = await check(resolver, "tobad.good.test", "MX")
    assert to_bad.status is Security.BOGUS and to_bad.reason.startswith("badsig.test. MX:")


async def test_cnames_an_authoritative_server_does_not_follow_are_followed() -> None:
    with Server(Resolver(LAB.zones, authoritative=True)) as server:
        to_plain = await check(server, "toplain.good.test", "A")
        to_bad = await check(server, "tobad.good.test", "MX")
        in_zone = await check(server, "hop.good.test", "A")
        asked = [n for _, n, t in server.queries if t in ("A", "MX")]
    assert to_plain.status is Security.INSECURE and to_plain.records
    assert to_bad.status is Security.BOGUS and to_bad.reason.startswith("badsig.test. MX:")
    assert in_zone.status is Security.SECURE and in_zone.records
    assert asked.count("www.plain.test.") == 1 and asked.count("badsig.test.") == 1
    assert "mx.good.test." not in asked  # in its own zone: the server followed it


async def test_a_big_answer_over_tcp_validates(resolver: Server) -> None:
    v = await check(resolver, "big.good.test", "TXT")
    assert v.status is Security.SECURE and len(v.records) == 8


async def test_a_dnskey_anchor_works_like_a_ds(resolver: Server) -> None:
    top = next(z for z in LAB.zones if z.origin == "test")
    ksk = next(r for r in top.records if r.startswith("@ 300 IN DNSKEY 257 "))
    v = await check(resolver, "good.test", "MX", anchors=[ksk.replace("@", "test.", 1)])
    assert v.status is Security.SECURE
    assert v.chain[0].startswith("test. DNSKEY tag ") and v.chain[0].endswith("the trust anchor")


async def test_anchors_we_cannot_check_make_the_zone_insecure(resolver: Server) -> None:
    private = ["test. IN DS 4242 253 2 " + "00" * 32]  # algorithm 253: private, unknown to us
    v = await check(resolver, "good.test", "MX", anchors=private)
    assert v.status is Security.INSECURE
    assert v.reason.startswith("test. counts as unsigned: every trust anchor for it uses an")
    assert "DS tag 4242 alg 253 digest 2" in v.reason


# -- indeterminate ----------------------------------------------------------------------


async def test_no_anchor_covering_the_name_is_indeterminate(resolver: Server) -> None:
    other = ["example. IN DS 1 13 2 " + "00" * 32]
    v = await check(resolver, "good.test", "MX", anchors=other)
    assert v.status is Security.INDETERMINATE and v.records
    assert v.reason == "no trust anchor covers good.test. (anchors: example.)"


async def test_the_root_anchor_needs_the_root_zone(resolver: Server) -> None:
    v = await check(resolver, "good.test", "MX", anchors=None)  # the IANA root anchors
    assert v.status is Security.INDETERMINATE
    assert v.reason.startswith("the SOA lookup for . failed: REFUSED from ")


async def test_a_failing_lookup_on_the_chain_is_indeterminate() -> None:
    def fail_dnskey(query: dns.message.Message) -> dns.message.Message | bool:
        q = query.question[0]
        if q.rdtype == dns.rdatatype.DNSKEY and q.name == dns.name.from_text("good.test"):
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        return True

    with Server(Resolver(LAB.zones, fault=fail_dnskey)) as server:
        v = await check(server, "good.test", "MX")
    assert v.status is Security.INDETERMINATE
    assert v.reason == (
        f"the DNSKEY lookup for good.test. failed: SERVFAIL from {server.address}:{server.port}"
    )


async def test_silence_on_the_chain_is_indeterminate() -> None:
    def drop_ds(query: dns.message.Message) -> bool | None:
        return None if query.question[0].rdtype == dns.rdatatype.DS else True

    with Server(Resolver(LAB.zones, fault=drop_ds)) as server:
        v = await check(server, "good.test", "MX", dns_timeout=0.4)
    assert v.status is Security.INDETERMINATE
    assert v.reason == "the DS lookup for good.test. failed: no answer within 0.4 s"


async def test_garbage_is_indeterminate_not_a_crash() -> None:
    def garbage(query: dns.message.Message) -> bytes | bool:
        return b"\x00\x01garbage" * 3 if query.question[0].rdtype == dns.rdatatype.MX else True

    with Server(Resolver(LAB.zones, fault=garbage)) as server:
        v = await check(server, "good.test", "MX", dns_timeout=0.5)
    assert v.status is Security.INDETERMINATE and "MX lookup for good.test. failed" in v.reason


async def test_a_hostile_key_set_is_bogus_not_a_crash() -> None:
    def junk_keys(query: dns.message.Message) -> dns.message.Message | bool:
        q = query.question[0]
        if q.rdtype != dns.rdatatype.DNSKEY or q.name != dns.name.from_text("good.test"):
            return True
        response = dns.message.make_response(query)
        response.answer.append(
            dns.rrset.from_text("good.test.", 300, "IN", "DNSKEY", "257 3 13 AAAA", "257 3 8 AQ==")
        )
        return response

    with Server(Resolver(LAB.zones, fault=junk_keys)) as server:
        v = await check(server, "good.test", "MX")
    assert v.status is Security.BOGUS
    assert v.reason.startswith("no DNSKEY of good.test. matches its DS at test.")


# -- one validator per check ------------------------------------------------------------


async def test_the_validator_is_memoised_per_network(resolver: Server) -> None:
    net = door(resolver)
    validator = validator_for(net)
    assert validator_for(net) is validator
    assert validator_for(door(resolver)) is not validator
    first = await validator.validate("good.test", "MX")
    chain_queries = [q for q in resolver.queries if q[2] in ("DNSKEY", "DS")]
    assert sorted((n, t) for _, n, t in chain_queries) == [
        ("good.test.", "DNSKEY"),
        ("good.test.", "DS"),
        ("test.", "DNSKEY"),
    ]
    # A sibling name, and three more names at once: no DNSKEY or DS asked again.
    second = await validator.validate("mx.good.test", "A")
    more = await asyncio.gather(
        *(validator.validate(f"_25._tcp.{h}.good.test", "TLSA") for h in ("a", "b", "c"))
    )
    assert [q for q in resolver.queries if q[2] in ("DNSKEY", "DS")] == chain_queries
    assert first.status is second.status is Security.SECURE
    assert all(v.status is Security.SECURE for v in more)
    assert resolver.count("SOA", "good.test.") == 1


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The owner and type of each RRSIG verification made, from an empty memo."""
    made: list[str] = []
    real = dnssec.dns.dnssec.validate_rrsig

    def counted(rrset: dns.rrset.RRset, *args: Any, **kwargs: Any) -> None:
        made.append(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}")
        real(rrset, *args, **kwargs)

    monkeypatch.setattr(dnssec.dns.dnssec, "validate_rrsig", counted)
    monkeypatch.setattr(dnssec, "_HELD", {})
    return made


async def test_a_signature_verified_once_is_not_verified_again(
    resolver: Server, verifications: list[str]
) -> None:
    first = await check(resolver, "good.test", "MX")  # a check, then another one
    made = list(verifications)
    assert "good.test. MX" in made and "test. DNSKEY" in made
    second = await check(resolver, "good.test", "MX")
    assert verifications == made  # nothing verified again
    assert first.status is second.status is Security.SECURE and first.chain == second.chain


async def test_a_signature_that_failed_is_verified_again(
    resolver: Server, verifications: list[str]
) -> None:
    # Only signatures that hold are kept: a broken one is tried each time,
    # so a fixed zone is judged on what it serves now.
    for _ in range(2):
        v = await check(resolver, "badsig.test", "MX")
        assert v.status is Security.BOGUS and "does not verify" in v.reason
    assert verifications.count("badsig.test. MX") == 2


async def test_an_explicit_clock_judges_signatures(resolver: Server) -> None:
    net = door(resolver)
    later = Validator(net, net.config.cpu, net.config.trust_anchors, now=lambda: NOW + 40 * DAY)
    v = await later.validate("good.test", "MX")
    assert v.status is Security.BOGUS and f"expired on {day(30 * DAY)}" in v.reason


# -- the signer ---------------------------------------------------------------------------


def test_delegations_stay_unsigned_and_ds_are_signed() -> None:
    top = next(z for z in LAB.zones if z.origin == "test")
    lines = [line.split() for line in top.records]
    assert ["good", "300", "IN", "NS", "ns"] in lines
    assert not any(t[:5] == ["good", "300", "IN", "RRSIG", "NS"] for t in lines)
    assert any(t[:5] == ["good", "300", "IN", "RRSIG", "DS"] for t in lines)
    assert not any(t[0] == "plain" and t[3] == "DS" for t in lines)  # unsigned child
    assert not any(t[0] == "island" and t[3] == "DS" for t in lines)
    assert LAB.anchors[0].startswith("test. IN DS ") and " 13 2 " in LAB.anchors[0]
    plain = next(z for z in LAB.zones if z.origin == "plain.test")
    assert plain == next(z for z in ZONES if z.origin == "plain.test")


def test_unknown_breakage_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown breakage"):
        sign_lab(ZONES, broken={"good.test": "melted"})
    with pytest.raises(ValueError, match="not a zone this call signs"):
        sign_lab(ZONES, unsigned={"plain.test"}, broken={"plain.test": "expired"})
    assert set(BROKEN.values()) <= set(BREAKAGES)


NSD_CHECKZONE = "/usr/sbin/nsd-checkzone"


@pytest.mark.skipif(
    not os.access(NSD_CHECKZONE, os.X_OK), reason=f"{NSD_CHECKZONE} is not installed (apt nsd)"
)
def test_nsd_loads_the_signed_zones(tmp_path: Any) -> None:
    for zone in LAB.zones:
        path = tmp_path / f"{zone.origin}.zone"
        path.write_text(zone.render())
        result = subprocess.run(
            [NSD_CHECKZONE, zone.origin, str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (zone.origin, result.stdout + result.stderr)


# -- CPU bounds: KeyTrap (CVE-2023-50387) and its NSEC3 variant (CVE-2023-50868) ----------
#
# Each attack runs through the real validator against the resolver stand-in,
# with a lag probe on the event loop: the work must be bounded (a count of
# signature checks within the caps) and done off the loop (its wake-ups stay
# under 100 ms late).


def _nsec3_denial(trap: Trap, records: list[dns.rrset.RRset]) -> Fault:
    """Answers TLSA questions with NODATA whose proof is `records`."""

    def fault(query: dns.message.Message) -> dns.message.Message | bool:
        if query.question[0].rdtype != dns.rdatatype.TLSA:
            return True
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        soa = dns.rrset.from_text(
            trap.origin, 300, "IN", "SOA", "ns.test. hostmaster.test. 1 3600 900 604800 300"
        )
        response.authority = [soa, *records]
        return response

    return fault


async def test_keytrap_is_bounded_and_leaves_the_loop_free() -> None:
    trap = keytrap_zone(keys=12, signatures=40, now=NOW)
    with Server(Resolver([trap.zone])) as server:
        validator = validator_for(door(server, anchors=[trap.anchor]))
        async with LagProbe() as lag:
            v = await validator.validate("trap.test", "MX")
    assert lag.worst < 0.1, str(lag)
    assert v.status is Security.INDETERMINATE, v.reason
    assert f"12 DNSKEYs share tag {trap.tag} alg 8" in v.reason
    assert "40 RRSIGs cover it" in v.reason and "KeyTrap" in v.reason
    limits = CPULimits()
    # One check of the DNSKEY rrset, then at most one RRset's worth for the MX.
    assert 1 < validator.verifications <= 1 + limits.dnssec_signatures_per_rrset


async def test_keytrap_in_a_check_is_dnssec_inconclusive_naming_the_limit() -> None:
    trap = keytrap_zone(now=NOW)
    wanted = {"dns.mx", "policy.dnssec"}
    probes = [p for p in (*dns_stage.PROBES, *dnssec_stage.PROBES) if p.name in wanted]
    request = CheckRequest(
        domain="trap.test", display="trap.test", stages=frozenset({Stage.POLICY})
    )
    with Server(Resolver([trap.zone])) as server:
        config = door(server, anchors=[trap.anchor]).config
        async with LagProbe() as lag:
            report = await runner.run(request, config, probes=probes)
    assert lag.worst < 0.1, str(lag)
    (finding,) = [f for f in report.findings if f.code.startswith("dnssec.")]
    assert finding.code == "dnssec.inconclusive", finding.summary
    assert "KeyTrap" in finding.summary and "share tag" in finding.summary


async def test_keytrap_spread_over_many_rrsets_stops_at_the_check_budget() -> None:
    # Six rrsets of 40 junk RRSIGs each: 6 x 8 checks allowed per RRset, over
    # the budget of 20 per check set here (the default, 100, works alike with
    # more rrsets; fewer big answers at once keep the resolver stand-in quick).
    trap = keytrap_zone(keys=12, signatures=40, hosts=6, now=NOW)
    limits = CPULimits(dnssec_validations=20)
    with Server(Resolver([trap.zone])) as server:
        validator = validator_for(door(server, anchors=[trap.anchor], cpu=limits))
        async with LagProbe() as lag:
            found = await asyncio.gather(
                *(validator.validate(f"h{i}.trap.test", "A") for i in range(6))
            )
    assert lag.worst < 0.1, str(lag)
    assert all(v.status is Security.INDETERMINATE for v in found)
    assert validator.verifications == limits.dnssec_validations
    spent = [v for v in found if "signature checks per check is spent" in v.reason]
    assert spent and all("budget of 20 signature checks" in v.reason for v in spent)


async def test_nsec3_with_many_iterations_is_inconclusive_unverified() -> None:
    trap = keytrap_zone(keys=2, signatures=1, now=NOW)
    proof = nsec3_records(trap, count=2, iterations=500)
    with Server(Resolver([trap.zone], fault=_nsec3_denial(trap, proof))) as server:
        validator = validator_for(door(server, anchors=[trap.anchor]))
        v = await validator.validate("trap.test", "TLSA")
    assert v.status is Security.INDETERMINATE, v.reason
    assert "500 extra hash iterations" in v.reason and "RFC 9276" in v.reason
    assert validator.verifications == 1  # the DNSKEY rrset; nothing of the denial


async def test_a_denial_with_hundreds_of_nsec3_records_is_inconclusive() -> None:
    trap = keytrap_zone(keys=2, signatures=1, now=NOW)
    proof = nsec3_records(trap, count=150, iterations=0)
    with Server(Resolver([trap.zone], fault=_nsec3_denial(trap, proof))) as server:
        validator = validator_for(door(server, anchors=[trap.anchor]))
        async with LagProbe() as lag:
            v = await validator.validate("trap.test", "TLSA")
    assert lag.worst < 0.1, str(lag)
    assert v.status is Security.INDETERMINATE, v.reason
    assert "150 NSEC/NSEC3 records" in v.reason
    assert validator.verifications == 1


async def test_a_healthy_zone_stays_within_the_bounds(resolver: Server) -> None:
    validator = validator_for(door(resolver))
    found = await asyncio.gather(
        validator.validate("good.test", "MX"),
        validator.validate("hop.good.test", "A"),
        validator.validate("nothere.good.test", "A"),
        validator.validate("deep.good.test", "MX"),
    )
    assert all(v.status is Security.SECURE for v in found)
    assert validator.verifications <= 12
