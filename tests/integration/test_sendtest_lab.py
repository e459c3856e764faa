"""The send test against the lab: real Postfix sends real mail (signed by a
real OpenDKIM milter, or not; with TLS, or not) from each sender scenario's
own address to our real receiver on 127.1.40.25:25, and the judgement asks
the lab's NSD. Each scenario must produce exactly its codes at warning or
above (tests/lab/senders.py); a healthy sender gets none.

Also: alice's account submitting the message through healthy.test's
submission server, and `mailcheck sendtest` in a terminal from start to end.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from email.utils import formatdate, make_msgid
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.receiver import Receiver, tls_context
from bot.testaddresses import PREFIX, SendTest, SendTests
from checks.core.accounts import Account, Accounts
from checks.core.config import EngineConfig
from checks.core.model import Report, Severity
from checks.engine import sendtest
from checks.engine.sendtest import Received
from tests.conftest import REPO
from tests.lab.control import Lab
from tests.lab.mail import LAB_PASSWORD, LAB_USER
from tests.lab.senders import (
    HEALTHY_SENDER,
    RECEIVER_ADDRESS,
    RECEIVER_DOMAIN,
    RECEIVER_HOST,
    RECEIVER_PORT,
    SENDERS,
    Sender,
)
from tests.lab.zones import NS_ADDRESS
from tests.support.redisdb import empty_db

pytestmark = pytest.mark.lab
REDIS_DB = 8  # only these tests use it
ARRIVAL = 60.0  # seconds Postfix may take to deliver (a retry after a refused connection)


@dataclass
class Running:
    tests: SendTests
    arrivals: list[Received]


@pytest.fixture
async def redis(lab_redis: Any) -> AsyncIterator[Redis]:
    async with empty_db(lab_redis.url, REDIS_DB) as client:
        yield client


@pytest.fixture
async def receiver(lab: Lab, redis: Redis) -> AsyncIterator[Running]:
    """The receiver where the lab's MX record for sendtest.test points."""
    tests = SendTests(redis, RECEIVER_DOMAIN, ttl=600)
    arrivals: list[Received] = []

    async def arrived(received: Received, test: SendTest) -> None:
        arrivals.append(received)

    pki = lab.mail.pki
    server = Receiver(
        tests,
        arrived,
        host=RECEIVER_ADDRESS,
        port=RECEIVER_PORT,
        hostname=RECEIVER_HOST,
        tls=tls_context(str(pki.cert_path(RECEIVER_HOST)), str(pki.key_path(RECEIVER_HOST))),
        per_hour=0,
    )
    await server.start()
    # Mail Postfix could not deliver while nothing listened here (an earlier
    # session's) would otherwise keep the destination marked dead for a while.
    await asyncio.to_thread(lab.mail.flush)
    try:
        yield Running(tests, arrivals)
    finally:
        await server.stop()


def compose(sender: Sender, to: str) -> bytes:
    return (
        f"From: Test <test@{sender.domain}>\r\nTo: {to}\r\nSubject: send test\r\n"
        f"Date: {formatdate(localtime=True)}\r\nMessage-ID: {make_msgid(domain=sender.domain)}\r\n"
        f"\r\nHello from {sender.domain}.\r\n"
    ).encode()


async def send_and_judge(
    lab: Lab, running: Running, config: EngineConfig, sender: Sender
) -> tuple[Report, Received]:
    test = await running.tests.create(sender.domain, sender.domain)
    message = compose(sender, test.address)
    await asyncio.to_thread(lab.mail.send, f"bounces@{sender.domain}", [test.address], message)
    received = await running.tests.wait(test.token, ARRIVAL)
    assert received is not None, f"nothing from {sender.domain} within {ARRIVAL:g} s"
    report = await sendtest.judge_message(received, sendtest.request_for(sender.domain), config)
    await running.tests.finish(test.token)
    return report, received


def problems(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.severity >= Severity.WARNING}


@pytest.mark.parametrize("sender", SENDERS, ids=[s.domain for s in SENDERS])
async def test_each_sender_gets_exactly_its_codes(
    lab: Lab, receiver: Running, lab_config: EngineConfig, sender: Sender
) -> None:
    report, received = await send_and_judge(lab, receiver, lab_config, sender)
    assert received.peer == sender.address
    assert received.helo == sender.helo
    assert (received.tls is not None) == sender.tls
    assert problems(report) == set(sender.expect), [
        (f.code, f.summary) for f in report.findings if f.severity >= Severity.WARNING
    ]
    ok = next(f for f in report.findings if f.code == "sendtest.ok")
    if sender.dkim == "sign":
        assert f"DKIM pass (d={sender.domain})" in ok.summary
    if not sender.expect:  # the healthy sender: every pass is named
        for part in (sender.ptr or "", "TLSv1.3", "SPF pass", "DMARC pass"):
            assert part in ok.summary


