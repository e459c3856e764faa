"""The auth and delivery stages against the lab's Postfix (submission, SASL
through Dovecot, LMTP delivery) with its test accounts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from checks.core.accounts import Account, Accounts, login_blobs, plain_blob
from checks.core.config import EngineConfig, Timeouts
from checks.core.model import CheckRequest, Report, Severity, Stage
from checks.engine.runner import run
from checks.report import jsonreport
from tests.lab.mail import LAB_ACCOUNTS, SLOW_DELIVERY_SECONDS

pytestmark = pytest.mark.lab

WRONG_PASSWORD = "not-alices-password-9"
STAGES = frozenset({Stage.AUTH, Stage.DELIVERY})


@pytest.fixture
def config(lab_config: EngineConfig) -> EngineConfig:
    # An account is used only for its own domains: carol's and dave's log in at
    # healthy.test's servers, and alice's is also tried on two broken domains.
    domains = {
        "alice": ("sub-cleartext.test", "sub-noauth.test"),
        "carol": ("healthy.test",),
        "dave": ("healthy.test",),
    }
    accounts = [
        Account(name=name, address=address, password=password, domains=domains[name])
        for name, (address, password) in LAB_ACCOUNTS.items()
    ]
    accounts.append(Account(name="wrong", address="alice@healthy.test", password=WRONG_PASSWORD))
    # Logs in as alice, but its address has no mailbox: every server refuses the mail.
    alice_password = LAB_ACCOUNTS["alice"][1]
    accounts.append(
        Account(
            name="badimap",
            address="alice@healthy.test",
            password=alice_password,
            imap="nowhere.healthy.test:993",
        )
    )
    accounts.append(
        Account(
            name="nomailbox",
            address="nobody@healthy.test",
            username="alice@healthy.test",
            password=alice_password,
        )
    )
    return replace(
        lab_config,
        timeouts=Timeouts(dns=2, connect=2, banner=3, reply=10, check=90),
        accounts=Accounts(accounts),
        delivery_timeout=SLOW_DELIVERY_SECONDS + 5,
        delivery_slow=SLOW_DELIVERY_SECONDS - 2,
    )


async def check(domain: str, account: str, config: EngineConfig) -> Report:
    request = CheckRequest(domain, domain, domain, STAGES, account=account)
    return await run(request, config)


def problems(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.severity > Severity.OK}


async def test_a_good_account_logs_in_everywhere_and_mail_arrives(config: EngineConfig) -> None:
    report = await check("healthy.test", "alice", config)
    assert problems(report) == set(), [(f.code, f.summary) for f in report.findings]
    logins = {f.target.port: f for f in report.findings if f.code == "auth.ok"}
    assert set(logins) == {587, 465, 143, 993, 110, 995}
    assert "PLAIN ok" in logins[587].summary and "LOGIN ok" in logins[587].summary
    assert "LOGIN ok" in logins[993].summary and "AUTHENTICATE PLAIN ok" in logins[993].summary
    assert "USER/PASS ok" in logins[995].summary
    manual = "\n".join(logins[587].evidence)
    assert "AUTH PLAIN <base64 of \\0username\\0password>" in manual
    delivered = {f.data["how"]: f for f in report.findings if f.code == "delivery.ok"}
    assert set(delivered) == {"submission", "inbound"}
    for finding in delivered.values():
        assert 0 < finding.data["latency_s"] < SLOW_DELIVERY_SECONDS
        assert any("LMTP" in hop for hop in finding.data["received"]), finding.data
    assert report.facts["delivery.submission"]["latency_s"] > 0


async def test_the_test_message_is_deleted_once_it_arrived(config: EngineConfig, lab) -> None:
    report = await check("healthy.test", "alice", config)
    tags = {f.data["tag"] for f in report.findings if f.code == "delivery.ok"}
    assert len(tags) == 2
    left = [m for m in lab.mail.messages("alice") if any(t.encode() in m for t in tags)]
    assert left == []


async def test_a_refused_message_says_why(config: EngineConfig) -> None:
    report = await check("healthy.test", "nomailbox", config)
    assert problems(report) == {"delivery.submit.rejected"}
    refused = {
        f.summary.split(":")[0] for f in report.findings if f.code == "delivery.submit.rejected"
    }
    assert refused == {"submission", "inbound"}
    assert any("nobody@healthy.test" in f.summary and "550" in f.summary for f in report.findings)


async def test_a_profile_server_that_does_not_resolve_skips_the_round_trip(
    config: EngineConfig,
) -> None:
    report = await check("healthy.test", "badimap", config)
    assert problems(report) == {"delivery.skipped"}
    (skipped,) = [f for f in report.findings if f.code == "delivery.skipped"]
    assert "nowhere.healthy.test" in skipped.summary


def test_every_auth_and_delivery_code_is_tested_here() -> None:
    from pathlib import Path

    from checks.core.catalog import CATALOG

    here = Path(__file__).parent  # the codes of hostile servers: test_account_trust.py
    source = (here / "test_auth_lab.py").read_text() + (here / "test_account_trust.py").read_text()
    wanted = {
        c
        for c, e in CATALOG.items()
        if e.stage in (Stage.AUTH, Stage.DELIVERY) and e.severity > Severity.OK
    }
    assert {c for c in wanted if f'"{c}"' not in source} == set()


async def test_a_wrong_password_fails_on_every_endpoint(config: EngineConfig) -> None:
    report = await check("healthy.test", "wrong", config)
    assert problems(report) == {"auth.failed"}
    failed = {f.target.port for f in report.findings if f.code == "auth.failed"}
    assert failed == {587, 465, 143, 993, 110, 995}


async def test_deferred_mail_times_out(config: EngineConfig) -> None:
    report = await check("healthy.test", "carol", config)
    assert problems(report) == {"delivery.timeout"}
    (first, *_) = [f for f in report.findings if f.code == "delivery.timeout"]
    assert "did not arrive within" in first.summary


async def test_slow_delivery_is_measured(config: EngineConfig) -> None:
    report = await check("healthy.test", "dave", config)
    assert problems(report) == {"delivery.slow"}
    for finding in (f for f in report.findings if f.code == "delivery.slow"):
        assert finding.data["latency_s"] >= SLOW_DELIVERY_SECONDS - 0.5


async def test_no_password_is_sent_without_tls(config: EngineConfig) -> None:
    report = await check("sub-cleartext.test", "alice", config)
    assert "auth.cleartext.refused" in problems(report)


async def test_an_endpoint_without_login_methods_is_an_error(config: EngineConfig) -> None:
    report = await check("sub-noauth.test", "alice", config)
    assert "auth.mechanisms.none" in problems(report)


async def test_unknown_account_is_named(config: EngineConfig) -> None:
    report = await check("healthy.test", "nobody", config)
    (failed,) = [f for f in report.findings if f.code == "auth.failed"]
    assert "no test account named 'nobody'" in failed.summary


async def test_no_secret_in_any_output(config: EngineConfig, capsys, caplog) -> None:
    """A full check with the account: the password and its base64 forms appear
    in no finding, transcript, fact, JSON report or log line."""
    import logging

    from rich.console import Console

    from bot import terminal

    address, password = LAB_ACCOUNTS["alice"]
    caplog.set_level(logging.DEBUG)
    redactor = config.accounts.secrets()  # type: ignore[union-attr]
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor.log_filter())
    report = await run(CheckRequest("healthy.test", "healthy.test", account="alice"), config)
    assert {f.code for f in report.findings} >= {"auth.ok", "delivery.ok"}
    console = Console(record=True, width=200)
    terminal.print_report(console, report, resolver="lab", verbose=True)
    outputs = [
        jsonreport.dumps(report),
        json.dumps(report.transcripts),
        console.export_text(),
        caplog.text,
        capsys.readouterr().out,
    ]
    forms = {password, plain_blob(address, password), *login_blobs(address, password)}
    forms.discard(login_blobs(address, password)[0])  # base64 of the user name is no secret...
    forms.add(login_blobs(address, password)[1])
    for text in outputs:
        for form in forms:
            assert form not in text


async def test_sasl_without_mechanisms_is_not_ready_rather_than_none(
    lab_config: EngineConfig,
) -> None:
    """Dovecot, its auth service busy or starting, lists SASL with nothing after
    it: that says nothing about its logins (a 100-check load made it an error)."""
    from checks.net.conn import TLSSession
    from checks.net.door import Network
    from checks.protocols.session import Endpoint, Session
    from checks.stages.auth import probe_login
    from checks.stages.probe import ProbeContext

    ep = Endpoint("imap.healthy.test", "127.1.1.11", 110, "pop3", "starttls", "client", True)
    tls = TLSSession("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, (), "imap.healthy.test")
    busy = Session(ep, "+OK", ("STLS", "SASL"), tls, ("USER", "SASL"), complete=True)
    empty = replace(busy, tls_capabilities=("TOP", "UIDL"))  # no USER, no SASL: none at all
    results = {"connect.submission": [], "connect.imap": [], "connect.pop3": [busy]}
    request = CheckRequest("healthy.test", "healthy.test")
    ctx = ProbeContext(request, Network(lab_config), results)
    await probe_login(ctx)
    assert [f.code for f in ctx.findings] == ["auth.mechanisms"]  # USER is a login
    busy = replace(busy, tls_capabilities=("TOP", "SASL"))
    for session, code in ((busy, "auth.mechanisms.unavailable"), (empty, "auth.mechanisms.none")):
        ctx = ProbeContext(request, Network(lab_config), {**results, "connect.pop3": [session]})
        await probe_login(ctx)
        assert [f.code for f in ctx.findings] == [code], session.tls_capabilities
