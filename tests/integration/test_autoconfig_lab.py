"""The autoconfig stage against the lab: nginx serving config-v1.1.xml,
autodiscover and Apple profiles, and the real Postfix/Dovecot they point at."""

from __future__ import annotations

from dataclasses import replace

import pytest

from checks.core.config import EngineConfig, Timeouts
from checks.core.model import CheckRequest, Report, Severity, Stage
from checks.engine.runner import run
from tests.lab.zones import CLIENT_SCENARIOS, Scenario

pytestmark = pytest.mark.lab

TIMEOUTS = Timeouts(dns=2, connect=2, banner=3, reply=10, check=60)


@pytest.fixture
def config(lab_config: EngineConfig) -> EngineConfig:
    return replace(lab_config, timeouts=TIMEOUTS)


async def check(domain: str, config: EngineConfig, **request: object) -> Report:
    stages = frozenset({Stage.AUTOCONFIG})
    return await run(CheckRequest(domain, domain, domain, stages, **request), config)  # type: ignore[arg-type]


def by_code(report: Report, code: str) -> list[str]:
    return [f.summary for f in report.findings if f.code == code]


@pytest.mark.parametrize("scenario", CLIENT_SCENARIOS, ids=[s.domain for s in CLIENT_SCENARIOS])
async def test_scenario_reports_exactly_its_codes(scenario: Scenario, config: EngineConfig) -> None:
    report = await check(scenario.domain, config)
    found = {f.code for f in report.findings if f.severity > Severity.OK}
    detail = [(f.code, f.summary) for f in report.findings if f.severity > Severity.OK]
    assert found == scenario.expect, (scenario.about, detail)


async def test_healthy_shows_what_each_client_configures_and_that_it_works(
    config: EngineConfig,
) -> None:
    report = await check("healthy.test", config)
    (thunderbird,) = by_code(report, "autoconfig.found")
    assert thunderbird == (
        "Thunderbird uses https://autoconfig.healthy.test/mail/config-v1.1.xml"
        "?emailaddress=user@healthy.test: IMAP imap.healthy.test:993 SSL, "
        "SMTP smtp.healthy.test:465 SSL (username user@healthy.test)"
    )
    (outlook,) = by_code(report, "autodiscover.found")
    assert outlook.startswith(
        "Outlook uses https://autodiscover.healthy.test/autodiscover/autodiscover.xml: "
        "IMAP imap.healthy.test:993 SSL, SMTP smtp.healthy.test:465 SSL"
    )
    works = {s.split(" works ")[0]: s for s in by_code(report, "autoconfig.server.ok")}
    assert set(works) == {
        "IMAP imap.healthy.test:993 SSL",
        "IMAP imap.healthy.test:143 STARTTLS",
        "POP3 imap.healthy.test:995 SSL",
        "POP3 imap.healthy.test:110 STARTTLS",
        "SMTP smtp.healthy.test:465 SSL",
        "SMTP smtp.healthy.test:587 STARTTLS",
    }
    assert "thunderbird, outlook, mailconf, srv" in works["IMAP imap.healthy.test:993 SSL"]
    assert report.facts["autoconfig"]["thunderbird"]["incoming"][0] == (
        "IMAP imap.healthy.test:993 SSL"
    )


async def test_a_dead_port_says_what_works_instead(config: EngineConfig) -> None:
    report = await check("ac-deadport.test", config)
    (dead,) = by_code(report, "autoconfig.server.unreachable")
    assert dead.startswith("Thunderbird's configuration says IMAP imap.healthy.test:9993 SSL: ")
    assert "connection refused" in dead
    assert dead.endswith("; 993 with SSL works")


async def test_ssl_on_a_starttls_port_is_a_mismatch_with_the_fix(config: EngineConfig) -> None:
    report = await check("srv-socket.test", config)
    (wrong,) = by_code(report, "srv.server.mismatch")
    assert wrong.startswith("the SRV record says IMAP imap.healthy.test:143 SSL: ")
    assert wrong.endswith("; 993 with SSL works")


async def test_the_ispdb_is_asked_when_the_domain_has_nothing(config: EngineConfig) -> None:
    report = await check("ac-ispdb.test", config)
    (found,) = by_code(report, "autoconfig.found")
    assert found.startswith("Thunderbird uses https://ispdb.test/v1.1/ac-ispdb.test: ")


async def test_a_redirect_to_a_private_address_is_refused(config: EngineConfig) -> None:
    report = await check("ad-redirect.test", config)
    (refused,) = by_code(report, "autodiscover.redirect.refused")
    assert "https://private.ad-redirect.test/autodiscover/autodiscover.xml" in refused
    assert "10.0.0.1" in refused


async def test_a_missing_configuration_says_nothing_could_be_guessed(
    config: EngineConfig,
) -> None:
    report = await check("ac-missing.test", config)
    (missing,) = by_code(report, "autoconfig.missing")
    assert "find no working server" in missing


async def test_thunderbird_guesses_like_thunderbird(config: EngineConfig) -> None:
    report = await check("ac-guess.test", config)
    (missing,) = by_code(report, "autoconfig.missing")
    assert missing == (
        "Thunderbird finds no configuration and guesses IMAP imap.ac-guess.test:993 SSL, "
        "SMTP smtp.ac-guess.test:465 SSL (username user@ac-guess.test)"
    )
    assert report.facts["autoconfig"]["thunderbird"]["source"] == "guess"


async def test_an_apple_profile_is_validated_and_its_servers_tried(config: EngineConfig) -> None:
    url = "https://autoconfig.healthy.test/healthy.mobileconfig"
    report = await check("healthy.test", config, mobileconfig_url=url)
    (ok,) = by_code(report, "mobileconfig.ok")
    assert ok.startswith("profile test.healthy.test (unsigned): IMAP imap.healthy.test:993 SSL")
    works = " ".join(by_code(report, "autoconfig.server.ok"))
    assert "mobileconfig" in works
    broken = await check(
        "healthy.test",
        config,
        mobileconfig_url="https://autoconfig.healthy.test/broken.mobileconfig",
    )
    (invalid,) = by_code(broken, "mobileconfig.invalid")
    assert "com.apple.mail.managed" in invalid


def test_every_autoconfig_code_has_a_lab_scenario() -> None:
    from checks.core.catalog import CATALOG

    covered = {c for s in CLIENT_SCENARIOS for c in s.expect}
    wanted = {
        c for c, e in CATALOG.items() if e.stage is Stage.AUTOCONFIG and e.severity > Severity.OK
    }
    # The mobileconfig codes need a URL in the request: tested above, and signed
    # profiles in tests/unit/test_clientconf.py (their throwaway PKI). A busy
    # server's codes need one: tests/unit/test_busy.py, test_under_load.py.
    assert wanted - covered == {
        "mobileconfig.invalid",
        "mobileconfig.signature.unverified",
        "autoconfig.server.busy",
        "autoconfig.fetch.failed",
    }


@pytest.mark.parametrize(
    ("domain", "source"),
    [
        ("ad-httpredirect.test", "https://mail.ad-httpredirect.test/autodiscover/autodiscover.xml"),
        ("ad-srv.test", "https://mail.ad-srv.test/autodiscover/autodiscover.xml"),
    ],
)
async def test_outlook_falls_back_to_the_http_redirect_and_srv(
    domain: str, source: str, config: EngineConfig
) -> None:
    report = await check(domain, config)
    (found,) = by_code(report, "autodiscover.found")
    assert found.startswith(f"Outlook uses {source}: IMAP imap.healthy.test:993 SSL")
