"""The send-test receiver (bot/receiver.py) and its store (bot/testaddresses.py),
with real SMTP clients, real TLS (a throwaway CA) and the lab's real Redis
(DB 7, which only these tests use).

The receiver listens on an ephemeral port of 127.1.41.1; clients connect from
other 127.1.x.y addresses. The per-source limits count a source's /24 (IPv4)
or /64 (IPv6): a test that needs distinct senders takes them from distinct
127.1.N.0/24 networks; the /64 case runs in a network namespace of its own
(tests/support/netns.py), the only place a test gets many IPv6 sources.

The hostile-sender tests at the end perform the attacks of issue 16: a 200 MB
line in DATA against `mailcheck receiver` in a process of its own (its peak
RSS read from /proc), 10,000 RCPTs in one session against a Redis of the
test's own (INFO commandstats counts every lookup), and many addresses of one
network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.receiver import Receiver, SourceLimits, tls_context
from bot.testaddresses import PREFIX, SendTest, SendTests
from checks.engine.sendtest import Received
from tests.lab.pki import CertSpec, LabPKI
from tests.lab.redis import RedisLab
from tests.support.netns import run_in_netns
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
        # Another network is not affected.
        other = await asyncio.to_thread(client, running.port, "127.1.42.4")
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
        assert limits.admit(f"192.0.{n}.1", now=0) is None
        limits.release(f"192.0.{n}.1")
    assert limits.admit("198.51.100.1", now=3700) is None
    assert list(limits.recent) == ["198.51.100.0/24"]


def test_the_hourly_counts_kept_are_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import bot.receiverlimits

    monkeypatch.setattr(bot.receiverlimits, "MAX_NETWORKS", 50)
    limits = SourceLimits(concurrent=5, per_hour=10)
    for n in range(200):  # IPv6 senders rotating through their /64s within the hour
        assert limits.admit(f"2001:db8:{n:x}::1", now=n) is None
        limits.release(f"2001:db8:{n:x}::1")
    assert len(limits.recent) == 50
    assert list(limits.recent)[-1] == "2001:db8:c7::/64"  # the most recent kept
    assert "more than 50 sending networks this hour" in caplog.text


# --- hostile senders (issue 16): memory, Redis lookups, limits per network ------------------

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


def _nothing_arrives() -> Any:
    async def arrived(received: Received, test: SendTest) -> None:
        raise AssertionError("no message was meant to arrive")

    return arrived


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def receiver_process(redis_url: str, tmp_path: Path, **settings: str) -> Iterator[tuple[int, int]]:
    """`mailcheck receiver` as an operator runs it, in a process of its own
    whose memory /proc shows: (its PID, its port)."""
    port = _free_port(ADDRESS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILCHECK_", "SLACK_"))}
    env |= {
        "MAILCHECK_REDIS_URL": redis_url,
        "MAILCHECK_SENDTEST_DOMAIN": DOMAIN,
        "MAILCHECK_RECEIVER_LISTEN": f"{ADDRESS}:{port}",
        **settings,
    }
    log = (tmp_path / "receiver.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "receiver"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "receiver.log").read_text()
            try:
                socket.create_connection((ADDRESS, port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mailcheck receiver did not listen"
                time.sleep(0.1)
        yield server.pid, port
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def _peak_growth_mb(pid: int, attack: Any) -> float:
    """How far the process's resident memory rose above where it was while
    `attack()` ran: the peak (VmHWM, reset first) minus the RSS before."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kb(pid, "VmRSS")
    attack()
    return (_status_kb(pid, "VmHWM") - before) / 1024


