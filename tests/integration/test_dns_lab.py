"""The DNS stage against the lab's real NSD: exact codes per scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from checks.core.config import EngineConfig
from checks.core.model import CheckRequest, Report, Severity, Stage
from checks.core.names import normalize_domain
from checks.engine.runner import run
from checks.report import jsonreport
from tests.conftest import LAB_NETWORK, lab_engine_config
from tests.lab.cachedns import StaleCacheResolver
from tests.lab.zones import (
    BY_DOMAIN,
    CACHE_RESOLVER_ADDRESS,
    CACHE_SCENARIO,
    CACHE_STALE_MX,
    NS_ADDRESS,
    SCENARIOS,
    UNREACHABLE_NS_ADDRESS,
    Scenario,
)

pytestmark = pytest.mark.lab


async def check(domain: str, config: EngineConfig) -> Report:
    name = normalize_domain(domain)
    dns_only = frozenset({Stage.DNS})
    return await run(CheckRequest(name.ascii, name.unicode, domain, dns_only), config)


def problems(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.severity > Severity.OK}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.domain for s in SCENARIOS])
async def test_scenario_reports_exactly_its_codes(scenario: Scenario, lab_config) -> None:
    report = await check(scenario.domain, lab_config)
    assert problems(report) == scenario.expect, scenario.about
    assert all(t.outcome == "done" for t in report.timings), report.timings


async def test_healthy_domain_is_clean_and_shows_what_it_found(lab_config) -> None:
    report = await check("healthy.test", lab_config)
    assert report.at_least(Severity.INFO) == ()
    summaries = {f.code: f.summary for f in report.findings}
    assert summaries["mx.found"] == "MX: 10 mx1.healthy.test, 20 mx2.healthy.test"
    assert summaries["ptr.ok"].startswith("127.1.1.")
    assert "_imaps._tcp: imap.healthy.test:993" in summaries["srv.found"]
    assert summaries["mailconf.found"].startswith("https://autoconfig.healthy.test/")
    assert report.facts["mx"] == [[10, "mx1.healthy.test"], [20, "mx2.healthy.test"]]
    assert report.facts["ptr"] == {
        "127.1.1.1": ["mx1.healthy.test"],
        "127.1.1.2": ["mx2.healthy.test"],
    }
    # Every probe left a transcript of the lookups it made.
    assert any(
        "MX healthy.test -> 10 mx1.healthy.test." in line for line in report.transcripts["dns.mx"]
    )


async def test_findings_carry_targets_and_reproduce_commands(lab_config) -> None:
    report = await check("mxprivate.test", lab_config)
    private = sorted(
        (f.target.host, f.target.address) for f in report.findings if f.code == "mx.address.private"
    )
    assert private == [
        ("lo.mxprivate.test", "127.0.0.1"),
        ("mx.mxprivate.test", "10.0.0.25"),
        ("mx.mxprivate.test", "2001:db8::25"),
    ]
    unresolvable = [
        f
        for f in (await check("mxnoaddr.test", lab_config)).findings
        if f.code == "mx.host.unresolvable"
    ]
    assert {f.target.host for f in unresolvable} == {"mx1.mxnoaddr.test", "ghost.mxnoaddr.test"}
    assert all(f.reproduce and f.reproduce.endswith(f"@{NS_ADDRESS}") for f in unresolvable)


async def test_loopback_is_refused_unless_the_operator_allows_it(lab_dns) -> None:
    from dataclasses import replace

    from checks.core.targets import TargetPolicy

    closed = replace(lab_engine_config(lab_dns), policy=TargetPolicy())
    report = await check("healthy.test", closed)
    # The nameservers too are on loopback: named, never asked.
    assert problems(report) == {"mx.address.private", "dns.ns.address.private"}
    asked = [line for lines in report.transcripts.values() for line in lines if "+norec" in line]
    assert asked == []
    assert {f.target.address for f in report.findings if f.code == "mx.address.private"} == {
        "127.1.1.1",
        "127.1.1.2",
    }
    # No PTR lookups for addresses we may not use.
    assert report.transcripts["dns.ptr"] == ()


async def test_a_dead_resolver_is_inconclusive(lab_dns) -> None:
    config = lab_engine_config(UNREACHABLE_NS_ADDRESS, dns=0.5)  # nothing listens there
    report = await check("healthy.test", config)
    assert [(f.code, f.severity) for f in report.findings] == [
        ("dns.resolver.failure", Severity.INCONCLUSIVE)
    ]
    assert "no answer within 0.5 s" in report.findings[0].summary


@pytest.mark.parametrize(
    "typed", ["Healthy.TEST.", "postmaster@healthy.test", "https://healthy.test/webmail"]
)
async def test_any_accepted_input_form_checks_the_same_domain(typed: str, lab_config) -> None:
    report = await check(typed, lab_config)
    assert report.request.domain == "healthy.test" and report.request.original == typed
    assert report.facts["mx"] == [[10, "mx1.healthy.test"], [20, "mx2.healthy.test"]]


# -- through the command line -------------------------------------------------------


def mailcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = ["--resolver", NS_ADDRESS, "--allow-target", LAB_NETWORK, "--stage", "dns"]
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "check", *base, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.domain for s in SCENARIOS])
def test_json_output_validates_and_exit_status_follows_severity(
    scenario: Scenario, lab_dns
) -> None:
    result = mailcheck("--json", scenario.domain)
    doc = json.loads(result.stdout)
    jsonschema.validate(
        doc, jsonreport.schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    codes = {f["code"] for f in doc["findings"] if f["severity"] != "ok"}
    assert codes == scenario.expect
    has_error = any(f["severity"] == "error" for f in doc["findings"])
    assert result.returncode == (1 if has_error else 0), result.stderr


def test_schema_rejects_a_report_missing_required_fields(lab_dns) -> None:
    doc = json.loads(mailcheck("--json", "mxcname.test").stdout)
    del doc["findings"][0]["code"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, jsonreport.schema())


def test_terminal_report_explains_each_problem(lab_dns) -> None:
    result = mailcheck("mxcname.test")
    assert result.returncode == 1
    out = result.stdout
    assert "mx.cname" in out and "MX host mail.mxcname.test is an alias" in out
    assert "Fix: Point the MX at the canonical host name" in out
    assert f"Reproduce: dig +short CNAME mail.mxcname.test @{NS_ADDRESS}" in out
    assert "1 error" in out


def test_idn_shows_both_forms(lab_dns) -> None:
    result = mailcheck("bücher.test")
    assert result.returncode == 0
    assert "bücher.test" in result.stdout and "checked as xn--bcher-kva.test" in result.stdout
    doc = json.loads(mailcheck("--json", "BÜCHER.test").stdout)
    assert (doc["domain"], doc["domain_display"]) == ("xn--bcher-kva.test", "bücher.test")


def test_fail_on_lowers_the_bar(lab_dns) -> None:
    assert mailcheck("ptrmissing.test").returncode == 0  # a warning only
    assert mailcheck("--fail-on", "warning", "ptrmissing.test").returncode == 1
    assert mailcheck("--fail-on", "warning", "healthy.test").returncode == 0


def test_settings_from_the_environment(lab_dns) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check", "--json", "--stage", "dns", "healthy.test"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "MAILCHECK_RESOLVER": NS_ADDRESS,
            "MAILCHECK_ALLOW_TARGETS": LAB_NETWORK,
        },
    )
    doc = json.loads(result.stdout)
    assert result.returncode == 0 and doc["worst"] == "ok" and doc["stages"] == ["dns"]


# What a check of CACHE_SCENARIO through the stale-cache resolver reports
# (test_a_stale_cache_is_a_propagation_delay).
CACHE_CODES = frozenset({"dns.propagation.pending"})


async def test_a_stale_cache_is_a_propagation_delay(lab_dns) -> None:
    with StaleCacheResolver():
        cached = await check(CACHE_SCENARIO.domain, lab_engine_config(CACHE_RESOLVER_ADDRESS))
        healthy = await check("healthy.test", lab_engine_config(CACHE_RESOLVER_ADDRESS))
    assert problems(cached) == CACHE_CODES
    (pending,) = [f for f in cached.findings if f.code == "dns.propagation.pending"]
    old = f"still serves the old MX for dns-cache.test for up to 41 minutes more: {CACHE_STALE_MX}"
    assert old in pending.summary
    assert "10 mx-new.dns-cache.test." in pending.summary
    assert problems(healthy) == set()  # a resolver in front changes nothing by itself


async def test_the_nameserver_table_says_which_server_said_what(lab_config) -> None:
    report = await check("dns-stale.test", lab_config)
    table = {s["address"]: s for s in report.facts["nameservers"]["servers"]}
    assert table[NS_ADDRESS]["serial"] == table["127.1.0.54"]["serial"] + 1
    assert report.facts["nameservers"]["differ"]["MX dns-stale.test"] == {
        f"ns.test [{NS_ADDRESS}]": ["10 mx-new.dns-stale.test."],
        "ns2.dns-stale.test [127.1.0.54]": ["10 mx-old.dns-stale.test."],
    }


def test_the_terminal_shows_the_nameserver_table(lab_dns) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "check",
            "dns-stale.test",
            "--stage",
            "dns",
            "--resolver",
            NS_ADDRESS,
            "--allow-target",
            LAB_NETWORK,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert "Nameservers" in result.stdout
    assert f"ns.test [{NS_ADDRESS}]" in result.stdout and "serial" in result.stdout
    assert "dns.ns.serial_mismatch" in result.stdout


def test_scenarios_cover_every_dns_stage_code() -> None:
    from checks.core.catalog import CATALOG

    expected = {c for s in SCENARIOS for c in s.expect} | CACHE_CODES
    dns_codes = {
        c
        for c, e in CATALOG.items()
        if e.stage is Stage.DNS and e.severity > Severity.OK and not c.startswith("engine.")
    }
    assert dns_codes - expected == set(), "a DNS code has no lab scenario"
    assert BY_DOMAIN["healthy.test"].expect == frozenset()


def test_live_progress_on_a_terminal(lab_dns) -> None:
    """On a TTY, stderr shows each probe as it finishes; stdout keeps the report."""
    import pty

    master, slave = pty.openpty()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bot.cli",
                "check",
                "--resolver",
                NS_ADDRESS,
                "--allow-target",
                LAB_NETWORK,
                "--stage",
                "dns",
                "healthy.test",
            ],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=60,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "200"},
        )
        os.close(slave)
        progress = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed and drained
                break
            if not chunk:
                break
            progress += chunk
    finally:
        os.close(master)
    text = progress.decode("utf-8", "replace")
    assert result.returncode == 0
    for probe in ("dns.mx", "dns.mx.hosts", "dns.ptr", "dns.srv", "dns.mailconf"):
        assert f"{probe} " in text, text
    assert "dns.mx" not in result.stdout.split("DNS", 1)[0]  # progress stays off stdout
    assert "mx.found" in result.stdout
