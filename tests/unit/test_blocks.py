"""The Slack rendering: hostile text stays inert, and every message fits Slack's limits."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest
from slack_sdk.models.blocks import Block

from bot.blocks import (
    Message,
    changes_message,
    code_block,
    code_span,
    escape,
    pending_message,
    report_messages,
    stage_messages,
    stage_pages,
    verdict_message,
)
from bot.terminal import plain_text
from checks.core import catalog
from checks.core.model import CheckRequest, Finding, Report, Severity, Stage, Target
from checks.report.diff import ReportDiff

HOSTILE = (
    "<!channel> <!here> <!everyone> <!subteam^S1|team> <@U123ABC> <#C123|x> "
    "<https://evil.example|click> &amp; https://x.evil.example mail@evil.example "
    "*bold* _it_ ~strike~ :x:"
)
CONTROLS = "\x1b[31mred\x00nul\u202eflip\r\n\x07"
TARGET = Target(host="mx.evil.example", address="192.0.2.25", port=25, protocol="smtp")


def _report(findings: Sequence[Finding], domain: str = "example.com") -> Report:
    return Report(
        request=CheckRequest(domain=domain, display=domain),
        started_at=datetime(2024, 1, 1, tzinfo=UTC),
        duration=3.25,
        findings=tuple(findings),
    )


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _all_text(m: Message) -> list[str]:
    return [m.text, *_strings(m.blocks)]


def _outside_code(text: str) -> str:
    """What Slack shows as mrkdwn: the text without code blocks and spans."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```[\s\S]*?```", "", text))


def _check(messages: Sequence[Message]) -> None:
    """Slack's limits, and a round trip through slack_sdk's parser and validators."""
    for m in messages:
        assert 1 <= len(m.blocks) <= 50
        assert sum(len(s) for s in _all_text(m)) <= 11_000
        for d in m.blocks:
            block = Block.parse(d)
            assert block is not None
            assert block.to_dict() == d
            if d["type"] == "section":
                assert len(d["text"]["text"]) <= 3000
            elif d["type"] == "header":
                assert len(d["text"]["text"]) <= 150
            elif d["type"] == "context":
                assert len(d["elements"]) <= 10


def _hostile_findings() -> list[Finding]:
    return [
        catalog.finding(
            "ptr.missing",
            target=TARGET,
            summary=HOSTILE,
            evidence=[HOSTILE, "```", f"x``` {HOSTILE}", "````", CONTROLS],
            reproduce=f"dig +short -x 192.0.2.25 {HOSTILE}",
        ),
        catalog.finding(
            "smtp.banner.rejected",
            target=TARGET,
            summary="421 " + CONTROLS,
            detail=HOSTILE,
            fix=HOSTILE,
            evidence=[CONTROLS],
        ),
        catalog.finding("mx.found", target=TARGET, summary=HOSTILE + CONTROLS),
    ]


def test_escape_makes_entities_and_drops_controls() -> None:
    assert escape("a & <b> " + CONTROLS) == "a &amp; &lt;b&gt; [31mrednulflip "
    assert escape("&amp;") == "&amp;amp;"


def test_remote_text_never_forms_mentions_links_or_formatting() -> None:
    report = _report(_hostile_findings(), domain="<!channel>.example")
    messages = report_messages(report)
    messages.append(pending_message(HOSTILE, "<!here>", [HOSTILE]))
    messages.append(verdict_message(report, HOSTILE, "rerun"))
    _check(messages)
    for m in messages:
        for s in _all_text(m):
            assert "<" not in s and ">" not in s
            assert "&amp;amp;" in s or "&amp;" not in s.replace("&amp;amp;", "")
        for d in m.blocks:
            texts = [d["text"]["text"]] if "text" in d else []
            texts += [e["text"] for e in d.get("elements", []) if e["type"] == "mrkdwn"]
            for text in texts:
                shown = _outside_code(text)
                for word in ("evil", "bold", "strike", "channel", "here", "U123"):
                    assert word not in shown, (word, text)


def test_a_fence_in_evidence_cannot_close_the_code_block() -> None:
    block = code_block(["```", "a```b", "`", "``x``"], 1000)
    assert block.startswith("```\n") and block.endswith("\n```")
    assert block.count("```") == 2 and "``" not in block[3:-3]
    assert "`" not in code_span("a ``` b `c`", 100)[1:-1]
    [message] = stage_messages(_report(_hostile_findings()[:1]), Stage.DNS)
    evidence = next(d["text"]["text"] for d in message.blocks if "Evidence" in str(d))
    assert evidence.count("```") == 4  # the reproduce block and the evidence block
    assert evidence.rindex("x`\u200b`\u200b`") < evidence.rindex("```")