def long_line_in_data(port: int, rcpt: str, size: int) -> tuple[int, bytes]:
    """DATA, then `size` bytes without a line end in 1 MB writes, then the end
    of the data: the server's reply, or (0, b"") when it hung up first."""
    smtp = client(port)
    try:
        smtp.mail("a@example.com")
        assert smtp.rcpt(rcpt)[0] == 250
        assert smtp.docmd("DATA")[0] == 354
        assert smtp.sock is not None
        chunk = b"x" * MB
        with contextlib.suppress(OSError):  # the receiver may hang up on the flood
            for _ in range(size // MB):
                smtp.sock.sendall(chunk)
            smtp.sock.sendall(b"\r\n.\r\n")
        try:
            return smtp.getreply()
        except smtplib.SMTPServerDisconnected:
            return 0, b""
    finally:
        smtp.close()


async def test_a_200_mb_line_in_data_keeps_the_receiver_memory_bounded(
    redis: Redis, lab_redis: Any, tmp_path: Path
) -> None:
    tests = SendTests(redis, DOMAIN, ttl=600)
    test = await tests.create("example.com", "example.com")
    url = f"{lab_redis.url.rsplit('/', 1)[0]}/7"
    with receiver_process(url, tmp_path) as (pid, port):
        # The same attack, 2 MB: every code path loaded before measuring.
        await asyncio.to_thread(long_line_in_data, port, test.address, 2 * MB)
        replies: list[tuple[int, bytes]] = []
        grown = await asyncio.to_thread(
            _peak_growth_mb,
            pid,
            lambda: replies.append(long_line_in_data(port, test.address, 200 * MB)),
        )
        print(f"\nreceiver peak RSS growth, a 200 MB line in DATA: {grown:.1f} MB")
        assert grown < 20, f"the receiver grew by {grown:.0f} MB on one 200 MB line"
        ((code, text),) = replies
        assert code in (552, 0), (code, text)  # refused, or cut off after the drain limit
        # Still serving, and the address still takes a proper message.
        await asyncio.to_thread(send, port, "a@example.com", [test.address], message(test.address))
        assert await tests.message(test.token) is not None


async def test_a_message_of_empty_lines_keeps_the_receiver_memory_bounded(
    redis: Redis, lab_redis: Any, tmp_path: Path
) -> None:
    """A 2 MB message of bare CRLFs is a million lines: kept as an object per
    line (aiosmtpd's way) it grew the receiver by 170 MB; in one buffer it
    costs what any 2 MB message costs (storing it makes a few copies)."""
    tests = SendTests(redis, DOMAIN, ttl=600)
    warm, test = [await tests.create("example.com", "example.com") for _ in range(2)]
    url = f"{lab_redis.url.rsplit('/', 1)[0]}/7"
    size = 2 * MB
    with receiver_process(url, tmp_path, MAILCHECK_RECEIVER_MAX_SIZE=str(size)) as (pid, port):
        await asyncio.to_thread(send, port, "a@example.com", [warm.address], message(warm.address))
        body = message(test.address) + "\r\n" * (size // 2 - 1000)
        grown = await asyncio.to_thread(
            _peak_growth_mb,
            pid,
            lambda: send(port, "a@example.com", [test.address], body),
        )
        print(f"\nreceiver peak RSS growth, a 2 MB message of empty lines: {grown:.1f} MB")
        assert grown < 20, f"the receiver grew by {grown:.0f} MB on a 2 MB message"
        stored = await tests.message(test.token)
        assert stored is not None and len(stored.message) > size - 2000


@pytest.fixture
def counting_redis(tmp_path: Path) -> Iterator[RedisLab]:
    """A redis-server of the test's own (127.1.41.79): its INFO commandstats
    counts only what the receiver asked, not what other tests ask the lab's."""
    server = RedisLab(tmp_path / "redis", address="127.1.41.79")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def pipelined(port: int, lines: list[bytes], source: str = "127.1.41.2") -> list[bytes]:
    """Send `lines` in one go, as a flood would (no waiting for replies), and
    collect the replies until the receiver hangs up (at most 60 s)."""
    reader, writer = await asyncio.open_connection(ADDRESS, port, local_addr=(source, 0))

    async def flood() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"".join(line + b"\r\n" for line in lines))
            await writer.drain()

    sending = asyncio.ensure_future(flood())
    replies: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            with contextlib.suppress(ConnectionError):
                while line := await reader.readline():
                    replies.append(line)
    finally:
        sending.cancel()
        writer.close()
    return replies


async def test_ten_thousand_rcpts_cost_a_bounded_number_of_redis_commands(
    counting_redis: RedisLab,
) -> None:
    db = Redis.from_url(counting_redis.url)
    receiver = Receiver(
        SendTests(db, DOMAIN, ttl=600),
        _nothing_arrives(),
        host=ADDRESS,
        port=0,
        hostname="mx.sendtest.example.net",
    )
    await receiver.start()
    try:
        await db.ping()  # the pool's connection made (and its handshake counted) first
        await db.config_resetstat()
        flood = [b"EHLO flood.example.com", b"MAIL FROM:<a@example.com>"]
        flood += [f"RCPT TO:<st-{n:016x}@{DOMAIN}>".encode() for n in range(10_000)]
        replies = await pipelined(receiver.port, [*flood, b"QUIT"])
        stats = await db.info("commandstats")
    finally:
        await receiver.stop()
        await db.aclose()
    asked = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if not name.removeprefix("cmdstat_").startswith(("info", "config", "client", "hello"))
    }
    lookups = sum(asked.values())
    print(f"\n10,000 RCPTs in one session: {lookups} Redis commands {asked}")
    assert lookups <= 5, f"{lookups} Redis commands for one session: {asked}"
    unknown = [r for r in replies if r.startswith(b"550")]
    assert 0 < len(unknown) <= 5
    assert any(r.startswith(b"452") and b"recipients" in r for r in replies)
    assert replies[-1].startswith(b"421") and b"commands" in replies[-1]  # then it hung up
    assert len(replies) < 200


