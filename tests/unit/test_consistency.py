"""DNS consistency (checks/stages/consistency.py) against small real DNS servers:
a "resolver" and several "authoritative servers" on 127.1.42.x port 53, each
a tests/support/nanodns server answering from its own records, so each case
changes what exactly one server says. (The lab's NSD instances cover the same
codes end to end in tests/integration.)"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Literal

import dns.message
import dns.rrset
import jsonschema
import pytest
from rich.console import Console

from bot import blocks, terminal
from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.model import CheckRequest, Report, Severity, Stage
from checks.core.targets import TargetPolicy, parse_networks
from checks.engine.runner import run
from checks.report import jsonreport
from tests.support.nanodns import Handler, NanoDNS, reply, zone

RESOLVER = "127.1.42.53"
NS1, NS2, PARENT = "127.1.42.1", "127.1.42.2", "127.1.42.10"
SILENT = "127.1.42.4"  # nothing listens


def records(serial: int = 2026112602, mx: str = "10 mx.example.test.") -> dict:
    return {
        ("example.test.", "SOA"): [
            f"ns1.example.test. host.example.test. {serial} 3600 900 86400 300"
        ],
        ("example.test.", "NS"): ["ns1.example.test.", "ns2.example.test."],
        ("example.test.", "MX"): [mx],
        ("example.test.", "TXT"): ['"v=spf1 mx -all"'],
        ("_dmarc.example.test.", "TXT"): ['"v=DMARC1; p=reject"'],
        ("mx.example.test.", "A"): ["192.0.2.25"],
        ("old.example.test.", "A"): ["192.0.2.26"],
        ("ns1.example.test.", "A"): [NS1],
        ("ns2.example.test.", "A"): [NS2],
    }


def resolver_view(auth: dict, **extra: list[str]) -> dict:
    """What the resolver knows: the zone, and the parent `test.` above it."""
    view = dict(auth)
    view[("test.", "SOA")] = ["a.nic.test. host.nic.test. 1 3600 900 86400 300"]
    view[("test.", "NS")] = ["a.nic.test."]
    view[("a.nic.test.", "A")] = [PARENT]
    for key, value in extra.items():
        view[tuple(key.split("|"))] = value  # type: ignore[index]
    return view


def parent(delegated: list[str]) -> NanoDNS:
    """The parent zone's server: a referral for anything under example.test."""

    def answer(query: dns.message.Message) -> dns.message.Message:
        response = reply(query)
        response.authority.append(dns.rrset.from_text("example.test.", 300, "IN", "NS", *delegated))
        return response

    return NanoDNS(answer, PARENT, 53)


@contextlib.contextmanager
def world(
    auth: dict,
    *,
    resolver: Handler | None = None,
    ns2: Handler | Literal["auth"] | None = "auth",
    delegated: list[str] = ["ns1.example.test.", "ns2.example.test."],  # noqa: B006
) -> Iterator[None]:
    """The resolver (knowing `auth` and the parent), ns1 serving `auth`, ns2
    serving `auth` too (or answering with `ns2`; None: not there), and the
    parent's server delegating to `delegated`."""
    nanos = [
        NanoDNS(resolver or zone(resolver_view(auth)), RESOLVER, 53),
        NanoDNS(zone(auth, authoritative=True), NS1, 53),
        parent(delegated),
    ]
    if ns2 == "auth":
        nanos.append(NanoDNS(zone(auth, authoritative=True), NS2, 53))
    elif ns2 is not None:
        nanos.append(NanoDNS(ns2, NS2, 53))
    with contextlib.ExitStack() as stack:
        for nano in nanos:
            stack.enter_context(nano)
        yield


def config() -> EngineConfig:
    return EngineConfig(
        nameservers=(Nameserver(RESOLVER),),
        policy=TargetPolicy(parse_networks(["127.1.42.0/24"])),
        timeouts=Timeouts(dns=1.0, check=20),
    )


async def check(cfg: EngineConfig | None = None) -> Report:
    request = CheckRequest("example.test", "example.test", stages=frozenset({Stage.DNS}))
    return await run(request, cfg or config())


def codes(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.code.startswith(("dns.ns", "dns.propagation"))}


def finding(report: Report, code: str):  # type: ignore[no-untyped-def]
    (found,) = [f for f in report.findings if f.code == code]
    return found


async def test_agreeing_servers_are_ok_and_tabled() -> None:
    auth = records()
    with world(auth):
        report = await check()
    assert codes(report) == {"dns.ns.ok"}
    table = report.facts["nameservers"]
    assert table["zone"] == "example.test"
    assert table["parent"] == ["ns1.example.test", "ns2.example.test"]
    assert [(s["name"], s["address"], s["status"], s["serial"]) for s in table["servers"]] == [
        ("ns1.example.test", NS1, "ok", 2026112602),
        ("ns2.example.test", NS2, "ok", 2026112602),
    ]
    ok = finding(report, "dns.ns.ok")
    row = f"ns1.example.test [{NS1}]  ok           serial 2026112602"
    assert ok.evidence[0] == row
    # The per-server table is shown in the terminal and in the Slack thread.
    console = Console(record=True, width=120)
    terminal.print_report(console, report, resolver=RESOLVER, verbose=False)
    shown = console.export_text()
    assert "Nameservers" in shown and row in shown
    posted = json.dumps([m.blocks for m in blocks.stage_messages(report, Stage.DNS)])
    assert "*Nameservers*" in posted and row in posted
    jsonschema.validate(jsonreport.report_to_dict(report), jsonreport.schema())


