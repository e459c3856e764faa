"""SPF rules without a network: syntax, macros, limits, the lookup tree, diagnosis."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.errors import NXDomain, ResolverFailure
from checks.net.door import Network
from checks.rules.spf import Result, Verdict, check_host, parse_record, select_record
from checks.rules.spfdiagnose import diagnose
from checks.rules.spfmacro import (
    Macro,
    SPFSyntaxError,
    expand,
    parse_domain_spec,
    parse_macro_string,
    target_name,
)
from checks.stages.policy import NetworkLookup
from tests.support.nanodns import NanoDNS, zone

TIMEOUT = object()


class Zone:
    """An SPFLookup over {name: {type: [values]}}; a name absent is NXDOMAIN,
    a type absent NODATA, TIMEOUT in place of a type's list a resolver failure."""

    def __init__(self, records: dict[str, dict[str, object]]) -> None:
        self.records = {name.lower(): types for name, types in records.items()}
        self.queries: list[tuple[str, str]] = []

    def _get(self, name: str, rdtype: str) -> list[object]:
        self.queries.append((name, rdtype))
        types = self.records.get(name.lower().rstrip("."))
        if types is None:
            raise NXDomain(name, rdtype, f"NXDOMAIN: {name}")
        found = types.get(rdtype, [])
        if found is TIMEOUT:
            raise ResolverFailure(name, rdtype, "SERVFAIL from 192.0.2.53")
        assert isinstance(found, list)
        return found

    async def txt(self, name: str) -> list[str]:
        return [str(t) for t in self._get(name, "TXT")]

    async def a(self, name: str) -> list[str]:
        return [str(t) for t in self._get(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(t) for t in self._get(name, "AAAA")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return [(10, str(host)) for host in self._get(name, "MX")]

    async def ptr(self, address: str) -> list[str]:
        return [str(n) for n in self._get(dns.reversename.from_address(address).to_text(), "PTR")]


def spf(text: str, **others: object) -> dict[str, object]:
    return {"TXT": [text], **others}


# -- syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "named"),
    [
        ("v=spf1 ip4:192.0.2.1 -all moo", "'moo'"),
        ("v=spf1 a:museum -all", "'a:museum'"),
        ("v=spf1 a:111.222.33.44", "'a:111.222.33.44'"),
        ("v=spf1 ip4:192.0.2", "'ip4:192.0.2'"),
        ("v=spf1 ip4:192.0.2.1/33", "'ip4:192.0.2.1/33'"),
        ("v=spf1 ip6:2001:db8::/129", "'ip6:2001:db8::/129'"),
        ("v=spf1 mx/24/64", "'mx/24/64'"),
        ("v=spf1 -all/8", "'-all/8'"),
        ("v=spf1 ptr/24", "'ptr/24'"),
        ("v=spf1 include:", "'include:'"),
        ("v=spf1 redirect:_spf.example.com", "'redirect:_spf.example.com'"),
        ("v=spf1 exists:%{q}.example.com", "'%{q}'"),
        ("v=spf1 exists:%{c}.example.com", "'%{c}'"),
        ("v=spf1 exists:%(i).example.com", "'%('"),
        ("v=spf1 1up=foo", "'1up=foo'"),
        ("v=spf1 foo=%abc", "'foo=%abc'"),
        ("v=spf1 exp=a.example.com exp=b.example.com", "'exp=b.example.com'"),
        ("v=spf1 a:mail.example.com\rptr", "'a:mail.example.com\\rptr'"),
    ],
)
def test_parse_errors_name_the_term(record: str, named: str) -> None:
    with pytest.raises(SPFSyntaxError) as caught:
        parse_record(record)
    assert named in str(caught.value)


def test_parse_record_terms() -> None:
    record = parse_record(
        "V=SPF1  -include:_spf.example.com a:mail.%{d}/24//64 ip6:2001:DB8::/32 "
        "~all exp=why.%{d} x-note=hello "
    )
    include, a, ip6, all_ = record.mechanisms
    assert (include.qualifier, include.name, include.domain_spec) == (
        "-",
        "include",
        "_spf.example.com",
    )
    assert (a.name, a.domain_spec, a.cidr4, a.cidr6) == ("a", "mail.%{d}", 24, 64)
    assert str(ip6.network) == "2001:db8::/32"
    assert record.all is all_ and all_.qualifier == "~"
    assert record.exp is not None and record.exp.value == "why.%{d}"
    assert record.redirect is None
    assert [m.name for m in record.unknown] == ["x-note"]


def test_select_record() -> None:
    assert select_record(["google-site-verification=x", "v=spf1 -all"]) == "v=spf1 -all"
    assert select_record(["V=Spf1 ~all"]) == "V=Spf1 ~all"
    assert select_record(["v=spf10 -all", "v=spf1-all", ""]) is None
    with pytest.raises(SPFSyntaxError, match="2 SPF records"):
        select_record(["v=spf1 -all", "v=spf1 -all"])


def test_domain_spec_must_end_in_a_toplabel_or_macro() -> None:
    assert parse_domain_spec("%{h}")  # whatever HELO says: checked before expansion
    assert parse_domain_spec("foo.example.xn--zckzah")
    for bad in ("museum", "museum.", "abc.123", "example.-com", "example.com:8080"):
        with pytest.raises(SPFSyntaxError):
            parse_domain_spec(bad)


# -- macros (RFC 7208 7.4 examples) ------------------------------------------------------

RFC_EXAMPLES = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
]