def test_control_characters_do_not_survive() -> None:
    report = _report(_hostile_findings())
    for m in [*report_messages(report), verdict_message(report, "U1" + CONTROLS, "v")]:
        for s in _all_text(m):
            assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]", s), s
    assert "\n" in code_block(["one", "two\nthree"], 100)
    assert "\n" not in code_span("one\ntwo", 100)


def test_cutting_never_splits_an_entity() -> None:
    for limit in range(3, 40):
        span = code_span("&<>" * 50, limit)
        block = code_block(["&" * 200], limit + 6)
        assert len(span) <= limit and len(block) <= limit + 6
        for text in (span, block):
            assert not re.search(r"&(?!amp;|lt;|gt;)", text), text
    assert code_span("", 10) == "" and code_block([" "], 10) == ""


def test_a_huge_report_is_paged_within_the_limits_and_nothing_is_lost() -> None:
    codes = list(catalog.CATALOG)
    long_lines = ("&<x" * 3400, "A" * 10_000) * 20  # 10 KB lines, growing when escaped
    findings = [
        catalog.finding(
            codes[i % len(codes)],
            target=TARGET,
            summary=f"F{i:03d}# " + "s" * 5000,
            evidence=long_lines,
            reproduce="openssl s_client " + "r" * 5000,
            detail="d" * 5000 if i % 3 else None,
            fix="f" * 5000 if i % 5 else None,
        )
        for i in range(300)
    ]
    messages = report_messages(_report(findings))
    _check(messages)
    assert len(messages) > 10
    pages = [page for stage in Stage for page in stage_pages(_report(findings), stage)]
    assert [p.message for p in pages] == messages
    for f in findings:  # each on one page, which counts it if the thread stops short
        assert sum(p.findings.count(f) for p in pages) == 1
    for i, f in enumerate(findings):
        if f.severity is Severity.OK:
            continue  # folded by code into a line; each in the attached file
        holding = [m for m in messages if any(f"F{i:03d}#" in s for s in _all_text(m))]
        assert len(holding) == 1, i
        assert sum(s.count(f"F{i:03d}#") for s in _all_text(holding[0])) == 1
        assert any(f.code in s for s in _all_text(holding[0]))
    evidence = [s for m in messages for s in _strings(m.blocks) if "*Evidence:*" in s]
    assert evidence and all("25 more lines not shown" in s for s in evidence)


def test_forty_ok_findings_fit_in_one_message() -> None:
    oks = [catalog.finding("mx.found", target=TARGET, summary=f"MX: 10 mx{i}") for i in range(40)]
    oks.append(catalog.finding("ptr.ok", target=TARGET, summary="192.0.2.25 ↔ mx"))
    [message] = stage_messages(_report(oks), Stage.DNS)
    _check([message])
    assert [d["type"] for d in message.blocks] == ["header", "context"]
    assert [e["text"] for e in message.blocks[1]["elements"]] == [
        "✔ `mx.found \u00d7 40: MX records (mx.evil.example)`",
        "✔ `ptr.ok: 192.0.2.25 ↔ mx`",
    ]


def test_stage_shows_problems_worst_first_then_oks() -> None:
    findings = [
        catalog.finding("mx.found", target=TARGET, summary="MX: 10 mx"),
        catalog.finding("srv.missing", target=TARGET, summary="no SRV"),
        catalog.finding("ptr.missing", target=TARGET, summary="no PTR", reproduce="dig -x"),
        catalog.finding("mx.cname", target=TARGET, summary="alias"),
        catalog.finding("smtp.ok", target=TARGET, summary="smtp fine"),
    ]
    report = _report(findings)
    [dns] = stage_messages(report, Stage.DNS)
    _check([dns])
    texts = [s for s in _strings(dns.blocks) if s.startswith((":", "✔"))]
    assert [t.split("`")[1].split(":")[0] for t in texts] == [
        "mx.cname",
        "ptr.missing",
        "srv.missing",
        "mx.found",
    ]
    assert dns.blocks[0]["text"]["text"] == "DNS"
    first = dns.blocks[1]["text"]["text"]
    assert first.startswith(":x: `mx.cname`  `alias`\n*MX points at a CNAME.* RFC 2181")
    assert "*Fix:* Point the MX" in first
    assert stage_messages(report, Stage.TLS) == []
    assert [m.blocks[0]["text"]["text"] for m in report_messages(report)] == ["DNS", "CONNECT"]


