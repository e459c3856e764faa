"""A test account's password goes only where it belongs (issue 16, part 1).

The attack: a hostile domain points its submission SRV record at a server that
accepts any password. A check of that domain with an operator's test account
must never hand it the password: the account is refused for domains it does not
belong to, before any job or connection, and even for its own domains the
password goes only over TLS whose certificate verifies for the host name, as a
mail client's would. The hostile servers record every byte a client sends them
(tests/support/smtprecorder.py); the lab's NSD serves their zones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.app import build_app, serve_http
from bot.queue import make_queue
from bot.settings import Settings
from checks.core.accounts import Account, Accounts
from checks.core.config import EngineConfig, Timeouts
from checks.core.model import CheckRequest, Report, Severity, Stage
from checks.engine.runner import run
from tests.integration.test_bot_e2e import command, settings, slack  # noqa: F401
from tests.lab.pki import CertSpec, LabPKI
from tests.lab.zones import HOSTILE_SUBMISSION
from tests.support.slackapi import SlackAPIStandIn
from tests.support.smtprecorder import SMTPRecorder

pytestmark = pytest.mark.lab

PASSWORD = "correct horse battery staple"
SELF_SIGNED, WRONG_NAME = "auth-selfsigned.test", "auth-wrongname.test"
STAGES = frozenset({Stage.CONNECT, Stage.AUTH})


def account(address: str = "probe@healthy.test", **kwargs: Any) -> Account:
    """The operator's account; by default its own domain is healthy.test only."""
    return Account(name="work", address=address, password=PASSWORD, **kwargs)


def secret_forms(acc: Account) -> list[bytes]:
    """The password as every client would send it (AUTH PLAIN, LOGIN, IMAP...)."""
    forms = Accounts([acc]).secrets().forms()
    return [f.encode() for f in forms if PASSWORD in f or "Y29ycmVjdCBob3Jz" in f or len(f) > 30]


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for exactly the hostile host's name."""
    pki = LabPKI(tmp_path_factory.mktemp("evil"))
    pki.build([CertSpec("evil", (f"smtp.{SELF_SIGNED}",), issuer="self", key="ec256")])
    return pki.cert_path("evil"), pki.key_path("evil")


@pytest.fixture
async def recorders(
    self_signed: tuple[Path, Path], mail_lab: str
) -> AsyncIterator[dict[str, SMTPRecorder]]:
    """The two hostile submission servers: self-signed, and a good lab
    certificate (trusted, in date) for another name (smtp.healthy.test)."""
    pki = Path(mail_lab).parent
    certs = {
        SELF_SIGNED: self_signed,
        WRONG_NAME: (pki / "smtp.healthy.test.pem", pki / "smtp.healthy.test.key"),
    }
    servers = {d: SMTPRecorder(HOSTILE_SUBMISSION[d], 587, *certs[d]) for d in certs}
    for server in servers.values():
        await server.__aenter__()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.__aexit__(None)


def with_accounts(config: EngineConfig, *accounts: Account) -> EngineConfig:
    return replace(
        config,
        accounts=Accounts(accounts),
        timeouts=Timeouts(dns=2, connect=2, banner=3, reply=5, check=30),
    )


async def check(domain: str, config: EngineConfig) -> Report:
    return await run(CheckRequest(domain, domain, domain, STAGES, account="work"), config)


def found(report: Report, code: str) -> list[Any]:
    return [f for f in report.findings if f.code == code]


@pytest.mark.parametrize("domain", [SELF_SIGNED, WRONG_NAME])
async def test_a_server_whose_certificate_fails_never_gets_the_password(
    domain: str, recorders: dict[str, SMTPRecorder], lab_config: EngineConfig
) -> None:
    """Even for its own domain (a takeover of the account's own DNS, or an
    attacker in the path) an account sends nothing secret over a connection a
    mail client would refuse."""
    acc = account(f"probe@{domain}")
    report = await check(domain, with_accounts(lab_config, acc))
    server = recorders[domain]
    assert server.connections >= 1  # the server was reached, and TLS started
    assert b"STARTTLS" in server.received
    for form in secret_forms(acc):
        assert form not in server.received, form
    assert b"AUTH" not in server.received
    (withheld,) = found(report, "auth.withheld")
    assert withheld.severity == Severity.ERROR
    assert f"smtp.{domain}" in withheld.summary and "work" in withheld.summary
    reason = "self-signed" if domain == SELF_SIGNED else f"not valid for smtp.{domain}"
    assert reason in withheld.summary
    assert not found(report, "auth.ok")


