"""Servers that drip, flood, stall, send garbage or hang up: each gives a
finding, never a hang or a crash. Real sockets on loopback, fake servers."""

from __future__ import annotations

import asyncio

import pytest

from checks.core.config import EngineConfig, Limits, Nameserver, Timeouts
from checks.core.model import CheckRequest, Severity
from checks.core.targets import TargetPolicy, parse_networks
from checks.net.door import Network
from checks.protocols.mailbox import IMAPDialect, POP3Dialect
from checks.protocols.session import Endpoint
from checks.protocols.smtp import SMTP
from checks.stages.probe import ProbeContext
from checks.stages.sessions import converse_or_refuse
from tests.support.fakeserver import FakeServer

CONFIG = EngineConfig(
    nameservers=(Nameserver("127.1.0.99"),),
    policy=TargetPolicy(parse_networks(["127.1.30.0/24"])),
    timeouts=Timeouts(connect=2, banner=0.5, reply=0.5, check=10),
    limits=Limits(line=1024, reply_lines=50, bytes_per_connection=64 * 1024),
)


def context() -> ProbeContext:
    return ProbeContext(CheckRequest("hostile.test", "hostile.test"), Network(CONFIG), {})


async def talk(server: FakeServer, family: str = "smtp", tls: str = "starttls"):
    protocol = {"smtp": "submission", "imap": "imap", "pop3": "pop3"}[family]
    if tls == "implicit":
        protocol += "s"
    ep = Endpoint("mail.hostile.test", server.address, server.port, protocol, tls, "client", True)
    dialect = {"smtp": SMTP, "imap": IMAPDialect, "pop3": POP3Dialect}[family](CONFIG)
    ctx = context()
    session = await asyncio.wait_for(converse_or_refuse(ctx, ep, dialect), 10)
    return session, ctx.findings


def codes(findings) -> list[str]:
    return [f.code for f in findings]


async def silent(reader, writer) -> None:
    await asyncio.sleep(3600)


async def test_a_server_that_never_greets() -> None:
    async with FakeServer(silent) as server:
        session, findings = await talk(server)
    assert session is None
    assert codes(findings) == ["smtp.banner.timeout"]
    assert "sent no greeting within 0.5 s" in findings[0].summary


async def test_a_server_that_drips_its_greeting_byte_by_byte() -> None:
    async def drip(reader, writer) -> None:
        for byte in b"220 mail.hostile.test ESMTP" + b"." * 10_000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.02)

    async with FakeServer(drip) as server:
        _session, findings = await talk(server)
    assert codes(findings) == ["smtp.banner.timeout"]


async def test_an_endless_line_is_cut_off() -> None:
    async def endless(reader, writer) -> None:
        writer.write(b"220 ")
        while True:
            writer.write(b"A" * 4096)
            await writer.drain()

    async with FakeServer(endless) as server:
        _session, findings = await talk(server)
    assert codes(findings) == ["session.protocol.invalid"]
    assert "longer than 1024 bytes" in findings[0].summary
    assert all(len(line) < 600 for line in findings[0].evidence)


async def test_a_flood_of_reply_lines_is_cut_off() -> None:
    async def flood(reader, writer) -> None:
        writer.write(b"220 mail.hostile.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-FLOOD\r\n" * 60)  # few bytes, too many lines
        await writer.drain()
        await asyncio.sleep(3600)

    async with FakeServer(flood) as server:
        _session, findings = await talk(server)
    assert codes(findings) == ["session.protocol.invalid"]
    assert "longer than 50 lines" in findings[0].summary


async def test_a_byte_flood_hits_the_connection_budget() -> None:
    async def flood(reader, writer) -> None:
        while True:
            writer.write(b"* OK " + b"x" * 500 + b"\r\n")
            await writer.drain()

    async with FakeServer(flood) as server:
        # IMAP greeting accepted, then CAPABILITY gets untagged lines forever.
        _session, findings = await talk(server, "imap")
    assert codes(findings) == ["session.protocol.invalid"]


@pytest.mark.parametrize(
    ("garbage", "family"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", "smtp"),
        (b"HTTP/1.1 400 Bad Request\r\n", "smtp"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "imap"),
        (b"\x00\xff\xfe garbage\r\n", "pop3"),
    ],
)
async def test_garbage_instead_of_a_greeting(garbage: bytes, family: str) -> None:
    async def talker(reader, writer) -> None:
        writer.write(garbage)
        await writer.drain()
        await asyncio.sleep(3600)

    async with FakeServer(talker) as server:
        _session, findings = await talk(server, family)
    assert codes(findings) == ["session.protocol.invalid"]
    assert "\x00" not in findings[0].summary and "\x00" not in "".join(findings[0].evidence)