def test_verdict_counts_duration_and_rerun_button() -> None:
    sev = [Severity.ERROR] * 2 + [Severity.WARNING, Severity.OK, Severity.INFO]
    sev += [Severity.INCONCLUSIVE] * 3
    findings = [
        catalog.finding("mx.cname", target=TARGET, summary=str(i), severity=s)
        for i, s in enumerate(sev)
    ]
    message = verdict_message(_report(findings), "U123ABC", "example.com|dns,tls")
    _check([message])
    line = message.blocks[0]["text"]["text"]
    assert line.startswith(":x: `example.com`: *2 errors, 1 warning, 3 inconclusive* · 3.2 s")
    assert line.endswith("requested by <@U123ABC>")
    assert message.text == "example.com: 2 errors, 1 warning, 3 inconclusive"
    [button] = message.blocks[1]["elements"]
    assert button["action_id"] == "mailcheck_rerun"
    assert button["value"] == "example.com|dns,tls"
    assert button["text"]["text"] == "Re-run"

    info_only = [catalog.finding("mx.null", target=TARGET, summary="null MX")]
    calm = verdict_message(_report(info_only), "W0ABC", "v")
    assert calm.blocks[0]["text"]["text"].startswith(":white_check_mark: `example.com`: *no prob")
    assert verdict_message(_report(findings), "U1", "x" * 2000).blocks[1]
    for bad in ("x" * 2001, ""):
        with pytest.raises(ValueError):
            verdict_message(_report(findings), "U1", bad)


def test_pending_message_mentions_only_a_valid_requester() -> None:
    good = pending_message("bücher.de", "U123ABC", None)
    _check([good])
    assert good.blocks[0]["text"]["text"].endswith("requested by <@U123ABC>")
    assert "<" not in good.text and "bücher.de" in good.text
    for bad in ("<!channel>", "U123ABC>", "u123abc", "U1", "U123\n", "@here", "U" * 40):
        message = pending_message("example.com", bad, ["dns", "tls"])
        _check([message])
        for s in _all_text(message):
            assert "<@" not in s and "<!" not in s
        assert "Stages: `dns, tls`" in str(message.blocks)


# --- a readable thread: one entry per code, the table once, passes folded ----------


def _text(messages: Sequence[Message]) -> str:
    return "\n".join(s for m in messages for s in _strings(m.blocks))


def _dnsbl_hits() -> list[Finding]:
    return [
        catalog.finding(
            "dnsbl.listed",
            target=Target(host=f"mx{i}.example.com", address=f"192.0.2.{i}"),
            summary=f"192.0.2.{i} is listed on bl{i}.example.net: spam source",
            evidence=[f"127.0.0.{i + 1}"],
            reproduce=f"dig +short {i}.2.0.192.bl{i}.example.net A",
        )
        for i in range(1, 5)
    ]


def test_findings_of_one_code_are_one_entry_listing_their_targets() -> None:
    entry = catalog.entry("dnsbl.listed")
    messages = stage_messages(_report(_dnsbl_hits()), Stage.POLICY)
    _check(messages)
    text = _text(messages)
    assert text.count("`dnsbl.listed`") == 1, text
    assert text.count(escape(entry.why)) == 1
    assert text.count(escape(entry.fix)) == 1
    for i in range(1, 5):
        assert text.count(f"192.0.2.{i} is listed on bl{i}.example.net") == 1
        assert text.count(f"dig +short {i}.2.0.192.bl{i}.example.net A") == 1
        assert text.count(f"127.0.0.{i + 1}") == 1


def test_a_group_too_big_for_one_message_is_paged_and_loses_no_target() -> None:
    hits = [
        catalog.finding(
            "dnsbl.listed",
            target=Target(host="mx.example.com", address=f"192.0.2.{i}"),
            summary=f"H{i:03d}# " + "s" * 400,
            evidence=["e" * 300] * 20,
            reproduce="dig " + "r" * 400,
        )
        for i in range(120)
    ]
    messages = stage_messages(_report(hits), Stage.POLICY)
    _check(messages)
    assert len(messages) > 1
    text = _text(messages)
    for i in range(120):
        assert text.count(f"H{i:03d}#") == 1, i