async def test_a_stale_secondary() -> None:
    auth = records()
    stale = records(serial=2026112601, mx="10 old.example.test.")
    with world(auth, ns2=zone(stale, authoritative=True)):
        report = await check()
    assert codes(report) == {"dns.ns.serial_mismatch", "dns.ns.records_differ"}
    serial = finding(report, "dns.ns.serial_mismatch")
    assert f"ns2.example.test [{NS2}] has 2026112601" in serial.summary
    assert serial.reproduce == f"dig +norec @{NS2} SOA example.test"
    differ = finding(report, "dns.ns.records_differ")
    assert differ.evidence == (
        f"ns1.example.test [{NS1}]: 10 mx.example.test.",
        f"ns2.example.test [{NS2}]: 10 old.example.test.",
    )
    assert finding(report, "dns.ns.records_differ").severity is Severity.WARNING
    assert "MX example.test" in report.facts["nameservers"]["differ"]


@pytest.mark.parametrize(
    ("ns2", "code", "words"),
    [
        (lambda q: reply(q, 5), "dns.ns.refused", "answers REFUSED"),  # rcode 5: REFUSED
        (zone(records()), "dns.ns.lame", "without authority (no AA flag)"),  # no AA
        (lambda q: None, "dns.ns.unreachable", "did not answer within 1 s"),
    ],
)
async def test_a_failing_server_is_named(ns2, code: str, words: str) -> None:  # type: ignore[no-untyped-def]
    auth = records()
    with world(auth, ns2=ns2):
        report = await check()
    assert codes(report) == {code}
    found = finding(report, code)
    assert f"nameserver ns2.example.test [{NS2}] of example.test" in found.summary
    assert words in found.summary
    assert found.severity is Severity.WARNING
    assert found.target.address == NS2 and found.target.port == 53


async def test_a_delegation_that_differs_from_the_zone() -> None:
    auth = records()
    with world(auth, delegated=["ns1.example.test.", "ns9.example.test."]):
        report = await check()
    assert codes(report) == {"dns.ns.parent_child_mismatch"}
    found = finding(report, "dns.ns.parent_child_mismatch")
    assert "only in the delegation: ns9.example.test" in found.summary
    assert "only in the zone: ns2.example.test" in found.summary
    assert found.reproduce.startswith(f"dig +norec NS example.test @{PARENT}")


async def test_a_resolver_that_still_caches_the_old_mx() -> None:
    auth = records()
    view = resolver_view(auth)
    view[("example.test.", "MX")] = ["10 old.example.test."]
    with world(auth, resolver=zone(view, ttl=2460)):
        report = await check()
    pending = finding(report, "dns.propagation.pending")
    assert pending.severity is Severity.INFO
    assert "still serves the old MX for example.test for up to 41 minutes more" in pending.summary
    assert "10 mx.example.test." in pending.summary and pending.data["ttl"] == 2460
    assert "dns.ns.records_differ" not in codes(report)  # the servers agree


async def test_a_nameserver_outside_the_allowed_networks_is_never_asked() -> None:
    auth = records()
    auth[("ns2.example.test.", "A")] = ["10.9.8.7"]
    with world(auth, ns2=None):
        report = await check()
    found = finding(report, "dns.ns.address.private")
    assert "non-public address, not asked" in found.summary and "10.9.8.7" in found.summary
    transcript = "\n".join(line for lines in report.transcripts.values() for line in lines)
    assert "@10.9.8.7" not in transcript


async def test_one_address_of_a_reachable_server_failing_is_information() -> None:
    auth = records()
    auth[("ns2.example.test.", "A")] = [NS2, SILENT]
    with world(auth):
        report = await check()
    found = finding(report, "dns.ns.unreachable")
    assert found.severity is Severity.INFO and SILENT in found.summary


async def test_a_dkim_key_that_one_server_does_not_have() -> None:
    """The keys the policy stage finds are asked of every server too."""
    key = '"v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"'
    auth = records()
    auth[("default._domainkey.example.test.", "TXT")] = [key]
    behind = records()  # this copy has no key at all
    with world(auth, ns2=zone(behind, authoritative=True)):
        request = CheckRequest(
            "example.test", "example.test", stages=frozenset({Stage.DNS, Stage.POLICY})
        )
        report = await run(request, config())
    differ = [f for f in report.findings if f.code == "dns.ns.records_differ"]
    assert [f.target.host for f in differ] == ["default._domainkey.example.test"]
    assert differ[0].evidence[1] == f"ns2.example.test [{NS2}]: NXDOMAIN"