async def test_a_server_that_hangs_up_at_once_is_inconclusive() -> None:
    async def rude(reader, writer) -> None:
        writer.close()

    async with FakeServer(rude) as server:
        _session, findings = await talk(server)
    assert codes(findings) == ["session.dropped"]
    assert findings[0].severity is Severity.INCONCLUSIVE


async def test_a_busy_server_is_inconclusive() -> None:
    async def busy(reader, writer) -> None:
        writer.write(b"421 4.7.0 mail.hostile.test Error: too many connections\r\n")
        await writer.drain()

    async with FakeServer(busy) as server:
        _session, findings = await talk(server)
    assert codes(findings) == ["smtp.banner.rejected"]
    assert findings[0].severity is Severity.INCONCLUSIVE
    assert "too many connections" in findings[0].summary


async def test_garbage_instead_of_a_tls_handshake() -> None:
    async def fake_tls(reader, writer) -> None:
        writer.write(b"220 mail.hostile.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-mail.hostile.test\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n")
        await writer.drain()
        await reader.read(100)
        writer.write(b"this is not TLS at all\r\n" * 10)
        await writer.drain()
        await asyncio.sleep(3600)

    async with FakeServer(fake_tls) as server:
        _session, findings = await talk(server)
    assert codes(findings) == ["tls.handshake.failed"]
    assert findings[0].reproduce.startswith("openssl s_client -connect 127.1.30.1:")


async def test_data_injected_before_the_tls_handshake_is_refused() -> None:
    async def injector(reader, writer) -> None:
        writer.write(b"220 mail.hostile.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-mail.hostile.test\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n250 injected\r\n")  # CVE-2011-0411 style
        await writer.drain()
        await asyncio.sleep(3600)

    async with FakeServer(injector) as server:
        _session, findings = await talk(server)
    assert codes(findings) == ["session.protocol.invalid"]
    assert "before the TLS handshake" in findings[0].summary


async def test_a_server_that_stalls_mid_conversation() -> None:
    async def stall(reader, writer) -> None:
        writer.write(b"+OK ready\r\n")
        await writer.drain()
        await asyncio.sleep(3600)

    async with FakeServer(stall) as server:
        _session, findings = await talk(server, "pop3")
    assert codes(findings) == ["session.reply.timeout"]


async def test_at_most_two_connections_at_a_time_per_address_and_port() -> None:
    # Two, as a mail client opens: a check's main conversation and its
    # legacy-TLS probe go side by side; the rest wait their turn.
    open_now = 0
    most = 0

    async def counting(reader, writer) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            writer.write(b"+OK hi\r\n")
            await writer.drain()
            while line := await reader.readline():
                if line.startswith(b"CAPA"):
                    writer.write(b"+OK\r\nUSER\r\n.\r\n")
                elif line.startswith(b"QUIT"):
                    writer.write(b"+OK bye\r\n")
                    await writer.drain()
                    return
                await writer.drain()
        finally:
            open_now -= 1

    async with FakeServer(counting) as server:
        ep = Endpoint(
            "mail.hostile.test", server.address, server.port, "pop3", "starttls", "client", True
        )
        ctx = context()
        await asyncio.gather(*(converse_or_refuse(ctx, ep, POP3Dialect(CONFIG)) for _ in range(5)))
    assert server.connections == 5 and most == 2


async def test_the_goodbye_is_said_in_the_background_holding_its_slot() -> None:
    # A server slow to answer QUIT: the conversation is over (and judged) at
    # once, the QUIT still goes out and its reply is read, and the connection
    # keeps its place among the two per address:port until then.
    release = asyncio.Event()
    quits: list[str] = []
    open_now = most = 0

    async def slow_goodbye(reader, writer) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            writer.write(b"+OK hi\r\n")
            while line := await reader.readline():
                if line.startswith(b"CAPA"):
                    writer.write(b"+OK\r\nUSER\r\n.\r\n")
                elif line.startswith(b"QUIT"):
                    quits.append("asked")
                    await release.wait()
                    writer.write(b"+OK bye\r\n")
                    await writer.drain()
                    quits.append("answered")
                    await reader.read()  # until the client hangs up
                    return
                await writer.drain()
        finally:
            open_now -= 1

    async with FakeServer(slow_goodbye) as server:
        ep = Endpoint(
            "mail.hostile.test", server.address, server.port, "pop3", "starttls", "client", True
        )
        ctx = context()
        first = await asyncio.wait_for(converse_or_refuse(ctx, ep, POP3Dialect(CONFIG)), 2)
        assert first is not None and first.complete
        assert quits in ([], ["asked"])  # not answered, and nobody waited for it
        # Two goodbyes pending hold both slots: a third conversation waits.
        second = asyncio.ensure_future(converse_or_refuse(ctx, ep, POP3Dialect(CONFIG)))
        await asyncio.sleep(0.05)
        third = asyncio.ensure_future(converse_or_refuse(ctx, ep, POP3Dialect(CONFIG)))
        await asyncio.sleep(0.1)
        assert second.done() and not third.done() and server.connections == 2
        release.set()
        assert (await asyncio.wait_for(third, 2)) is not None
        await asyncio.sleep(0.1)
    assert quits.count("answered") == 3 and most == 2


