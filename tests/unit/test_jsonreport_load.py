"""Reading a report back from its JSON (checks.report.jsonreport.loads): the inverse
of dumps, and a ValueError naming the field for anything else."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from checks.core import catalog
from checks.core.model import CheckRequest, ProbeTiming, Report, Severity, Stage, Target
from checks.engine import sendtest
from checks.report import jsonreport
from checks.stages.consistency import TABLE

MX = Target(host="mx.xn--bcher-kva.de", address="2001:db8::25", port=25, protocol="smtp")


def _report(stages: frozenset[Stage] | None = frozenset({Stage.DNS, Stage.TLS})) -> Report:
    findings = (
        catalog.finding(
            "dns.ns.ok",
            target=Target(host="xn--bcher-kva.de"),
            summary="2 nameservers agree",
            data={TABLE: ["ns1  ok  serial 7", "ns2  ok  serial 7"], "nested": {"a": [1, None]}},
        ),
        catalog.finding(
            "mx.cname",
            target=MX,
            summary="MX points at a CNAME: mx → bücher-mail.de",
            evidence=["bücher.de. MX 10 mx", "", "mx CNAME bücher-mail.de"],
            reproduce="dig +short MX xn--bcher-kva.de",
            data={"ratio": 0.5, "ok": False, "names": ["a", "b"]},
        ),
        catalog.finding("smtp.banner.timeout", target=MX, summary="no banner in 30 s"),
        catalog.finding(
            "tls.cert.expired",
            target=Target(host="mx", address="192.0.2.25", port=465, protocol="smtps"),
            summary="expired",
            detail="a detail of our own",
            fix="",
            severity=Severity.INCONCLUSIVE,
        ),
        catalog.finding("autoconfig.missing", target=Target(), summary="none"),
        catalog.finding(
            "engine.deadline", target=Target(port=0), summary="late", stage=Stage.DELIVERY
        ),
    )
    return Report(
        request=CheckRequest(
            domain="xn--bcher-kva.de", display="bücher.de", original="Bücher.DE.", stages=stages
        ),
        started_at=datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2))),
        duration=12.3456,
        findings=findings,
        timings=(
            ProbeTiming("dns.mx", Stage.DNS, 0.0, 0.125, "done"),
            ProbeTiming("smtp.banner", Stage.CONNECT, 0.5, 30.0001, "failed"),
            ProbeTiming("delivery.roundtrip", Stage.DELIVERY, 31.0, 0.0, "skipped"),
        ),
        transcripts={"smtp.banner": ("C: connect 192.0.2.25:25", "S: (nothing)"), "x": ()},
        facts={"mx": ["10 mx.xn--bcher-kva.de."], "ptr": {"192.0.2.25": None}, "n": 3},
    )


def test_a_report_comes_back_equal_from_its_json() -> None:
    report = _report()
    loaded = jsonreport.loads(jsonreport.dumps(report))
    assert loaded == report  # every field, typed: enums, tuples, datetimes
    assert loaded.findings[1].evidence == ("bücher.de. MX 10 mx", "", "mx CNAME bücher-mail.de")
    assert loaded.findings[3].severity is Severity.INCONCLUSIVE
    assert loaded.findings[5].stage is Stage.DELIVERY
    assert loaded.request.stages == frozenset({Stage.DNS, Stage.TLS})
    assert loaded.started_at.utcoffset() == timedelta(hours=2)
    assert loaded.worst is Severity.ERROR and loaded.counts() == report.counts()


@pytest.mark.parametrize("stages", [None, frozenset(), frozenset(Stage)])
def test_the_dict_round_trip_is_exact(stages: frozenset[Stage] | None) -> None:
    data = jsonreport.report_to_dict(_report(stages))
    again = jsonreport.report_to_dict(jsonreport.report_from_dict(copy.deepcopy(data)))
    assert again == data
    assert jsonreport.dumps(again) == jsonreport.dumps(data)


def test_what_the_json_does_not_carry_is_left_at_its_default() -> None:
    report = _report()
    asked = CheckRequest(
        domain=report.request.domain,
        display=report.request.display,
        dkim_selectors=("s1",),
        sender_ips=("192.0.2.1",),
        mobileconfig_url="https://example.com/p.mobileconfig",
        account="test",
    )
    loaded = jsonreport.loads(jsonreport.dumps(Report(asked, report.started_at, 1.0, ())))
    assert loaded.request == CheckRequest(domain="xn--bcher-kva.de", display="bücher.de")
    assert loaded.findings == () and loaded.worst is Severity.OK


def test_a_real_send_test_report_round_trips() -> None:
    request = CheckRequest(domain="example.com", display="example.com", original="example.com")
    report = sendtest.timed_out(request, "t-1@mailcheck.invalid", 600.0)
    data = jsonreport.report_to_dict(report)
    assert jsonreport.loads(jsonreport.dumps(report)) == report
    assert jsonreport.report_to_dict(jsonreport.report_from_dict(data)) == data


def test_fields_the_schema_makes_optional_take_the_defaults() -> None:
    data: dict[str, Any] = {
        "schema_version": 1,
        "domain": "example.com",
        "domain_display": "example.com",
        "started_at": "2026-01-02T03:04:05+00:00",
        "duration": 1,
        "worst": "error",
        "counts": {"error": 1},
        "findings": [
            {
                "code": "mx.cname",
                "severity": "error",
                "stage": "dns",
                "summary": "alias",
                "target": {"host": None, "address": None, "port": None, "protocol": None},
            }
        ],
        "timings": [],
    }
    jsonschema.validate(data, jsonreport.schema())
    report = jsonreport.report_from_dict(data)
    assert report.request == CheckRequest(domain="example.com", display="example.com")
    assert report.started_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert report.duration == 1.0 and isinstance(report.duration, float)
    [f] = report.findings
    assert (f.detail, f.evidence, f.fix, f.reproduce, dict(f.data)) == ("", (), "", None, {})
    assert f.target == Target()
    assert report.transcripts == {} and report.facts == {} and report.timings == ()


DELETE = object()


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A change to the report dict: `value` at `path` (dotted; digits index a
    list), or the key deleted when `value` is DELETE."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


BAD: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_set("domain", DELETE), r"^domain: missing$"),
    (_set("domain_display", None), r"^domain_display: not a string$"),
    (_set("schema_version", DELETE), r"^schema_version: missing$"),
    (_set("schema_version", 2), r"^schema_version: 2 is not 1$"),
    (_set("schema_version", True), r"^schema_version: True is not 1$"),
    (_set("input", 7), r"^input: not a string$"),
    (_set("stages", "dns"), r"^stages: not an array$"),
    (_set("stages", ["dns", "smtp"]), r"^stages\[1\]: unknown stage 'smtp'$"),
    (_set("stages", [["dns"]]), r"^stages\[0\]: unknown stage \[\'dns\'\]$"),
    (_set("started_at", DELETE), r"^started_at: missing$"),
    (_set("started_at", "yesterday"), r"^started_at: 'yesterday' is not an ISO 8601 time$"),
    (_set("started_at", 1700000000), r"^started_at: not a string$"),
    (_set("duration", "3"), r"^duration: not a number$"),
    (_set("duration", True), r"^duration: not a number$"),
    (_set("duration", -1.0), r"^duration: -1.0 is not a duration in seconds$"),
    (_set("duration", float("inf")), r"^duration: inf is not a duration in seconds$"),
    (_set("duration", 10**400), r"^duration: inf is not a duration in seconds$"),
    (_set("findings", DELETE), r"^findings: missing$"),
    (_set("findings", {}), r"^findings: not an array$"),
    (_set("findings.0", "mx.cname"), r"^findings\[0\]: not an object$"),
    (_set("findings.1.severity", "fatal"), r"^findings\[1\]\.severity: unknown severity 'fatal'$"),
    (_set("findings.1.severity", "ERROR"), r"^findings\[1\]\.severity: unknown severity 'ERROR'$"),
    (_set("findings.2.stage", "smtp"), r"^findings\[2\]\.stage: unknown stage 'smtp'$"),
    (_set("findings.0.code", DELETE), r"^findings\[0\]\.code: missing$"),
    (_set("findings.0.summary", None), r"^findings\[0\]\.summary: not a string$"),
    (_set("findings.0.detail", None), r"^findings\[0\]\.detail: not a string$"),
    (_set("findings.0.fix", ["x"]), r"^findings\[0\]\.fix: not a string$"),
    (_set("findings.0.reproduce", 1), r"^findings\[0\]\.reproduce: not a string$"),
    (_set("findings.1.evidence", "one line"), r"^findings\[1\]\.evidence: not an array$"),
    (_set("findings.1.evidence.2", None), r"^findings\[1\]\.evidence\[2\]: not a string$"),
    (_set("findings.1.data", ["x"]), r"^findings\[1\]\.data: not an object$"),
    (_set("findings.1.target", DELETE), r"^findings\[1\]\.target: missing$"),
    (_set("findings.1.target", None), r"^findings\[1\]\.target: not an object$"),
    (_set("findings.1.target.host", DELETE), r"^findings\[1\]\.target\.host: missing$"),
    (_set("findings.1.target.address", 4), r"^findings\[1\]\.target\.address: not a string$"),
    (_set("findings.1.target.protocol", DELETE), r"^findings\[1\]\.target\.protocol: missing$"),
    (_set("findings.1.target.port", "25"), r"^findings\[1\]\.target\.port: '25' is not a port$"),
    (_set("findings.1.target.port", 65536), r"^findings\[1\]\.target\.port: 65536 is not a port"),
    (_set("findings.1.target.port", False), r"^findings\[1\]\.target\.port: False is not a port"),
    (_set("timings", DELETE), r"^timings: missing$"),
    (_set("timings.1", []), r"^timings\[1\]: not an object$"),
    (_set("timings.1.stage", "tcp"), r"^timings\[1\]\.stage: unknown stage 'tcp'$"),
    (_set("timings.2.outcome", DELETE), r"^timings\[2\]\.outcome: missing$"),
    (_set("timings.0.probe", None), r"^timings\[0\]\.probe: not a string$"),
    (_set("timings.0.started", None), r"^timings\[0\]\.started: not a number$"),
    (_set("timings.0.duration", -0.5), r"^timings\[0\]\.duration: -0.5 is not a duration"),
    (_set("transcripts", []), r"^transcripts: not an object$"),
    (_set("transcripts.x", "S: 220"), r"^transcripts\['x'\]: not an array$"),
    (_set("transcripts.x", [220]), r"^transcripts\['x'\]\[0\]: not a string$"),
    (_set("facts", None), r"^facts: not an object$"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_input_is_a_value_error_naming_the_field(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = jsonreport.report_to_dict(_report())
    change(data)
    with pytest.raises(ValueError, match=message):
        jsonreport.report_from_dict(data)
    with pytest.raises(ValueError, match=message):
        jsonreport.loads(json.dumps(data))


def test_an_unknown_value_is_quoted_only_briefly() -> None:
    data = jsonreport.report_to_dict(_report())
    data["findings"][0]["severity"] = "x" * 100_000
    with pytest.raises(ValueError) as caught:
        jsonreport.report_from_dict(data)
    assert len(str(caught.value)) < 100


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"Expecting value"),
        ("{", r"Expecting property name"),
        ("[]", r"^report: not an object$"),
        ('"report"', r"^report: not an object$"),
        ("null", r"^report: not an object$"),
        ('{"facts": ' + "[" * 100_000 + "]" * 100_000 + "}", r"^report: nested too deeply$"),
    ],
)
def test_text_that_is_not_a_report_is_a_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        jsonreport.loads(text)


def test_json_nan_and_infinity_are_refused() -> None:
    text = jsonreport.dumps(_report())
    for bad in ("NaN", "Infinity", "-Infinity"):
        changed = text.replace('"duration": 12.3456', f'"duration": {bad}', 1)
        assert changed != text
        with pytest.raises(ValueError, match=r"^duration: "):
            jsonreport.loads(changed)


def test_a_non_dict_is_refused_by_report_from_dict() -> None:
    for bad in ([], "x", None):
        with pytest.raises(ValueError, match=r"^report: not an object$"):
            jsonreport.report_from_dict(bad)  # type: ignore[arg-type]
