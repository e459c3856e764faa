"""The nameserver-consistency scenarios, asked directly as the engine will.

Each of tests/lab/zones.py's dns-* scenarios needs a nameserver that
misbehaves in one way; these tests ask every one of them (RD clear, as a
check asks an authoritative server) and make sure each misbehaves exactly as
the scenario says, so a failing engine test points at the engine, not the lab.
The stale-cache resolver stand-in (tests/lab/cachedns.py) is checked too.
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from .cachedns import StaleCacheResolver
from .control import Lab
from .nsd import SOA_SERIAL
from .zones import (
    BY_DOMAIN,
    CACHE_RESOLVER_ADDRESS,
    CACHE_SCENARIO,
    CACHE_STALE_MX,
    CACHE_STALE_TTL,
    NS_ADDRESS,
    NS_NAME,
    PARENT_NS_ADDRESS,
    PARENT_NS_NAME,
    SCENARIOS,
    STALE_NS_ADDRESS,
    UNREACHABLE_NS_ADDRESS,
    Scenario,
)

pytestmark = pytest.mark.lab

TIMEOUT = 2.0
CONSISTENCY = [s for s in SCENARIOS if s.domain.startswith("dns-")] + [CACHE_SCENARIO]


def ask(
    server: str, name: str, rdtype: str, *, timeout: float = TIMEOUT, tcp: bool = False
) -> dns.message.Message:
    """Ask `server` non-recursively, as a check asks a zone's nameservers."""
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server, timeout=timeout)


