"""The policy stage (SPF, DMARC) against the lab's DNS: exact codes per scenario."""

from __future__ import annotations

import pytest

from checks.config import EngineConfig
from checks.model import CheckRequest, Report, Severity, Stage
from checks.runner import run
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
    assert codes["spf.ok"].summary == "v=spf1 mx -all (1 of 10 DNS lookups)"
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


def test_scenarios_cover_every_policy_code_so_far() -> None:
    from checks.catalog import CATALOG

    covered = {c for s in POLICY_SCENARIOS for c in s.expect}
    wanted = {
        c
        for c, e in CATALOG.items()
        if c.startswith(("spf.", "dmarc.")) and e.severity > Severity.OK
    }
    assert wanted - covered == set()