async def explained(ip: str, macro_text: str) -> str | None:
    """Expand `macro_text` the way check_host() does, through an exp= record."""
    zone = Zone(
        {
            "email.example.com": spf("v=spf1 -all exp=why.example.net"),
            "why.example.net": {"TXT": [macro_text]},
        }
    )
    result = await check_host(ip, "email.example.com", "strong-bad@email.example.com", zone)
    assert result.result is Verdict.FAIL
    return result.explanation


@pytest.mark.parametrize(("macro", "expanded"), RFC_EXAMPLES)
async def test_rfc7208_macro_examples(macro: str, expanded: str) -> None:
    assert await explained("192.0.2.3", macro) == expanded


async def test_rfc7208_ipv6_macro_example() -> None:
    assert await explained("2001:db8::cb01", "%{ir}.%{v}._spf.%{d2}") == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )


async def test_macro_expands_into_the_query_name() -> None:
    zone = Zone(
        {
            "email.example.com": spf("v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all"),
            "3.2.0.192.in-addr._spf.example.com": {"A": ["127.0.0.2"]},
        }
    )
    result = await check_host("192.0.2.3", "email.example.com", "x@email.example.com", zone)
    assert (result.result, result.mechanism) == (Verdict.PASS, "exists:%{ir}.%{v}._spf.%{d2}")


def test_macro_escapes_and_url_encoding() -> None:
    parts = parse_macro_string("%{L}%%%_%-", explanation=True)
    assert parts[0] == Macro("L", None, False, "")
    assert expand(parts, {"l": "~jack&jill=up"}) == "~jack%26jill%3Dup% %20"
    assert expand(parse_macro_string("%{l2r+-}"), {"l": "foo-bar+zip+quux"}) == "bar.foo"


def test_target_name_truncates_on_the_left_and_rejects_bad_labels() -> None:
    long = ".".join(["a" * 60] * 5) + ".example.com."
    name = target_name(long)
    assert name is not None and len(name) <= 253 and name.endswith(".example.com")
    assert target_name("mail.example...com") is None
    assert target_name("x" * 64 + ".example.com") is None


# -- results, counting, limits -----------------------------------------------------------

IP = "192.0.2.10"


async def check(zone: Zone, domain: str = "example.com", ip: str = IP) -> Result:
    return await check_host(ip, domain, f"alice@{domain}", zone, "mail.example.com")