def recurse(server: str, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    """Ask `server` as a stub resolver asks a recursive one (RD set)."""
    send = dns.query.tcp if tcp else dns.query.udp
    return send(dns.message.make_query(name, rdtype), server, timeout=TIMEOUT)


def rdata(response: dns.message.Message, rdtype: str, section: str = "answer") -> set[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return {
        rd.to_text()
        for rrset in getattr(response, section)
        if rrset.rdtype == wanted
        for rd in rrset
    }


def serial(response: dns.message.Message) -> int:
    (soa,) = [rd for rrset in response.answer if rrset.rdtype == dns.rdatatype.SOA for rd in rrset]
    return int(soa.serial)


@pytest.fixture(scope="module")
def cache_resolver(lab: Lab) -> Iterator[StaleCacheResolver]:
    with StaleCacheResolver() as resolver:
        yield resolver


@pytest.mark.parametrize("scenario", CONSISTENCY, ids=[s.domain for s in CONSISTENCY])
def test_main_server_is_authoritative_for_each_zone(scenario: Scenario, lab: Lab) -> None:
    response = ask(NS_ADDRESS, scenario.domain, "SOA")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert serial(response) == SOA_SERIAL


def test_parent_zone_lists_both_of_its_servers(lab: Lab) -> None:
    for server in (NS_ADDRESS, PARENT_NS_ADDRESS):
        response = ask(server, "test.", "NS")
        assert response.flags & dns.flags.AA, server
        assert rdata(response, "NS") == {NS_NAME, PARENT_NS_NAME}, server
    assert rdata(ask(NS_ADDRESS, PARENT_NS_NAME, "A"), "A") == {PARENT_NS_ADDRESS}


def test_stale_secondary_serves_an_older_copy(lab: Lab) -> None:
    soa = ask(STALE_NS_ADDRESS, "dns-stale.test", "SOA")
    assert soa.rcode() == dns.rcode.NOERROR and soa.flags & dns.flags.AA
    assert serial(soa) == SOA_SERIAL - 1
    stale_mx = ask(STALE_NS_ADDRESS, "dns-stale.test", "MX")
    assert rdata(stale_mx, "MX") == {"10 mx-old.dns-stale.test."}
    assert rdata(ask(NS_ADDRESS, "dns-stale.test", "MX"), "MX") == {"10 mx-new.dns-stale.test."}
    # Both MX hosts resolve, so only the difference itself is a finding.
    for host, address in (("mx-new", "127.1.8.1"), ("mx-old", "127.1.8.2")):
        assert rdata(ask(NS_ADDRESS, f"{host}.dns-stale.test", "A"), "A") == {address}


def test_stale_secondary_refuses_zones_it_does_not_serve(lab: Lab) -> None:
    for zone in ("dns-refused.test", "healthy.test", "test."):
        response = ask(STALE_NS_ADDRESS, zone, "SOA")
        assert response.rcode() == dns.rcode.REFUSED, zone
        assert not response.flags & dns.flags.AA


def test_parent_only_server_refers_instead_of_answering(lab: Lab) -> None:
    response = ask(PARENT_NS_ADDRESS, "dns-lame.test", "SOA")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.flags & dns.flags.AA and not response.answer
    assert rdata(response, "NS", "authority") == {NS_NAME, "ns.dns-lame.test."}
    assert rdata(response, "A", "additional") >= {PARENT_NS_ADDRESS}  # the glue


def test_parent_and_child_disagree_on_the_ns_set(lab: Lab) -> None:
    referral = ask(PARENT_NS_ADDRESS, "dns-parentchild.test", "NS")
    assert not referral.flags & dns.flags.AA
    assert rdata(referral, "NS", "authority") == {NS_NAME, "ns-extra.dns-parentchild.test."}
    child = ask(NS_ADDRESS, "dns-parentchild.test", "NS")
    assert child.flags & dns.flags.AA and rdata(child, "NS") == {NS_NAME}
    # The extra name does answer: it is the main server under another name.
    extra = rdata(ask(NS_ADDRESS, "ns-extra.dns-parentchild.test", "A"), "A")
    assert extra == {NS_ADDRESS}


@pytest.mark.parametrize("scenario", CONSISTENCY, ids=[s.domain for s in CONSISTENCY])
def test_parent_delegates_as_the_scenario_says(scenario: Scenario, lab: Lab) -> None:
    referral = ask(PARENT_NS_ADDRESS, scenario.domain, "NS")
    assert rdata(referral, "NS", "authority") == set(scenario.delegation)
    glue = {address for address in scenario.delegation.values() if address}
    assert rdata(referral, "A", "additional") >= glue


def test_unreachable_server_does_not_answer(lab: Lab) -> None:
    with pytest.raises((dns.exception.Timeout, ConnectionRefusedError)):
        ask(UNREACHABLE_NS_ADDRESS, "dns-unreachable.test", "SOA", timeout=1.0)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_cache_resolver_serves_the_stale_mx(tcp: bool, cache_resolver: StaleCacheResolver) -> None:
    response = recurse(CACHE_RESOLVER_ADDRESS, CACHE_SCENARIO.domain, "MX", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.RA and not response.flags & dns.flags.AA
    (rrset,) = response.answer
    assert [rd.to_text() for rd in rrset] == [CACHE_STALE_MX]
    assert rrset.ttl == CACHE_STALE_TTL
    # ...while the zone itself has moved on.
    current = ask(NS_ADDRESS, CACHE_SCENARIO.domain, "MX")
    assert rdata(current, "MX") == {"10 mx-new.dns-cache.test."}
    assert cache_resolver.queries[-1] == ("tcp" if tcp else "udp", "dns-cache.test. MX")


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_cache_resolver_forwards_everything_else(
    tcp: bool, cache_resolver: StaleCacheResolver
) -> None:
    response = recurse(CACHE_RESOLVER_ADDRESS, "healthy.test", "MX", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.RA
    assert not response.flags & dns.flags.AA
    assert rdata(response, "MX") == {"10 mx1.healthy.test.", "20 mx2.healthy.test."}
    # The old MX host still resolves through it, as a resolver's would.
    old = recurse(CACHE_RESOLVER_ADDRESS, "mx-old.dns-cache.test", "A", tcp=tcp)
    assert rdata(old, "A") == {"127.1.8.52"}
    missing = recurse(CACHE_RESOLVER_ADDRESS, "nope.healthy.test", "A", tcp=tcp)
    assert missing.rcode() == dns.rcode.NXDOMAIN


def test_cache_resolver_truncates_over_udp_and_answers_in_full_over_tcp(
    cache_resolver: StaleCacheResolver,
) -> None:
    # healthy.test's DKIM key with its signature (DO) outgrows a 512-byte buffer.
    query = dns.message.make_query(
        "mail._domainkey.healthy.test", "TXT", use_edns=0, want_dnssec=True, payload=512
    )
    udp = dns.query.udp(query, CACHE_RESOLVER_ADDRESS, timeout=TIMEOUT, ignore_trailing=True)
    assert udp.flags & dns.flags.TC and not udp.answer
    full = dns.query.tcp(query, CACHE_RESOLVER_ADDRESS, timeout=TIMEOUT)
    assert full.rcode() == dns.rcode.NOERROR and rdata(full, "TXT")


def test_consistency_zones_are_unsigned_and_served() -> None:
    """Unsigned: the stale copy has no keys of its own, and the stand-in's
    stale MX carries no signature. The cache zone is served, but no check of
    SCENARIOS (which ask the lab NSD directly) could see its stale MX."""
    assert all(s.dnssec == "unsigned" for s in CONSISTENCY)
    assert BY_DOMAIN[CACHE_SCENARIO.domain] is CACHE_SCENARIO
    assert CACHE_SCENARIO not in SCENARIOS