def _nameserver_findings() -> list[Finding]:
    rows = [
        "ns1.example.com [192.0.2.53]  lame         not authoritative",
        "ns2.example.com [192.0.2.54]  ok           serial 2026112602",
        "ns3.example.com [192.0.2.55]  ok           serial 2026112601",
    ]
    data = {"nameservers": rows}
    return [
        catalog.finding(
            "dns.ns.lame",
            target=Target(host="ns1.example.com", address="192.0.2.53"),
            summary="ns1.example.com [192.0.2.53] answers without authority",
            evidence=rows,
            data=data,
        ),
        catalog.finding(
            "dns.ns.serial_mismatch",
            target=Target(host="example.com"),
            summary="ns3.example.com [192.0.2.55] has 2026112601",
            evidence=rows,
            data=data,
        ),
        catalog.finding(
            "dns.ns.records_differ",
            target=Target(host="example.com"),
            summary="MX example.com differs",
            evidence=[
                "ns2.example.com [192.0.2.54]: 10 mx",
                "ns3.example.com [192.0.2.55]: 10 old",
            ],
            data=data,
        ),
    ]


def test_the_nameserver_table_is_shown_once() -> None:
    messages = stage_messages(_report(_nameserver_findings()), Stage.DNS)
    _check(messages)
    text = _text(messages)
    assert text.count("*Nameservers*") == 1
    for row in _nameserver_findings()[0].evidence:
        assert text.count(row) == 1, row
    # Evidence that is not the table stays with its finding.
    assert text.count("ns3.example.com [192.0.2.55]: 10 old") == 1


def _tls_oks(n: int) -> list[Finding]:
    return [
        catalog.finding(
            "tls.ok",
            target=Target(
                host=f"host{i}.example.com", address=f"192.0.2.{i}", port=993, protocol="imaps"
            ),
            summary=f"host{i}.example.com [192.0.2.{i}]:993/imaps: TLSv1.3 TLS_AES_256_GCM_SHA384; "
            f"certificate for host{i}.example.com valid until 2027-12-{7 + i:02d} (364 days), "
            "issued by CN=Example CA",
            reproduce=f"openssl s_client -connect 192.0.2.{i}:993",
            data={"certificates": [{"not_after": f"2027-12-{7 + i:02d}T07:46:17+00:00"}]},
        )
        for i in range(7)
    ]


def test_the_passing_checks_of_a_stage_fold_into_one_line() -> None:
    oks = _tls_oks(7)
    [message] = stage_messages(_report(oks), Stage.TLS)
    _check([message])
    assert [d["type"] for d in message.blocks] == ["header", "context"]
    [element] = message.blocks[1]["elements"]
    line = element["text"]
    assert line.startswith("✔ ") and "7 endpoints" in line, line
    assert "TLSv1.3" in line and "2027-12-07" in line, line
    text = _text([message])
    for i in range(1, 7):
        assert f"host{i}.example.com" not in text  # each endpoint only in the file


def test_hints_speak_slack() -> None:
    findings = [
        catalog.finding(
            "auth.mechanisms",
            target=TARGET,
            summary="imap.example.com [192.0.2.1]:993/imaps offers LOGIN after TLS "
            "(give --account to try them)",
            severity=Severity.INFO,
        ),
        catalog.finding(
            "dkim.none_found", target=TARGET, summary="no DKIM key; give yours with --dkim-selector"
        ),
    ]
    text = _text(report_messages(_report(findings)))
    assert "--account" not in text and "--dkim-selector" not in text, text
    assert "account=NAME" in text and "selector=" in text


def test_the_attached_file_lists_every_finding_and_the_table_once() -> None:
    report = _report([*_nameserver_findings(), *_tls_oks(7), *_dnsbl_hits()])
    text = plain_text(report, resolver="system resolver")
    for row in _nameserver_findings()[0].evidence:
        assert text.count(row) == 1, text
    for i in range(7):  # what the thread folds into one line, the file lists
        assert f"host{i}.example.com [192.0.2.{i}]:993/imaps: TLSv1.3" in text
    for i in range(1, 5):
        assert f"192.0.2.{i} is listed on bl{i}.example.net" in text


def test_changes_since_speak_slack_too() -> None:
    summary = "no DKIM key at 10 common selectors; give yours with --dkim-selector"
    diff = ReportDiff(new=(("info", "dkim.none_found", summary),))
    text = _text([changes_message(diff, "yesterday")])
    assert "--dkim-selector" not in text and "selector=NAME" in text, text