async def test_every_result() -> None:
    zone = Zone(
        {
            "pass.test": spf("v=spf1 ip4:192.0.2.0/24 -all"),
            "fail.test": spf("v=spf1 -all"),
            "softfail.test": spf("v=spf1 ~all"),
            "neutral.test": spf("v=spf1 a:nowhere.test"),  # no match, no all
            "none.test": {"TXT": ["just text"]},
            "perm.test": spf("v=spf1 include:none.test -all"),
            "temp.test": spf("v=spf1 include:broken.test -all"),
            "broken.test": {"TXT": TIMEOUT},
        }
    )
    got = {d: (await check(zone, f"{d}.test")).result for d in ("pass", "fail", "softfail")}
    got |= {d: (await check(zone, f"{d}.test")).result for d in ("neutral", "none")}
    got |= {d: (await check(zone, f"{d}.test")).result for d in ("perm", "temp")}
    assert got == {
        "pass": "pass",
        "fail": "fail",
        "softfail": "softfail",
        "neutral": "neutral",
        "none": "none",
        "perm": "permerror",
        "temp": "temperror",
    }


async def test_include_of_a_domain_without_spf_is_permerror_naming_it() -> None:
    zone = Zone({"example.com": spf("v=spf1 include:other.example -all"), "other.example": {}})
    result = await check(zone)
    assert result.result is Verdict.PERMERROR
    assert result.problem == "include:other.example: no SPF record there"


async def test_lookups_are_counted_through_includes() -> None:
    zone = Zone(
        {
            "example.com": spf("v=spf1 a mx include:_spf.example.net ip4:198.51.100.0/24 -all"),
            "example.com.": {},
            "_spf.example.net": spf("v=spf1 include:a.example.net include:b.example.net ~all"),
            "a.example.net": spf("v=spf1 ip4:203.0.113.1"),
            "b.example.net": spf("v=spf1 exists:%{i}.list.example.net"),
        }
    )
    zone.records["example.com"] |= {"A": ["198.51.100.1"], "MX": ["mx.example.com"]}
    zone.records["mx.example.com"] = {"A": ["198.51.100.2"]}
    result = await check(zone, ip="198.51.100.77")
    # a, mx, include, include, include, exists: the ip4 after the include decides
    assert (result.result, result.mechanism) == (Verdict.PASS, "ip4:198.51.100.0/24")
    assert (result.lookups, result.void_lookups) == (6, 1)  # the exists found nothing
    assert result.tree is not None
    assert result.tree.lines() == [
        "example.com  6 lookups, 1 void",
        "  include:_spf.example.net  4 lookups, 1 void",
        "    include:a.example.net  1 lookup",
        "    include:b.example.net  2 lookups, 1 void",
    ]
    assert result.tree.address_lookups == 1  # mx.example.com's A: needed, not counted


async def test_the_eleventh_lookup_is_permerror() -> None:
    zone = Zone({"example.com": spf("v=spf1 " + " ".join(["a"] * 11) + " -all")})
    zone.records["example.com"]["A"] = ["198.51.100.1"]
    result = await check(zone)
    assert result.result is Verdict.PERMERROR and result.lookups == 11
    assert result.problem == "a: more than 10 DNS lookups (RFC 7208 4.6.4)"
    ten = Zone({"example.com": spf("v=spf1 " + " ".join(["a"] * 10) + " -all")})
    ten.records["example.com"]["A"] = ["198.51.100.1"]
    assert (await check(ten)).result is Verdict.FAIL


async def test_include_loop_ends_at_the_limit() -> None:
    zone = Zone(
        {
            "example.com": spf("v=spf1 include:loop.example.com -all"),
            "loop.example.com": spf("v=spf1 include:example.com"),
        }
    )
    result = await check(zone)
    assert result.result is Verdict.PERMERROR and "more than 10 DNS lookups" in str(result.problem)


async def test_void_lookups_nxdomain_and_nodata_both_count() -> None:
    two = Zone({"example.com": spf("v=spf1 a:gone.example.com a:empty.example.com ?all")})
    two.records["empty.example.com"] = {"TXT": ["not an address"]}
    result = await check(two)
    assert (result.result, result.void_lookups) == (Verdict.NEUTRAL, 2)
    three = Zone(
        {"example.com": spf("v=spf1 a:gone.example.com mx:gone.example.com exists:x.example ?all")}
    )
    result = await check(three)
    assert result.result is Verdict.PERMERROR and result.void_lookups == 3
    assert result.problem is not None and result.problem.startswith("exists:x.example:")