async def test_the_judged_message_is_deleted(
    lab: Lab, receiver: Running, lab_config: EngineConfig, redis: Redis
) -> None:
    report, received = await send_and_judge(lab, receiver, lab_config, SENDERS[0])
    assert report.worst is Severity.OK
    keys = {k.decode() for k in await redis.keys(f"{PREFIX}*")}
    assert keys == {f"{PREFIX}outcome:{received.token}"}  # no message, no token
    assert await receiver.tests.message(received.token) is None


def alice_config(config: EngineConfig) -> EngineConfig:
    alice = Account(name="alice", address=LAB_USER, password=LAB_PASSWORD)
    return replace(config, accounts=Accounts([alice]))


async def test_an_account_submits_the_message_itself(
    receiver: Running, lab_config: EngineConfig
) -> None:
    config = alice_config(lab_config)
    test = await receiver.tests.create("healthy.test", "healthy.test", account="alice")
    request = sendtest.request_for("healthy.test", account="alice")
    sent = await sendtest.submit(request, config, test.address, test.token)
    submitted = [f for f in sent.findings if f.code == "sendtest.submitted"]
    assert submitted, [(f.code, f.summary) for f in sent.findings]
    assert "smtp.healthy.test" in submitted[0].summary
    received = await receiver.tests.wait(test.token, ARRIVAL)
    assert received is not None
    assert received.peer == HEALTHY_SENDER.address
    report = await sendtest.judge_message(received, request, config)
    assert problems(report) == set(), [(f.code, f.summary) for f in report.findings]
    # The password is nowhere in what was kept or reported.
    assert LAB_PASSWORD not in repr(report) and LAB_PASSWORD not in repr(sent)


async def test_a_refused_login_says_nothing_was_sent(
    receiver: Running, lab_config: EngineConfig
) -> None:
    wrong = Account(name="alice", address=LAB_USER, password="not-the-password")
    config = replace(lab_config, accounts=Accounts([wrong]))
    test = await receiver.tests.create("healthy.test", "healthy.test")
    request = sendtest.request_for("healthy.test", account="alice")
    sent = await sendtest.submit(request, config, test.address, test.token)
    (failed,) = [f for f in sent.findings if f.code == "sendtest.submit.failed"]
    assert failed.severity is Severity.ERROR and "logs in at no submission server" in failed.summary
    assert receiver.arrivals == []


def test_the_cli_prints_the_address_waits_and_judges(
    lab: Lab, lab_redis: Any, tmp_path: Any
) -> None:
    """`mailcheck sendtest send-notls.test --json` in a terminal, with the
    receiver run as `mailcheck receiver`, both as the README says."""
    env = {
        **os.environ,
        "MAILCHECK_REDIS_URL": f"{lab_redis.url.rsplit('/', 1)[0]}/{REDIS_DB}",
        "MAILCHECK_SENDTEST_DOMAIN": RECEIVER_DOMAIN,
        "MAILCHECK_SENDTEST_TTL": "120",
        "MAILCHECK_RESOLVER": NS_ADDRESS,
        "MAILCHECK_ALLOW_TARGETS": "127.1.0.0/16",
        "MAILCHECK_DNSBL_ZONES": "bl.test",
        "MAILCHECK_RECEIVER_LISTEN": f"{RECEIVER_ADDRESS}:{RECEIVER_PORT}",
        "MAILCHECK_RECEIVER_HOSTNAME": RECEIVER_HOST,
        "MAILCHECK_RECEIVER_TLS_CERT": str(lab.mail.pki.cert_path(RECEIVER_HOST)),
        "MAILCHECK_RECEIVER_TLS_KEY": str(lab.mail.pki.key_path(RECEIVER_HOST)),
    }
    mailcheck = [sys.executable, "-m", "bot.cli"]
    server = subprocess.Popen(
        [*mailcheck, "receiver"], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_port(RECEIVER_ADDRESS, RECEIVER_PORT, server)
        lab.mail.flush()
        check = subprocess.Popen(
            [*mailcheck, "sendtest", "send-notls.test", "--json"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert check.stderr is not None
        address, said = "", ""
        while not address:
            line = check.stderr.readline()
            assert line, "mailcheck sendtest ended before printing the address"
            said += line
            if f"@{RECEIVER_DOMAIN}" in line:
                address = line.strip()
        lab.mail.send(
            "bounces@send-notls.test",
            [address],
            compose(next(s for s in SENDERS if s.domain == "send-notls.test"), address),
        )
        out, rest = check.communicate(timeout=ARRIVAL + 30)
    finally:
        server.terminate()
        server.wait(timeout=10)
    report = json.loads(out)
    codes = {f["code"] for f in report["findings"] if f["severity"] in ("warning", "error")}
    assert codes == {"sendtest.tls.none"}, rest
    assert check.returncode == 0  # warnings only: below --fail-on error
    assert said.startswith("Send a message from send-notls.test's mail server to")


def test_the_cli_explains_a_missing_setup() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCHECK_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "sendtest", "example.com"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "send tests are not set up: set MAILCHECK_SENDTEST_DOMAIN" in result.stderr
    assert "Traceback" not in result.stderr


def _wait_for_port(address: str, port: int, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"mailcheck receiver did not listen on {address}:{port}")