async def test_a_session_ends_after_its_command_limit(redis: Redis) -> None:
    receiver = Receiver(
        SendTests(redis, DOMAIN, ttl=600),
        _nothing_arrives(),
        host=ADDRESS,
        port=0,
        hostname="mx.sendtest.example.net",
        max_commands=20,
    )
    await receiver.start()
    try:
        replies = await pipelined(receiver.port, [b"EHLO x.example.com"] + [b"NOOP"] * 1000)
    finally:
        await receiver.stop()
    assert replies[-1].startswith(b"421") and b"20 commands" in replies[-1]
    assert sum(r.startswith(b"250 ") for r in replies) == 20  # EHLO's last line, 19 NOOPs


async def test_the_per_source_limits_count_a_whole_ipv4_24(running: Running) -> None:
    held = [await asyncio.to_thread(client, running.port, f"127.1.42.{n}") for n in (1, 2)]
    try:
        with pytest.raises(smtplib.SMTPConnectError) as third:
            await asyncio.to_thread(client, running.port, "127.1.42.3")
        assert third.value.smtp_code == 421
        assert b"127.1.42.0/24" in third.value.smtp_error and b"at once" in third.value.smtp_error
        other = await asyncio.to_thread(client, running.port, "127.1.43.1")
        await asyncio.to_thread(other.quit)
    finally:
        for smtp in held:
            await asyncio.to_thread(smtp.quit)
    # Six an hour for the whole /24, each connection from an address of its own.
    for n in range(4, 8):
        done = await asyncio.to_thread(client, running.port, f"127.1.42.{n}")
        await asyncio.to_thread(done.quit)
    with pytest.raises(smtplib.SMTPConnectError) as hourly:
        await asyncio.to_thread(client, running.port, "127.1.42.8")
    assert hourly.value.smtp_code == 421 and b"this hour" in hourly.value.smtp_error


V6_SOURCES = ("2001:db8:5::1", "2001:db8:5::2", "2001:db8:5:0:ffff::3", "2001:db8:6::1")


async def ipv6_scenario() -> dict[str, int]:
    """Run inside a network namespace whose lo has V6_SOURCES (no Redis there:
    no connection gets past its greeting). Two connections at once from one
    /64 are allowed: each source's greeting code, the connections held open."""
    receiver = Receiver(
        SendTests(Redis(host="::1", port=9), DOMAIN, ttl=600),  # never asked
        _nothing_arrives(),
        host="::1",
        port=0,
        hostname="mx.sendtest.example.net",
        concurrent=2,
        per_hour=6,
    )
    await receiver.start()

    def connect(source: str) -> tuple[int, smtplib.SMTP | None]:
        try:
            smtp = smtplib.SMTP("::1", receiver.port, timeout=10, source_address=(source, 0))
        except smtplib.SMTPConnectError as exc:
            return exc.smtp_code, None
        return 220, smtp

    codes: dict[str, int] = {}
    held: list[smtplib.SMTP] = []
    try:
        for source in V6_SOURCES:
            code, smtp = await asyncio.to_thread(connect, source)
            codes[source] = code
            if smtp is not None:
                held.append(smtp)
    finally:
        for smtp in held:
            await asyncio.to_thread(smtp.close)
        await receiver.stop()
    return codes


def test_the_per_source_limits_count_a_whole_ipv6_64() -> None:
    code = (
        "import asyncio, json\n"
        "from tests.unit.test_receiver import ipv6_scenario\n"
        "print(json.dumps(asyncio.run(ipv6_scenario())))\n"
    )
    result = run_in_netns([sys.executable, "-c", code], V6_SOURCES, cwd=str(REPO))
    if result is None:
        pytest.skip("this machine makes no network namespaces (unshare --net), so no IPv6 sources")
    assert result.returncode == 0, result.stderr
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    # Three addresses of 2001:db8:5::/64: the third is one too many at once;
    # an address of the next /64 is another sender.
    assert codes == {
        "2001:db8:5::1": 220,
        "2001:db8:5::2": 220,
        "2001:db8:5:0:ffff::3": 421,
        "2001:db8:6::1": 220,
    }