async def test_an_account_for_another_domain_is_refused_by_the_engine(
    recorders: dict[str, SMTPRecorder], lab_config: EngineConfig
) -> None:
    """The engine refuses too (a front end that forgot to ask): the auth stage
    neither connects with the account nor sends anything of it."""
    acc = account()
    report = await check(SELF_SIGNED, with_accounts(lab_config, acc))
    server = recorders[SELF_SIGNED]
    assert b"AUTH" not in server.received
    (refused,) = found(report, "auth.account.refused")
    assert "work" in refused.summary and SELF_SIGNED in refused.summary
    assert "healthy.test" in refused.summary


async def test_tls_verify_false_is_an_explicit_and_reported_opt_out(
    recorders: dict[str, SMTPRecorder], lab_config: EngineConfig
) -> None:
    acc = account(domains=(SELF_SIGNED,), tls_verify=False)  # listed, not its address's
    report = await check(SELF_SIGNED, with_accounts(lab_config, acc))
    assert b"AUTH " in recorders[SELF_SIGNED].received  # the operator asked for this
    (unverified,) = found(report, "auth.unverified")
    assert unverified.severity == Severity.WARNING
    assert "self-signed" in unverified.summary and "tls_verify" in unverified.summary
    assert found(report, "auth.ok")


def test_the_cli_refuses_an_account_for_another_domain(
    recorders_sync: dict[str, int], tmp_path: Path, lab_dns: str, mail_lab: str
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        f'[accounts.work]\naddress = "probe@healthy.test"\npassword = "{PASSWORD}"\n'
    )
    accounts.chmod(0o600)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "check",
            SELF_SIGNED,
            "--account",
            "work",
            "--resolver",
            lab_dns,
            "--allow-target",
            "127.1.0.0/16",
            "--ca-file",
            mail_lab,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MAILCHECK_ACCOUNTS_FILE": str(accounts), "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 2, proc.stderr
    assert "work" in proc.stderr and SELF_SIGNED in proc.stderr and "healthy.test" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout


@pytest.fixture
def recorders_sync() -> dict[str, int]:
    """Connections counted at the hostile address while the CLI runs (a plain
    listening socket: the CLI runs in another process)."""
    import socket

    listener = socket.create_server((HOSTILE_SUBMISSION[SELF_SIGNED], 587))
    listener.setblocking(False)
    counts = {"connections": 0}
    yield counts  # type: ignore[misc]
    try:
        while True:
            conn, _ = listener.accept()
            counts["connections"] += 1
            conn.close()
    except BlockingIOError:
        pass
    listener.close()
    assert counts["connections"] == 0


async def test_slack_refuses_an_account_for_another_domain_before_queueing(
    settings: Settings,  # noqa: F811
    slack: SlackAPIStandIn,  # noqa: F811
    recorders: dict[str, SMTPRecorder],
) -> None:
    settings = replace(settings, accounts=Accounts([account()]), sendtest_domain="sendtest.test")
    redis = Redis.from_url(settings.redis_url)
    queue = make_queue(settings)
    runner = await serve_http(build_app(settings, queue, redis), settings)
    try:
        for text in (f"{SELF_SIGNED} account=work", f"sendtest {SELF_SIGNED} account=work"):
            status, ack = await command(settings, slack, text)
            assert status == 200
            assert "work" in ack and SELF_SIGNED in ack and "healthy.test" in ack, ack
        assert await queue.count("queued") == 0 and await queue.count("incomplete") == 0
    finally:
        await runner.cleanup()
        await queue.disconnect()
        await redis.aclose()
    assert recorders[SELF_SIGNED].connections == 0
    assert PASSWORD not in json.dumps([c.params for c in slack.calls])
