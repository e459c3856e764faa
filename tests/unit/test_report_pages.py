"""A whole report's thread replies (bot.blocks.report_pages): the stages packed
into as few messages as Slack takes, each shown as stage_pages shows it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bot.blocks import Page, report_pages, stage_pages
from checks.core import catalog
from checks.core.model import CheckRequest, Finding, Report, Severity, Stage, Target
from checks.stages.consistency import TABLE
from tests.unit.test_blocks import _strings

MX = Target(host="mx.example.com", address="192.0.2.25", port=25, protocol="smtp")


def _report(findings: Sequence[Finding], display: str = "example.com") -> Report:
    return Report(
        request=CheckRequest(domain="example.com", display=display),
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration=2.5,
        findings=tuple(findings),
    )


def _chars(page: Page) -> int:
    """A message's characters as Slack counts them: its text and its blocks' strings."""
    return len(page.message.text) + sum(len(s) for s in _strings(page.message.blocks))


def _headers(page: Page) -> list[str]:
    return [b["text"]["text"] for b in page.message.blocks if b["type"] == "header"]


def _codes(stage: Stage) -> list[str]:
    return [code for code, e in catalog.CATALOG.items() if e.stage is stage]


def _healthy() -> list[Finding]:
    """Every stage passing, with a warning or two: what most reports look like."""
    found = [
        catalog.finding("dns.ns.ok", target=Target(host="example.com"), summary="2 agree"),
        catalog.finding("mx.found", target=MX, summary="MX: 10 mx.example.com"),
        catalog.finding("smtp.ok", target=MX, summary="220 mx ESMTP"),
        catalog.finding("tls.ok", target=MX, summary="TLSv1.3"),
        catalog.finding("spf.ok", target=Target(host="example.com"), summary="v=spf1 mx -all"),
        catalog.finding("spf.missing", target=Target(host="example.com"), summary="no SPF"),
        catalog.finding("auth.ok", target=MX, summary="PLAIN accepted"),
        catalog.finding("autoconfig.missing", target=Target(host="example.com"), summary="none"),
        catalog.finding("delivery.ok", target=MX, summary="delivered in 2 s"),
        catalog.finding("sendtest.ok", target=MX, summary="signed and aligned"),
    ]
    assert {f.stage for f in found} == set(Stage)
    return found


def test_a_short_report_is_one_message_with_every_stage_in_order() -> None:
    report = _report(_healthy())
    [page] = report_pages(report)
    assert _headers(page) == [s.value.upper() for s in Stage]
    assert page.message.text == (
        "mailcheck example.com: DNS, CONNECT, TLS, POLICY, AUTH, AUTOCONFIG, DELIVERY, SENDTEST"
    )
    # Each stage exactly as its own reply shows it, one after another.
    alone = [stage_pages(report, s) for s in Stage]
    assert all(len(pages) == 1 for pages in alone)
    assert page.message.blocks == [b for [p] in alone for b in p.message.blocks]
    assert sorted(page.findings, key=report.findings.index) == list(report.findings)
    assert len(page.findings) == len(report.findings)


def test_the_stages_filter_keeps_stage_order_and_skips_empty_stages() -> None:
    report = _report(_healthy())
    [page] = report_pages(report, [Stage.TLS, Stage.DNS])
    assert _headers(page) == ["DNS", "TLS"]
    assert page.message.text == "mailcheck example.com: DNS, TLS"
    assert {f.stage for f in page.findings} == {Stage.DNS, Stage.TLS}
    assert len(page.findings) == 3
    only_dns = _report([f for f in _healthy() if f.stage is Stage.DNS])
    [dns] = report_pages(only_dns, [Stage.DNS, Stage.TLS])
    assert _headers(dns) == ["DNS"] and dns.message.text == "mailcheck example.com: DNS"
    assert report_pages(only_dns, [Stage.TLS]) == []
    assert report_pages(report, []) == []


def test_an_empty_report_has_no_pages() -> None:
    assert report_pages(_report([])) == []


def test_the_notification_text_is_escaped_and_bounded() -> None:
    [page] = report_pages(_report(_healthy(), display="<!channel> " + "bücher" * 100))
    text = page.message.text
    assert text.startswith("mailcheck &lt;!channel&gt; bücher") and text.endswith("…")
    assert len(text) == 300 and "<" not in text


def _long() -> list[Finding]:
    """Hundreds of findings in every check stage, most of them problems, some
    sharing a code (grouped), with the nameserver table in DNS."""
    codes = [code for stage in Stage for code in _codes(stage)]
    found = [
        catalog.finding(
            codes[i % len(codes)],
            target=Target(host=f"mx{i}.example.com", address="192.0.2.25", port=25),
            summary=f"F{i:03d}# " + "s" * 400,
            detail=f"detail of F{i:03d} " + "d" * 600 if i % 4 else None,
            evidence=[f"E{i:03d}# " + "e" * 200],
            reproduce=f"openssl s_client -connect mx{i}.example.com:25",
            severity=(Severity.ERROR, Severity.WARNING, Severity.INCONCLUSIVE)[i % 3]
            if i % 7
            else Severity.OK,
        )
        for i in range(400)
    ]
    found.append(
        catalog.finding(
            "dns.ns.serial_mismatch",
            target=Target(host="example.com"),
            summary="serials differ",
            data={TABLE: [f"ns{n}.example.com  answered  serial {n}" for n in range(8)]},
        )
    )
    return found


def test_a_long_report_is_paged_within_the_limits_and_nothing_is_lost() -> None:
    report = _report(_long())
    pages = report_pages(report)
    per_stage = [p for s in Stage for p in stage_pages(report, s)]
    assert 1 < len(pages) < len(per_stage)  # packed tighter than a reply per stage page
    for page in pages:
        assert 1 <= len(page.message.blocks) <= 50
        assert _chars(page) <= 11_000
        assert page.message.blocks[0]["type"] == "header"  # a page says which stage it shows
        assert page.message.blocks[-1]["type"] != "header"  # a header goes with its stage
    for f in report.findings:  # each on exactly one page, which counts it
        assert sum(p.findings.count(f) for p in pages) == 1
    # The same units as each stage's own replies, in the same order, only packed.
    body = [b for p in pages for b in p.message.blocks if b["type"] != "header"]
    assert body == [b for p in per_stage for b in p.message.blocks if b["type"] != "header"]
    for i, f in enumerate(report.findings[:400]):
        if f.severity is Severity.OK:
            continue  # folded by code into a line
        holding = [p for p in pages if any(f"F{i:03d}#" in s for s in _strings(p.message.blocks))]
        assert len(holding) == 1, i  # a finding's entry is never split between messages
        assert [p for p in pages if f in p.findings] == holding
        assert any(f"E{i:03d}#" in s for s in _strings(holding[0].message.blocks)), i


def test_a_stage_going_on_in_the_next_message_says_so() -> None:
    pages = report_pages(_report(_long()))
    seen: list[str] = []
    continued = 0
    for page in pages:
        for header in _headers(page):
            title = header.removesuffix(" (continued)")
            if header != title:
                continued += 1
                assert seen[-1] == title and page.message.blocks[0]["text"]["text"] == header
            else:
                assert title not in seen
                seen.append(title)
    assert seen == [s.value.upper() for s in Stage]
    assert continued >= 3


def test_a_single_stage_is_paged_as_stage_pages_pages_it() -> None:
    report = _report(_long())
    for stage in Stage:
        assert report_pages(report, [stage]) == stage_pages(report, stage)
        assert stage_pages(report, stage)[0].message.text == (
            f"mailcheck example.com: {stage.value.upper()}"
        )
