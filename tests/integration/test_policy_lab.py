"""The policy stage (SPF, DMARC) against the lab's DNS: exact codes per scenario."""

from __future__ import annotations

import pytest

from checks.core.config import EngineConfig
from checks.core.model import CheckRequest, Report, Severity, Stage
from checks.engine.runner import run
from tests.lab.zones import POLICY_SCENARIOS, Scenario

pytestmark = pytest.mark.lab


async def check(domain: str, config: EngineConfig) -> Report:
    return await run(CheckRequest(domain, domain, domain, frozenset({Stage.POLICY})), config)


@pytest.mark.parametrize("scenario", POLICY_SCENARIOS, ids=[s.domain for s in POLICY_SCENARIOS])
async def test_scenario_reports_exactly_its_codes(scenario: Scenario, lab_config) -> None:
    report = await check(scenario.domain, lab_config)
    found = {f.code for f in report.findings if f.severity > Severity.OK}
    assert found == scenario.expect, (
        scenario.about,
        [(f.code, f.summary) for f in report.findings],
    )


async def test_healthy_domain_has_spf_and_dmarc(lab_config) -> None:
    report = await check("healthy.test", lab_config)
    assert report.at_least(Severity.INFO) == ()
    codes = {f.code: f for f in report.findings}
    assert codes["spf.ok"].summary == "v=spf1 mx a:smtp.healthy.test -all (2 of 10 DNS lookups)"
    assert codes["dmarc.ok"].summary.startswith("v=DMARC1; p=reject")
    assert report.facts["dmarc"]["p"] == "reject"


async def test_the_lookup_tree_shows_what_each_term_costs(lab_config) -> None:
    report = await check("spf-lookups.test", lab_config)
    (over,) = [f for f in report.findings if f.code == "spf.lookups.exceeded"]
    assert over.severity is Severity.ERROR
    assert over.evidence and "11 lookups" in over.evidence[0]
    assert report.facts["spf"]["lookups"] == 11


async def test_plus_all_is_an_error_but_question_all_a_warning(lab_config) -> None:
    (plus,) = [
        f
        for f in (await check("spf-plusall.test", lab_config)).findings
        if f.code == "spf.all.permissive"
    ]
    assert plus.severity is Severity.ERROR and "+all" in plus.summary


async def test_a_named_selector_is_tried(lab_config) -> None:
    request = CheckRequest(
        "healthy.test", "healthy.test", stages=frozenset({Stage.POLICY}), dkim_selectors=("mail",)
    )
    report = await run(request, lab_config)
    (ok,) = [f for f in report.findings if f.code == "dkim.ok"]
    assert ok.summary == "selector mail: rsa 2048 bits"
    assert ok.target.host == "mail._domainkey.healthy.test"


def test_every_policy_code_has_a_lab_scenario() -> None:
    """Every policy-stage problem code, and the TLS-stage DANE/MTA-STS ones,
    is produced by some lab scenario (policy or mail)."""
    from checks.core.catalog import CATALOG
    from tests.lab.zones import MAIL_SCENARIOS

    covered = {c for s in (*POLICY_SCENARIOS, *MAIL_SCENARIOS) for c in s.expect}
    wanted = {
        c
        for c, e in CATALOG.items()
        if c.startswith(
            ("spf.", "dmarc.", "dkim.", "mtasts.", "tlsrpt.", "dnssec.", "dane.", "dnsbl.")
        )
        and e.severity > Severity.OK
    }
    # Not made in the lab, each for a reason: a chain failure needs a broken
    # resolver (unit-tested in test_dnssec.py); a sender IP is a request option
    # (tested below).
    wanted -= {"dnssec.inconclusive", "spf.sender.not_permitted"}
    assert wanted - covered == set()


async def test_healthy_domain_enforces_mta_sts_and_validates(lab_config) -> None:
    report = await check("healthy.test", lab_config)
    found = {f.code: f for f in report.findings}
    assert found["mtasts.ok"].summary == (
        "mode enforce, max_age 604800 s, mx mx1.healthy.test, *.healthy.test (id 2026112501)"
    )
    assert found["mtasts.ok"].target.host == "mta-sts.healthy.test"
    assert report.facts["mtasts"]["mode"] == "enforce"
    assert found["dnssec.ok"].summary == "healthy.test is signed; its MX records validate"
    assert report.facts["dnssec"]["status"] == "secure"
    assert set(report.facts["dane"]) == {"mx1.healthy.test", "mx2.healthy.test"}
    transcript = "\n".join(report.transcripts["policy.mtasts"])
    assert "GET https://mta-sts.healthy.test/.well-known/mta-sts.txt" in transcript
    assert "200 OK (text/plain" in transcript


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("mtasts-unreachable.test", "connection refused"),
        ("mtasts-badcert.test", "certificate has expired"),
        ("mtasts-404.test", "HTTP 404"),
    ],
)
async def test_an_unreachable_policy_says_why(domain: str, why: str, lab_config) -> None:
    report = await check(domain, lab_config)
    (finding,) = [f for f in report.findings if f.code == "mtasts.policy.unreachable"]
    assert why in finding.summary
    assert finding.summary.startswith(f"https://mta-sts.{domain}/.well-known/mta-sts.txt: ")
    assert finding.reproduce.startswith("curl -sS -D - --cacert ")


async def test_an_uncovered_mx_names_the_host_and_the_patterns(lab_config) -> None:
    report = await check("mtasts-mx.test", lab_config)
    (finding,) = [f for f in report.findings if f.code == "mtasts.mx.not_covered"]
    assert finding.severity is Severity.ERROR
    assert finding.target.host == "mx1.healthy.test"
    assert "(mail.elsewhere.test)" in finding.summary and "refuse to deliver" in finding.summary


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("dnssec-expired.test", "expired"),
        ("dnssec-badsig.test", "MX"),
        ("dnssec-dsmismatch.test", "DS"),
    ],
)
async def test_bogus_dnssec_says_what_broke(domain: str, why: str, lab_config) -> None:
    report = await check(domain, lab_config)
    (finding,) = [f for f in report.findings if f.code == "dnssec.bogus"]
    assert why in finding.summary, finding.summary
    assert finding.severity is Severity.ERROR
    assert finding.reproduce.startswith("delv @127.1.0.53 MX ")


async def test_without_the_lab_anchor_dnssec_is_inconclusive_not_bogus(lab_config) -> None:
    from dataclasses import replace

    report = await check("healthy.test", replace(lab_config, trust_anchors=None))
    codes = {f.code for f in report.findings if f.severity > Severity.OK}
    assert "dnssec.bogus" not in codes
    assert "dnssec.inconclusive" in codes


async def test_sender_ips_get_an_spf_verdict_each(lab_config) -> None:
    request = CheckRequest(
        "healthy.test",
        "healthy.test",
        stages=frozenset({Stage.POLICY}),
        sender_ips=("127.1.1.2", "192.0.2.7"),
    )
    report = await run(request, lab_config)
    by_address = {f.target.address: f for f in report.findings if f.code.startswith("spf.sender.")}
    assert by_address["127.1.1.2"].code == "spf.sender.permitted"
    refused = by_address["192.0.2.7"]
    assert refused.code == "spf.sender.not_permitted"
    assert refused.severity is Severity.ERROR
    assert refused.summary.startswith("mail from 192.0.2.7 as healthy.test gets SPF fail")