async def test_exp_lookup_is_not_a_void_lookup_and_problems_there_are_ignored() -> None:
    zone = Zone(
        {"example.com": spf("v=spf1 a:gone.example.com a:gone2.example.com -all exp=no.example")}
    )
    result = await check_host(IP, "example.com", "a@example.com", zone, default_explanation="D")
    assert (result.result, result.explanation, result.void_lookups) == (Verdict.FAIL, "D", 2)


async def test_mx_with_more_than_ten_names_is_permerror() -> None:
    zone = Zone({"example.com": spf("v=spf1 mx -all")})
    zone.records["example.com"]["MX"] = [f"mx{n}.example.com" for n in range(11)]
    result = await check(zone)
    assert result.result is Verdict.PERMERROR
    assert "11 MX records" in str(result.problem)


async def test_ipv4_mapped_client_is_ipv4_and_dual_cidr_applies() -> None:
    zone = Zone({"example.com": spf("v=spf1 a/24//64 -all")})
    zone.records["example.com"] |= {"A": ["192.0.2.1"], "AAAA": ["2001:db8:1::1"]}
    assert (await check(zone, ip="::ffff:192.0.2.200")).result is Verdict.PASS
    assert (await check(zone, ip="2001:db8:1::abcd")).result is Verdict.PASS
    assert (await check(zone, ip="2001:db8:2::1")).result is Verdict.FAIL


async def test_dns_failure_is_temperror_naming_the_term() -> None:
    zone = Zone({"example.com": spf("v=spf1 a:slow.example.com -all")})
    zone.records["slow.example.com"] = {"A": TIMEOUT}
    result = await check(zone)
    assert result.result is Verdict.TEMPERROR
    assert result.problem == "a:slow.example.com: SERVFAIL from 192.0.2.53"


async def test_deadline_gives_temperror() -> None:
    class Stalling(Zone):
        async def a(self, name: str) -> list[str]:
            await asyncio.sleep(5)
            return []

    zone = Stalling({"example.com": spf("v=spf1 a -all")})
    result = await check_host(IP, "example.com", "a@example.com", zone, deadline=0.05)
    assert (result.result, result.problem) == (Verdict.TEMPERROR, "no result within 0.05 s")


async def test_malformed_domain_is_none_without_a_query() -> None:
    zone = Zone({})
    for domain in ("localhost", "[192.0.2.1]", "a..example.com", "x" * 64 + ".example.com"):
        assert (await check_host(IP, domain, "a@b.example", zone)).result is Verdict.NONE
    assert zone.queries == []


# -- diagnosis ---------------------------------------------------------------------------


def provider_zone() -> Zone:
    return Zone(
        {
            "example.com": spf(
                "v=spf1 mx include:_spf.provider.test include:nospf.example.net "
                "ip4:192.0.2.0/24 +all",
                MX=["mx.example.com"],
            ),
            "_spf.provider.test": spf(
                "v=spf1 include:_a.provider.test include:_b.provider.test "
                "include:_c.provider.test ~all"
            ),
            "_a.provider.test": spf("v=spf1 ip4:198.51.100.0/24 ~all"),
            "_b.provider.test": spf("v=spf1 ip6:2001:db8::/32 ~all"),
            "_c.provider.test": spf("v=spf1 ip4:203.0.113.0/24 ~all"),
            "nospf.example.net": {"TXT": ["some verification token"]},
        }
    )


async def test_diagnose_costs_each_include_and_flags_problems() -> None:
    report = await diagnose("Example.com.", provider_zone())
    assert report.record is not None and report.record.startswith("v=spf1 mx")
    assert report.tree.lines() == [
        "example.com  6 lookups",
        "  include:_spf.provider.test  4 lookups",
        "    include:_a.provider.test  1 lookup",
        "    include:_b.provider.test  1 lookup",
        "    include:_c.provider.test  1 lookup",
        "  include:nospf.example.net  1 lookup  (no SPF record)",
    ]
    assert report.lookups == 6 and not report.over_limit  # mx 1, includes 4 + 1
    assert report.all_term == "+all" and report.weak_all
    assert report.missing_includes == ("nospf.example.net",)
    assert report.tree.address_lookups == 1  # the MX host, not counted toward 10
    assert any("+all" in p and "any host" in p for p in report.problems)
    assert any(p.startswith("include:nospf.example.net:") for p in report.problems)


