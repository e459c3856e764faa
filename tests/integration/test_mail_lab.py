"""Connect and TLS stages against real Postfix and Dovecot: exact codes per scenario."""

from __future__ import annotations

from dataclasses import replace

import pytest

from checks.core.config import EngineConfig, Timeouts
from checks.core.model import CheckRequest, Report, Severity, Stage
from checks.engine.runner import run
from tests.lab.zones import BY_DOMAIN, MAIL_SCENARIOS, Scenario
from tests.support.fakeserver import FakeServer

pytestmark = pytest.mark.lab

# Short enough for filtered hosts and the stalling server, long enough for a
# loaded CI machine.
TIMEOUTS = Timeouts(dns=2, connect=2, banner=3, reply=10, check=60)


@pytest.fixture
def config(lab_config: EngineConfig, mail_lab: str) -> EngineConfig:
    return replace(lab_config, timeouts=TIMEOUTS, ca_file=mail_lab)


async def check(domain: str, config: EngineConfig, *, policy: bool = False) -> Report:
    # The policy stage has scenarios of its own (test_policy_lab.py); these
    # domains publish no SPF or DMARC and are about sockets and certificates.
    stages = None if policy else frozenset({Stage.DNS, Stage.CONNECT, Stage.TLS})
    return await run(CheckRequest(domain, domain, domain, stages), config)


def problems(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.severity > Severity.OK}


@pytest.mark.parametrize("scenario", MAIL_SCENARIOS, ids=[s.domain for s in MAIL_SCENARIOS])
async def test_scenario_reports_exactly_its_codes(
    scenario: Scenario, config: EngineConfig, stalling_mx: FakeServer
) -> None:
    report = await check(scenario.domain, config)
    found = problems(report)
    detail = [(f.code, f.summary) for f in report.findings if f.severity > Severity.OK]
    assert found == scenario.expect, (scenario.about, detail)
    assert all(t.outcome == "done" for t in report.timings), report.timings


async def test_healthy_domain_is_clean_on_every_socket(config: EngineConfig) -> None:
    report = await check("healthy.test", config, policy=True)  # every stage
    assert report.at_least(Severity.INFO) == ()
    oks = {}
    for f in report.findings:
        oks.setdefault(f.code, set()).add((f.target.address, f.target.port))
    assert oks["smtp.ok"] == {("127.1.1.1", 25), ("127.1.1.2", 25)}
    assert oks["submission.ok"] == {("127.1.1.10", 587), ("127.1.1.10", 465)}
    assert oks["imap.ok"] == {("127.1.1.11", 143), ("127.1.1.11", 993)}
    assert oks["pop3.ok"] == {("127.1.1.11", 110), ("127.1.1.11", 995)}
    assert len(oks["tls.ok"]) == 8  # every socket above upgraded or started with TLS
    submission = next(
        f for f in report.findings if f.code == "submission.ok" and f.target.port == 587
    )
    assert "PLAIN" in submission.data["auth"]  # offered after STARTTLS, not before


async def test_every_certificate_seen_is_recorded(config: EngineConfig) -> None:
    report = await check("healthy.test", config)
    tls = report.facts["tls"]
    entry = tls["imap.healthy.test [127.1.1.11]:993/imaps"]
    assert entry["version"] in ("TLSv1.2", "TLSv1.3")
    leaf, intermediate = entry["certificates"][:2]
    assert leaf["sans"] == ["imap.healthy.test", "imap.ac-guess.test"]
    assert "mailcheck lab intermediate CA" in leaf["issuer"]
    assert "mailcheck lab intermediate CA" in intermediate["subject"]
    for cert in (leaf, intermediate):
        assert len(cert["sha256"]) == 64 and cert["serial"] and cert["not_after"]


async def test_severity_follows_who_is_hurt(config: EngineConfig) -> None:
    mx = await check("tls-expired.test", config)
    imap = await check("imap-expired.test", config)
    (on_mx,) = [f for f in mx.findings if f.code == "tls.cert.expired"]
    (on_imap,) = [f for f in imap.findings if f.code == "tls.cert.expired"]
    assert on_mx.severity is Severity.WARNING  # senders fall back to unverified TLS
    assert on_imap.severity is Severity.ERROR  # users' clients refuse it
    assert "143/imap" in on_imap.summary and "993/imaps" in on_imap.summary  # one cert, one finding


