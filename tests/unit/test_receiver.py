"""The send-test receiver (bot/receiver.py) and its store (bot/sendtests.py),
with real SMTP clients, real TLS (a throwaway CA) and the lab's real Redis
(DB 7, which only these tests use).

The receiver listens on an ephemeral port of 127.1.41.1; clients connect from
other 127.1.41.x addresses, so the per-source limits see distinct senders.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.receiver import Receiver, SourceLimits, tls_context
from bot.sendtests import PREFIX, SendTest, SendTests
from checks.sendtest import Received
from tests.lab.pki import CertSpec, LabPKI
from tests.support.redisdb import empty_db

ADDRESS = "127.1.41.1"
DOMAIN = "sendtest.example.net"
BODY_MARKER = "secret-body-text-4711"


@pytest.fixture
async def redis(lab_redis: Any) -> AsyncIterator[Redis]:
    async with empty_db(lab_redis.url, 7) as client:
        yield client


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    pki = LabPKI(tmp_path_factory.mktemp("pki"))
    pki.build([CertSpec("mx.sendtest.example.net", ("mx.sendtest.example.net",))])
    return pki


class Running:
    def __init__(self, receiver: Receiver, tests: SendTests, arrivals: list[Received]) -> None:
        self.receiver = receiver
        self.tests = tests
        self.arrivals = arrivals

    @property
    def port(self) -> int:
        return self.receiver.port


@pytest.fixture
async def running(redis: Redis, pki: LabPKI) -> AsyncIterator[Running]:
    tests = SendTests(redis, DOMAIN, ttl=600)
    arrivals: list[Received] = []

    async def arrived(received: Received, test: SendTest) -> None:
        arrivals.append(received)

    cert = pki.cert_path("mx.sendtest.example.net")
    receiver = Receiver(
        tests,
        arrived,
        host=ADDRESS,
        port=0,
        hostname="mx.sendtest.example.net",
        tls=tls_context(str(cert), str(pki.key_path("mx.sendtest.example.net"))),
        max_size=20_000,
        concurrent=2,
        per_hour=6,
    )
    await receiver.start()
    try:
        yield Running(receiver, tests, arrivals)
    finally:
        await receiver.stop()


def message(to: str, extra: str = "") -> str:
    return (
        f"From: Alice <alice@example.com>\r\nTo: {to}\r\nSubject: test\r\n"
        f"Date: Thu, 26 Nov 2026 01:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n"
        f"{BODY_MARKER}\r\n{extra}"
    )


def client(port: int, source: str = "127.1.41.2", ca: Path | None = None) -> smtplib.SMTP:
    smtp = smtplib.SMTP(
        ADDRESS, port, local_hostname="mail.example.com", timeout=10, source_address=(source, 0)
    )
    smtp.ehlo()
    if ca is not None:
        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = False  # connected by address; the chain is still verified
        smtp.starttls(context=context)
        smtp.ehlo()
    return smtp


def send(port: int, sender: str, rcpts: list[str], data: str, **kw: Any) -> dict[str, Any]:
    with client(port, **kw) as smtp:
        return smtp.sendmail(sender, rcpts, data)


async def test_a_live_address_gets_its_message_with_everything_the_judge_needs(
    running: Running, pki: LabPKI
) -> None:
    test = await running.tests.create("example.com", "example.com")
    refused = await asyncio.to_thread(
        send,
        running.port,
        "bounce@example.com",
        [test.address],
        message(test.address),
        ca=pki.ca_file,
    )
    assert refused == {}
    (arrival,) = running.arrivals
    stored = await running.tests.message(test.token)
    assert stored == arrival
    assert arrival.token == test.token
    assert arrival.peer == "127.1.41.2"
    assert arrival.helo == "mail.example.com" and arrival.esmtp
    assert arrival.mail_from == "bounce@example.com"
    assert arrival.tls is not None and arrival.tls.version in ("TLSv1.2", "TLSv1.3")
    assert BODY_MARKER.encode() in arrival.message
    assert "> STARTTLS" in arrival.session and "> EHLO mail.example.com" in arrival.session
    assert not any(BODY_MARKER in line for line in arrival.session)
    assert not any(line.startswith("< 250-AUTH") for line in arrival.session)  # no AUTH here
    # The address takes one message: the second is refused at RCPT.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as second:
        await asyncio.to_thread(
            send, running.port, "x@example.com", [test.address], message(test.address)
        )
    assert second.value.recipients[test.address][0] == 550
    # Judged: the message and the token are gone; only the outcome marker stays.
    await running.tests.finish(test.token)
    keys = {k.decode() for k in await running.tests.redis.keys(f"{PREFIX}*")}
    assert keys == {f"{PREFIX}outcome:{test.token}"}


async def test_without_starttls_the_message_is_taken_and_marked_cleartext(
    running: Running,
) -> None:
    test = await running.tests.create("example.com", "example.com")
    await asyncio.to_thread(send, running.port, "a@example.com", [test.address], message("x"))
    (arrival,) = running.arrivals
    assert arrival.tls is None
    assert "< 250-STARTTLS" in arrival.session  # it was offered


@pytest.mark.parametrize(
    ("rcpt", "code", "words"),
    [
        ("someone@example.org", 550, b"Relay access denied"),
        (f"postmaster@{DOMAIN}", 550, b"Relay access denied"),
        (f"st-0123456789abcdef@{DOMAIN}", 550, b"Unknown or expired"),
    ],
)
async def test_it_never_relays_and_refuses_unknown_tokens(
    running: Running, rcpt: str, code: int, words: bytes
) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(send, running.port, "a@example.com", [rcpt], message(rcpt))
    got_code, text = refused.value.recipients[rcpt]
    assert got_code == code and words in text
    assert running.arrivals == []
    assert await running.tests.redis.keys(f"{PREFIX}message:*") == []


async def test_an_expired_or_timed_out_token_is_refused(running: Running, redis: Redis) -> None:
    expired = await running.tests.create("example.com", "example.com")
    await redis.delete(expired.key)  # what its TTL does
    timed_out = await running.tests.create("example.com", "example.com")
    assert await running.tests.time_out(timed_out.token)
    for test in (expired, timed_out):
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(
                send, running.port, "a@example.com", [test.address], message(test.address)
            )
    assert running.arrivals == []


async def test_one_recipient_per_message(running: Running) -> None:
    one = await running.tests.create("example.com", "example.com")
    two = await running.tests.create("example.com", "example.com")
    refused = await asyncio.to_thread(
        send, running.port, "a@example.com", [one.address, two.address], message(one.address)
    )
    assert refused[two.address][0] == 452
    assert [a.token for a in running.arrivals] == [one.token]


async def test_the_size_limit(running: Running) -> None:
    test = await running.tests.create("example.com", "example.com")
    big = message(test.address, extra="x" * 100 + "\r\n") * 300
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused:
        await asyncio.to_thread(send, running.port, "a@example.com", [test.address], big)
    assert refused.value.smtp_code == 552
    assert running.arrivals == []
    # The address is still live: a message of the right size gets through.
    await asyncio.to_thread(
        send, running.port, "a@example.com", [test.address], message(test.address)
    )
    assert len(running.arrivals) == 1


async def test_per_source_limits(running: Running) -> None:
    # Two connections at once from one source are allowed; the third gets a 421.
    first = await asyncio.to_thread(client, running.port, "127.1.41.3")
    second = await asyncio.to_thread(client, running.port, "127.1.41.3")
    try:
        with pytest.raises(smtplib.SMTPConnectError) as third:
            await asyncio.to_thread(client, running.port, "127.1.41.3")
        assert third.value.smtp_code == 421
        assert b"at once" in third.value.smtp_error
        # Another source is not affected.
        other = await asyncio.to_thread(client, running.port, "127.1.41.4")
        await asyncio.to_thread(other.quit)
    finally:
        await asyncio.to_thread(first.quit)
        await asyncio.to_thread(second.quit)
    # Six connections an hour: 127.1.41.3 has had two (the refused one is not counted).
    for _ in range(4):
        done = await asyncio.to_thread(client, running.port, "127.1.41.3")
        await asyncio.to_thread(done.quit)
    with pytest.raises(smtplib.SMTPConnectError) as hourly:
        await asyncio.to_thread(client, running.port, "127.1.41.3")
    assert hourly.value.smtp_code == 421 and b"this hour" in hourly.value.smtp_error


def test_source_limits_forget_after_an_hour() -> None:
    limits = SourceLimits(concurrent=5, per_hour=2)
    assert limits.admit("a", now=0) is None
    assert limits.admit("a", now=10) is None
    assert "this hour" in str(limits.admit("a", now=20))
    limits.release("a")
    limits.release("a")
    assert limits.admit("a", now=3601) is None


async def test_logs_carry_no_message_text(
    running: Running, pki: LabPKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    test = await running.tests.create("example.com", "example.com")
    await asyncio.to_thread(
        send,
        running.port,
        "a@example.com",
        [test.address],
        message(test.address),
        ca=pki.ca_file,
    )
    assert running.arrivals
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert test.token in logged  # it logs what arrived...
    assert BODY_MARKER not in logged  # ...never what it said
    assert "Subject" not in logged


async def test_a_waiter_is_woken_by_the_arrival(running: Running) -> None:
    test = await running.tests.create("example.com", "example.com")
    waiting = asyncio.ensure_future(running.tests.wait(test.token, 20))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await asyncio.to_thread(
        send, running.port, "a@example.com", [test.address], message(test.address)
    )
    received = await asyncio.wait_for(waiting, 10)
    assert received is not None and received.token == test.token
    # A deadline after the arrival does not win: one outcome per test.
    assert not await running.tests.time_out(test.token)
    stored = json.loads(await running.tests.redis.get(f"{PREFIX}message:{test.token}"))
    assert stored["token"] == test.token


def test_sources_not_seen_for_an_hour_are_forgotten() -> None:
    limits = SourceLimits(concurrent=5, per_hour=10)
    for n in range(100):  # a scan: many sources, one connection each
        assert limits.admit(f"192.0.2.{n}", now=0) is None
        limits.release(f"192.0.2.{n}")
    assert limits.admit("198.51.100.1", now=3700) is None
    assert list(limits.recent) == ["198.51.100.1"]
