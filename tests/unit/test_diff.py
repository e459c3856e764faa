"""What changed between two stored reports (checks/report/diff.py)."""

from __future__ import annotations

import copy
from typing import Any

from checks.report.diff import diff_reports


def finding(code: str, severity: str = "error", stage: str = "dns", host: str = "a.test") -> dict:
    return {
        "code": code,
        "severity": severity,
        "stage": stage,
        "target": {"host": host, "address": None, "port": None, "protocol": None},
        "summary": f"{code} on {host}",
    }


def report(*findings: dict, stages: list[str] | None = None, **facts: Any) -> dict:
    return {
        "stages": stages,
        "duration": 1.0,
        "findings": list(findings),
        "timings": [{"probe": "dns.mx", "duration": 0.1}],
        "facts": facts,
    }


def test_identical_reports_differ_in_nothing() -> None:
    one = report(finding("mx.none"), mx=[[10, "mx1.a.test"]])
    diff = diff_reports(one, copy.deepcopy(one))
    assert diff.empty and diff.lines() == []


def test_new_and_resolved_problems_by_code_and_target() -> None:
    before = report(finding("ptr.missing"), finding("tls.cert.expiring", "warning", "tls"))
    after = report(finding("ptr.missing"), finding("dmarc.missing", "error", "policy"))
    diff = diff_reports(before, after)
    assert diff.new == (("error", "dmarc.missing", "dmarc.missing on a.test"),)
    assert diff.resolved == (("warning", "tls.cert.expiring", "tls.cert.expiring on a.test"),)
    assert diff.lines()[:2] == [
        "new error: dmarc.missing: dmarc.missing on a.test",
        "resolved warning: tls.cert.expiring: tls.cert.expiring on a.test",
    ]


def test_ok_findings_are_not_problems() -> None:
    diff = diff_reports(report(finding("mx.found", "ok")), report())
    assert diff.empty


def test_a_narrower_run_resolves_nothing() -> None:
    full = report(finding("dmarc.missing", stage="policy"), finding("ptr.missing"))
    dns_only = report(finding("ptr.missing"), stages=["dns"])
    assert diff_reports(full, dns_only).empty
    assert diff_reports(dns_only, full).empty


def test_changed_records_are_listed_with_both_values() -> None:
    cert = {"certificates": [{"serial": "01", "not_after": "2027-01-01T00:00:00+00:00"}]}
    renewed = {"certificates": [{"serial": "02", "not_after": "2027-06-01T00:00:00+00:00"}]}
    before = report(
        mx=[[10, "mx1.a.test"], [20, "mx2.a.test"]],
        spf={"record": "v=spf1 mx -all"},
        tls={"mx1 [127.1.1.1]:25": cert},
    )
    after = report(
        mx=[[10, "mx1.a.test"]],
        spf={"record": "v=spf1 mx ~all"},
        tls={"mx1 [127.1.1.1]:25": renewed},
    )
    assert diff_reports(before, after).records == (
        "MX: 10 mx1.a.test, 20 mx2.a.test -> 10 mx1.a.test",
        "SPF: v=spf1 mx -all -> v=spf1 mx ~all",
        "certificate mx1 [127.1.1.1]:25: serial 01, expires 2027-01-01 -> serial 02, "
        "expires 2027-06-01",
    )


def test_only_large_latency_changes_count() -> None:
    before = report()
    after = copy.deepcopy(before)
    after["duration"] = 1.5  # 0.5 s slower: noise
    assert diff_reports(before, after).latency == ()
    after["duration"] = 4.2
    assert diff_reports(before, after).latency == ("the whole check took 1.0 s -> 4.2 s",)