def test_source_networks() -> None:
    from bot.receiverlimits import source_network

    assert source_network("192.0.2.77") == "192.0.2.0/24"
    assert source_network("::ffff:192.0.2.77") == "192.0.2.0/24"  # a dual-stack listener's view
    assert source_network("2001:db8:5:0:ffff::3") == "2001:db8:5::/64"
    assert source_network("2001:db8:5::1", v6_prefix=48) == "2001:db8:5::/48"
    assert source_network("192.0.2.77", v4_prefix=32) == "192.0.2.77/32"
    assert source_network("fe80::1%lo") == "fe80::/64"
    assert source_network("not an address") == "not an address"  # itself, never an error


async def test_a_global_cap_on_open_connections(redis: Redis) -> None:
    receiver = Receiver(
        SendTests(redis, DOMAIN, ttl=600),
        _nothing_arrives(),
        host=ADDRESS,
        port=0,
        hostname="mx.sendtest.example.net",
        total=3,
    )
    await receiver.start()
    held = []
    try:
        for net in (42, 43, 44):  # three senders, three networks
            held.append(await asyncio.to_thread(client, receiver.port, f"127.1.{net}.1"))
        with pytest.raises(smtplib.SMTPConnectError) as fourth:
            await asyncio.to_thread(client, receiver.port, "127.1.45.1")
        assert fourth.value.smtp_code == 421 and b"busy" in fourth.value.smtp_error
        await asyncio.to_thread(held.pop().quit)
        for _ in range(50):  # the closed one's slot comes back once the receiver sees it go
            with contextlib.suppress(smtplib.SMTPConnectError):
                held.append(await asyncio.to_thread(client, receiver.port, "127.1.45.1"))
                break
            await asyncio.sleep(0.05)
        assert len(held) == 3
    finally:
        for smtp in held:
            await asyncio.to_thread(smtp.quit)
        await receiver.stop()


async def test_an_over_long_line_in_data_refuses_that_message_only(running: Running) -> None:
    test = await running.tests.create("example.com", "example.com")
    with await asyncio.to_thread(client, running.port) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(
                smtp.sendmail,
                "a@example.com",
                [test.address],
                message(test.address, extra="y" * 5000 + "\r\n"),
            )
        assert refused.value.smtp_code == 552 and b"longer than" in refused.value.smtp_error
        # The session goes on, and the address still takes a proper message.
        await asyncio.to_thread(
            smtp.sendmail, "a@example.com", [test.address], message(test.address)
        )
    assert [a.token for a in running.arrivals] == [test.token]


async def test_the_tail_of_an_over_long_line_never_ends_the_data() -> None:
    from bot.receiverlimits import read_data

    reader = asyncio.StreamReader(limit=1001)
    reading = asyncio.ensure_future(read_data(reader, max_size=100_000, line_limit=1001))
    for piece in (b"Subject: x\r\n\r\n", b"x" * 3000 + b".", b"\r\n", b"ok\r\n.\r\n"):
        reader.feed_data(piece)
        for _ in range(3):
            await asyncio.sleep(0)  # let the reader take each piece as it comes
    data = await asyncio.wait_for(reading, 5)
    # The 3000-byte line ended in ".", "\r\n": its tail, not the end of the data.
    assert "longer than" in data.refused and not data.closed and data.content == b""


def test_the_receiver_limits_are_settings() -> None:
    from bot.settings import Settings
    from checks.core.errors import InputError

    settings = Settings.from_env(
        {
            "MAILCHECK_RECEIVER_TOTAL_CONNECTIONS": "7",
            "MAILCHECK_RECEIVER_MAX_COMMANDS": "30",
            "MAILCHECK_RECEIVER_MAX_RECIPIENTS": "2",
            "MAILCHECK_RECEIVER_PREFIX_V4": "28",
            "MAILCHECK_RECEIVER_PREFIX_V6": "56",
        }
    )
    assert (
        settings.receiver_total_connections,
        settings.receiver_max_commands,
        settings.receiver_max_recipients,
        settings.receiver_prefix_v4,
        settings.receiver_prefix_v6,
    ) == (7, 30, 2, 28, 56)
    for name, value, complaint in (
        ("MAILCHECK_RECEIVER_PREFIX_V4", "33", "prefix length of 16 to 32, not 33"),
        ("MAILCHECK_RECEIVER_PREFIX_V6", "/64", "is not a whole number"),
        ("MAILCHECK_RECEIVER_MAX_COMMANDS", "3", "at least 10"),
        ("MAILCHECK_RECEIVER_TOTAL_CONNECTIONS", "0", "at least 1"),
    ):
        with pytest.raises(InputError, match=complaint) as bad:
            Settings.from_env({name: value})
        assert name in str(bad.value)