async def test_diagnose_flags_eleven_lookups_and_void_lookups() -> None:
    zone = Zone(
        {
            "example.com": spf(
                "v=spf1 a:gone1.example.com a:gone2.example.com a:gone3.example.com "
                "include:big.example.com -all"
            ),
            "big.example.com": spf(
                "v=spf1 " + " ".join(f"exists:%{{i}}.l{n}.test" for n in range(7))
            ),
        }
    )
    report = await diagnose("example.com", zone)
    assert report.lookups == 11 and report.over_limit
    assert report.void_lookups == 3
    assert "11 DNS lookups; receivers stop at 10 with permerror" in report.problems
    assert any("3 lookups find nothing" in p for p in report.problems)
    assert report.all_term == "-all" and not report.weak_all
    assert ("big.example.com", "A") not in zone.queries  # exists with %{i}: counted only


async def test_diagnose_follows_redirect_for_the_all_term_and_reports_syntax() -> None:
    zone = Zone(
        {
            "example.com": spf("v=spf1 ip4:192.0.2.1 redirect=_spf.example.com"),
            "_spf.example.com": spf("v=spf1 include:bad.example.com ?all"),
            "bad.example.com": spf("v=spf1 ip4:192.0.2.300 -all"),
        }
    )
    report = await diagnose("example.com", zone)
    assert report.all_term == "?all" and report.weak_all
    assert report.syntax_errors == (
        "bad.example.com: invalid mechanism 'ip4:192.0.2.300': "
        "'192.0.2.300' is not an IPv4 address",
    )
    assert [n.term for n in report.tree.walk()] == [
        None,
        "redirect=_spf.example.com",
        "include:bad.example.com",
    ]


async def test_diagnose_without_record_and_with_loops() -> None:
    none = await diagnose("example.com", Zone({"example.com": {"TXT": ["hello"]}}))
    assert none.record is None and not none.weak_all
    assert none.problems == ("example.com has no SPF record",)
    loop = Zone(
        {
            "example.com": spf("v=spf1 include:b.example.com -all"),
            "b.example.com": spf("v=spf1 include:example.com -all"),
        }
    )
    report = await diagnose("example.com", loop)
    assert any(
        "include loop: example.com -> b.example.com -> example.com" in p for p in report.problems
    )


# -- the network door --------------------------------------------------------------------

ANSWERS = {
    ("example.test.", "TXT"): ['"v=spf1 mx ptr:example.test " "ip4:198.51.100.0/24 -all"'],
    ("example.test.", "MX"): ["10 mx.example.test.", "20 ."],
    ("mx.example.test.", "A"): ["192.0.2.25"],
    ("25.2.0.192.in-addr.arpa.", "PTR"): ["mx.example.test."],
}


async def test_network_lookup_over_a_real_resolver() -> None:
    with NanoDNS(zone(ANSWERS)) as server:
        config = EngineConfig(
            nameservers=(Nameserver(server.address, server.port),),
            timeouts=Timeouts(dns=2.0, check=10),
        )
        lookup = NetworkLookup(Network(config))
        assert await lookup.txt("example.test") == [
            "v=spf1 mx ptr:example.test ip4:198.51.100.0/24 -all"  # strings joined as-is
        ]
        assert await lookup.mx("example.test") == [(10, "mx.example.test"), (20, "")]
        assert await lookup.ptr("192.0.2.25") == ["mx.example.test"]
        assert await lookup.aaaa("mx.example.test") == []
        with pytest.raises(NXDomain):
            await lookup.a("gone.example.test")
        with pytest.raises(ResolverFailure):
            await lookup.txt("broken.example.test")
        result = await check_host("192.0.2.25", "example.test", "a@example.test", lookup)
        assert (result.result, result.mechanism, result.lookups) == (Verdict.PASS, "mx", 1)
        temp = await check_host("192.0.2.25", "broken.example.test", "a@example.test", lookup)
        assert temp.result is Verdict.TEMPERROR and "SERVFAIL" in str(temp.problem)
