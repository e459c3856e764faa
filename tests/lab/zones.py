"""The lab's DNS scenarios: one broken domain per finding code, and a healthy one.

Each scenario is a zone (records relative to its origin) with the reverse
(PTR) entries for its addresses and the finding codes, at info or above, that
a check of it must report: exactly these, no more. Integration tests iterate
over SCENARIOS; `python -m tests.lab up` serves `all_zones()`.

Address plan (all on 127.1.0.0/16, reverse zone 1.127.in-addr.arpa):
127.1.0.53 lab NSD; 127.1.1.x healthy.test; 127.1.2.x-127.1.5.x one block per
broken scenario; 127.1.9.x the IDN scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .nsd import Zone

NS_ADDRESS = "127.1.0.53"
REVERSE_ZONE = "1.127.in-addr.arpa"


@dataclass(frozen=True)
class Scenario:
    domain: str  # as a user would type it
    expect: frozenset[str]  # codes of every finding above `ok`
    records: tuple[str, ...] | None = None  # None: no zone at all
    ptr: dict[str, str] = field(default_factory=dict)  # address -> PTR name
    about: str = ""


def _scenario(
    domain: str,
    expect: set[str],
    records: list[str],
    ptr: dict[str, str] | None = None,
    about: str = "",
) -> Scenario:
    return Scenario(domain, frozenset(expect), tuple(records), dict(ptr or {}), about)


_HEALTHY = _scenario(
    "healthy.test",
    set(),
    [
        "@ IN MX 10 mx1",
        "@ IN MX 20 mx2",
        "mx1 IN A 127.1.1.1",
        "mx2 IN A 127.1.1.2",
        "smtp IN A 127.1.1.10",
        "imap IN A 127.1.1.11",
        "autoconfig IN A 127.1.1.12",
        "_submission._tcp IN SRV 0 1 587 smtp",
        "_submissions._tcp IN SRV 0 1 465 smtp",
        "_imap._tcp IN SRV 10 1 143 imap",
        "_imaps._tcp IN SRV 0 1 993 imap",
        "_pop3._tcp IN SRV 0 0 0 .",
        "_pop3s._tcp IN SRV 0 0 0 .",
        '@ IN TXT "v=spf1 mx -all"',
        '@ IN TXT "mailconf=https://autoconfig.healthy.test/mail/config-v1.1.xml"',
    ],
    {"127.1.1.1": "mx1.healthy.test", "127.1.1.2": "mx2.healthy.test"},
    "two MX hosts with confirmed reverse DNS, SRV records, a valid mailconf",
)

SCENARIOS: tuple[Scenario, ...] = (
    _HEALTHY,
    Scenario(
        "nonexistent.test",
        frozenset({"dns.domain.nxdomain"}),
        about="no such name in the test. zone: NXDOMAIN",
    ),
    Scenario(
        "outside.invalid",
        frozenset({"dns.resolver.failure"}),
        about="not served by the lab: the server answers REFUSED",
    ),
    _scenario(
        "nomx.test",
        {"mx.none", "srv.missing"},
        ["@ IN A 127.1.2.1"],
        {"127.1.2.1": "nomx.test"},
        "no MX; the implicit MX (the domain's A record) works",
    ),
    _scenario(
        "nomail.test",
        {"mx.implicit.missing"},
        ['@ IN TXT "nothing here"'],
        about="neither MX nor address",
    ),
    _scenario("nullmx.test", {"mx.null"}, ["@ IN MX 0 ."], about="RFC 7505 null MX"),
    _scenario(
        "nullmixed.test",
        {"mx.null.mixed", "srv.missing"},
        ["@ IN MX 0 .", "@ IN MX 10 mx", "mx IN A 127.1.2.10"],
        {"127.1.2.10": "mx.nullmixed.test"},
        "null MX beside a real one",
    ),
    _scenario(
        "mxcname.test",
        {"mx.cname", "srv.missing"},
        ["@ IN MX 10 mail", "mail IN CNAME host", "host IN A 127.1.3.1"],
        {"127.1.3.1": "host.mxcname.test"},
        "the MX target is an alias",
    ),
    _scenario(
        "mxnoaddr.test",
        {"mx.host.unresolvable", "srv.missing"},
        ["@ IN MX 10 mx1", "@ IN MX 20 ghost", 'mx1 IN TXT "no address here"'],
        about="one MX host exists without an address, the other does not exist",
    ),
    _scenario(
        "mxliteral.test",
        {"mx.ip_literal", "srv.missing"},
        ["@ IN MX 10 127.1.3.20."],
        about="an address written as the MX target",
    ),
    _scenario(
        "mxprivate.test",
        {"mx.address.private", "srv.missing"},
        [
            "@ IN MX 10 mx",
            "@ IN MX 20 lo",
            "mx IN A 10.0.0.25",
            "mx IN AAAA 2001:db8::25",
            "lo IN A 127.0.0.1",
        ],
        about="MX hosts on RFC 1918, documentation and loopback addresses outside the lab",
    ),
    _scenario(
        "ptrmissing.test",
        {"ptr.missing", "srv.missing"},
        ["@ IN MX 10 mx", "mx IN A 127.1.4.1"],
        about="no PTR for the MX address",
    ),
    _scenario(
        "ptrmismatch.test",
        {"ptr.mismatch", "srv.missing"},
        ["@ IN MX 10 mx", "mx IN A 127.1.4.2", "other IN A 127.1.4.99"],
        {"127.1.4.2": "other.ptrmismatch.test"},
        "the PTR name resolves to another address",
    ),
    _scenario(
        "srvbroken.test",
        {"srv.target.unresolvable"},
        [
            "@ IN MX 10 mx",
            "mx IN A 127.1.5.1",
            "_imaps._tcp IN SRV 0 1 993 imap",
            "_submissions._tcp IN SRV 0 1 465 mx",
        ],
        {"127.1.5.1": "mx.srvbroken.test"},
        "an SRV target without an address",
    ),
    _scenario(
        "mailconfhttp.test",
        {"mailconf.invalid", "srv.missing"},
        [
            "@ IN MX 10 mx",
            "mx IN A 127.1.5.10",
            '@ IN TXT "mailconf=http://autoconfig.mailconfhttp.test/mail/config-v1.1.xml"',
        ],
        {"127.1.5.10": "mx.mailconfhttp.test"},
        "mailconf URL over plain http",
    ),
    _scenario(
        "xn--bcher-kva.test",
        {"srv.missing"},
        ["@ IN MX 10 mx", "mx IN A 127.1.9.1"],
        {"127.1.9.1": "mx.xn--bcher-kva.test"},
        "an internationalised domain (bücher.test)",
    ),
)

BY_DOMAIN = {s.domain: s for s in SCENARIOS}


def all_zones() -> list[Zone]:
    """The test. parent zone with its delegations, each scenario zone, and the reverse zone."""
    served = [s for s in SCENARIOS if s.records is not None and s.domain.endswith(".test")]
    parent = ["ns IN A " + NS_ADDRESS]
    parent += [f"{s.domain.removesuffix('.test')} IN NS ns.test." for s in served]
    zones = [Zone("test", tuple(parent))]
    zones += [Zone(s.domain, s.records or ()) for s in served]
    reverse = []
    for s in served:
        for address, name in s.ptr.items():
            a, b, c, d = address.split(".")
            assert (a, b) == ("127", "1"), address
            reverse.append(f"{d}.{c} IN PTR {name}.")
    zones.append(Zone(REVERSE_ZONE, tuple(reverse)))
    return zones