@pytest.mark.parametrize(
    ("family", "greeting", "code"),
    [
        ("smtp", b"554 5.7.1 no thanks\r\n", "smtp.banner.rejected"),
        ("imap", b"* BYE Too many connections\r\n", "imap.banner.rejected"),
        ("pop3", b"-ERR [SYS/TEMP] busy\r\n", "pop3.banner.rejected"),
    ],
)
async def test_refused_greetings_are_inconclusive(family: str, greeting: bytes, code: str) -> None:
    async def refuse(reader, writer) -> None:
        writer.write(greeting)
        await writer.drain()

    async with FakeServer(refuse) as server:
        _session, findings = await talk(server, family)
    assert codes(findings) == [code]
    assert findings[0].severity is Severity.INCONCLUSIVE


@pytest.mark.parametrize(
    ("family", "code"),
    [("imap", "imap.banner.timeout"), ("pop3", "pop3.banner.timeout")],
)
async def test_silent_mailbox_servers(family: str, code: str) -> None:
    async with FakeServer(silent) as server:
        _session, findings = await talk(server, family)
    assert codes(findings) == [code]


async def test_ehlo_rejected() -> None:
    async def no_esmtp(reader, writer) -> None:
        writer.write(b"220 old.hostile.test SMTP\r\n")
        await writer.drain()
        await reader.readline()
        writer.write(b"502 5.5.1 command not recognized\r\n")
        await writer.drain()
        await asyncio.sleep(3600)

    async with FakeServer(no_esmtp) as server:
        _session, findings = await talk(server)
    assert codes(findings) == ["smtp.ehlo.rejected"]
    assert "502" in findings[0].summary


@pytest.mark.parametrize(
    ("family", "script", "code"),
    [
        (
            "imap",
            [
                b"* OK ready\r\n",
                b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\nmc1 OK done\r\n",
                b"mc2 NO [UNAVAILABLE] TLS broken\r\n",
            ],
            "imap.starttls.failed",
        ),
        (
            "pop3",
            [b"+OK ready\r\n", b"+OK\r\nSTLS\r\nTOP\r\n.\r\n", b"-ERR TLS broken\r\n"],
            "pop3.starttls.failed",
        ),
    ],
)
async def test_starttls_advertised_then_refused(
    family: str, script: list[bytes], code: str
) -> None:
    async def scripted(reader, writer) -> None:
        writer.write(script[0])
        for reply in script[1:]:
            await writer.drain()
            await reader.readline()
            writer.write(reply)
        await writer.drain()
        await asyncio.sleep(3600)

    async with FakeServer(scripted) as server:
        _session, findings = await talk(server, family)
    assert code in codes(findings)
    assert "TLS broken" in next(f for f in findings if f.code == code).summary


async def test_ipv6_endpoints_work_and_reproduce_with_brackets() -> None:
    async def tls_broken(reader, writer) -> None:
        writer.write(b"220 v6.hostile.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-v6.hostile.test\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"454 4.7.0 TLS not available due to local problem\r\n")
        await writer.drain()
        await asyncio.sleep(3600)

    config = EngineConfig(
        policy=TargetPolicy(parse_networks(["::1/128"])),
        timeouts=CONFIG.timeouts,
        nameservers=CONFIG.nameservers,
    )
    async with FakeServer(tls_broken, "::1") as server:
        ep = Endpoint("v6.hostile.test", "::1", server.port, "smtp", "starttls", "mx", True)
        ctx = ProbeContext(CheckRequest("hostile.test", "hostile.test"), Network(config), {})
        session = await converse_or_refuse(ctx, ep, SMTP(config))
    assert session is not None and session.banner == "220 v6.hostile.test ESMTP"
    (finding,) = ctx.findings
    assert finding.code == "smtp.starttls.failed"
    assert finding.severity is Severity.WARNING  # on an MX, senders fall back to plain text
    assert finding.reproduce == (
        f"openssl s_client -connect [::1]:{server.port} -starttls smtp -servername v6.hostile.test"
    )
    assert finding.target.label() == f"v6.hostile.test [::1]:{server.port}/smtp"