async def test_findings_carry_evidence_and_a_command_to_reproduce(
    config: EngineConfig,
) -> None:
    report = await check("smtp-authplain.test", config)
    (auth,) = [f for f in report.findings if f.code == "smtp.auth.before_tls"]
    assert auth.reproduce == "telnet 127.1.20.8 25"
    assert any("S: 250" in line and "AUTH" in line for line in auth.evidence)
    report = await check("tls-nochain.test", config)
    (chain,) = [f for f in report.findings if f.code == "tls.cert.chain_incomplete"]
    assert chain.reproduce == (
        "openssl s_client -connect 127.1.21.6:25 -starttls smtp -servername mx.tls-nochain.test"
    )
    assert any("1 certificate(s) sent" in line for line in chain.evidence)
    assert any(line.startswith("certificate 0: CN=mx.tls-nochain.test") for line in chain.evidence)
    transcript = report.transcripts["connect.smtp"]
    assert any("C: EHLO mailcheck.invalid" in line for line in transcript)
    assert any("C: STARTTLS" in line for line in transcript)
    assert any("-- TLS established" in line for line in transcript)


async def test_filtered_host_costs_one_connect_timeout(config: EngineConfig) -> None:
    report = await check("smtp-timeout.test", config)
    (timing,) = [t for t in report.timings if t.probe == "connect.smtp"]
    assert timing.outcome == "done"
    (finding,) = [f for f in report.findings if f.code == "smtp.connect.timeout"]
    assert "no answer within 2 s" in finding.summary


async def test_the_policy_still_guards_the_connect_stage(config: EngineConfig) -> None:
    from checks.core.targets import TargetPolicy

    closed = replace(config, policy=TargetPolicy())
    report = await check("imap-refused.test", closed)
    codes = problems(report)
    assert "connect.target.refused" in codes
    assert not any(f.code.endswith(".ok") and f.target.port for f in report.findings)


def test_scenarios_cover_every_connect_and_tls_code() -> None:
    from checks.core.catalog import CATALOG

    covered = {c for s in MAIL_SCENARIOS for c in s.expect}
    wanted = {
        c
        for c, e in CATALOG.items()
        if e.stage in (Stage.CONNECT, Stage.TLS) and e.severity > Severity.OK
    }
    # Covered by the hostile fake servers in tests/unit/test_hostile_servers.py instead:
    by_fakes = {
        "session.dropped",
        "session.reply.timeout",
        "session.protocol.invalid",
        "imap.banner.timeout",
        "imap.banner.rejected",
        "pop3.banner.timeout",
        "pop3.banner.rejected",
        "connect.target.refused",
        "smtp.ehlo.rejected",
        "imap.starttls.failed",
        "pop3.starttls.failed",
    }
    assert wanted - covered - by_fakes == set()
    assert BY_DOMAIN["healthy.test"].expect == frozenset()


async def test_mta_sts_enforce_makes_a_port_25_certificate_problem_an_error(
    config: EngineConfig,
) -> None:
    enforced = await check("mtasts-enforce.test", config)
    (expired,) = [f for f in enforced.findings if f.code == "tls.cert.expired"]
    assert expired.severity is Severity.ERROR
    assert "MTA-STS policy is in enforce mode" in expired.summary
    plain = await check("tls-expired.test", config)  # the same MX, no MTA-STS
    (lenient,) = [f for f in plain.findings if f.code == "tls.cert.expired"]
    assert lenient.severity is Severity.WARNING


async def test_dane_matches_the_certificate_port_25_presents(config: EngineConfig) -> None:
    healthy = await check("healthy.test", config)
    matched = {f.target.address: f.summary for f in healthy.findings if f.code == "dane.ok"}
    assert set(matched) == {"127.1.1.1", "127.1.1.2"}
    assert "(DANE-EE(3)) matches the server's certificate" in matched["127.1.1.1"]
    assert "(DANE-TA(2)) matches certificate 1 of the chain it sends" in matched["127.1.1.2"]
    wrong = await check("dane-mismatch.test", config)
    (mismatch,) = [f for f in wrong.findings if f.code == "dane.tlsa.mismatch"]
    assert mismatch.severity is Severity.ERROR
    assert mismatch.target.address == "127.1.1.1"
    assert "-dane_tlsa_rrdata" in mismatch.reproduce
