"""A busy server's "not now" is told apart from a "no" (#18: right under load).

Under load the lab's servers answer 421, "-ERR Connection queue full", hang
up mid-handshake or reset; each is inconclusive and quotes the server, never
a mismatch, an invalid file or a missing STARTTLS. tests/integration/
test_under_load.py runs 100 checks at once; these pin each case down."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from checks.core.model import Severity
from checks.net import http
from checks.net.door import Network
from checks.protocols.session import busy, temporary
from checks.rules.clientconf import ClientConfig, ServerSetting
from checks.stages import autoconfig
from checks.stages.probe import ProbeContext
from tests.support.fakeserver import FakeServer
from tests.unit.test_hostile_servers import context, talk


@pytest.mark.parametrize(
    "reply",
    [
        "421 4.7.0 mx1.example Error: too many connections from 192.0.2.1",
        "450 4.7.1 try again later",
        "-ERR [SYS/TEMP] Temporary failure",
        "-ERR [IN-USE] Mailbox locked",
        "-ERR Connection queue full",
        "* BYE Too many connections",
        "a1 NO [UNAVAILABLE] Server busy",
    ],
)
def test_not_now(reply: str) -> None:
    assert temporary(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "-ERR Unknown command",  # an RFC 1939 server without CAPA: a real answer
        "550 5.7.1 relay denied",
        "-ERR [AUTH] Authentication failed",
        "a1 BAD command unknown",
        "502 5.5.2 Error: command not recognized",
        "454 4.7.0 TLS not available due to local problem",  # Postfix without its key
    ],
)
def test_no(reply: str) -> None:
    assert not temporary(reply)


def test_at_starttls_only_load_counts() -> None:
    """A [UNAVAILABLE] at STARTTLS is the server's TLS that is down: a failure."""
    assert temporary("a1 NO [UNAVAILABLE] TLS broken")
    assert not busy("a1 NO [UNAVAILABLE] TLS broken")
    assert busy("-ERR Connection queue full") and busy("421 4.7.0 Error: too many connections")


# -- a busy server, as the checks see it (fake servers on loopback) ---------------------------


def with_results(results: dict[str, Any]) -> ProbeContext:
    """A probe's context whose dependencies returned `results`."""
    base = context()
    return ProbeContext(base.request, base.net, results)


BUSY_POP3 = [b"+OK Dovecot ready.\r\n", b"-ERR Connection queue full\r\n"]


def scripted(lines: list[bytes], then_close: bool = False) -> Any:
    """A server that answers each line it reads with the next of `lines`
    (the first is its greeting), then hangs up (`then_close`) or waits."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(lines[0])
        for line in lines[1:]:
            await reader.readline()
            writer.write(line)
            await writer.drain()
        if not then_close:
            await asyncio.sleep(3600)

    return serve


async def test_a_pop3_server_with_a_full_queue_is_busy_not_without_stls() -> None:
    async with FakeServer(scripted(BUSY_POP3)) as server:
        _session, findings = await talk(server, "pop3")
    (finding,) = findings
    assert finding.code == "pop3.banner.rejected"  # was: pop3.starttls.missing, an error
    assert finding.severity is Severity.INCONCLUSIVE
    assert "Connection queue full" in finding.summary


async def test_a_hang_up_in_the_tls_handshake_is_inconclusive() -> None:
    stls = [b"+OK ready\r\n", b"+OK\r\nSTLS\r\n.\r\n", b"+OK Begin TLS\r\n"]
    async with FakeServer(scripted(stls, then_close=True)) as server:
        _session, findings = await talk(server, "pop3")
    (finding,) = findings
    assert finding.code == "session.dropped"  # was: tls.handshake.failed, an error
    assert "closed the connection during the TLS handshake" in finding.summary


async def test_a_cross_check_of_a_busy_server_is_busy_not_a_mismatch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeServer(scripted(BUSY_POP3)) as server:

        async def here(net: Network, host: str) -> list[str]:
            return [server.address]

        monkeypatch.setattr(http, "resolve_allowed", here)
        setting = ServerSetting("pop3", "mail.hostile.test", server.port, "STARTTLS", "u", ())
        found = autoconfig.Found("thunderbird", "https://x/", ClientConfig((setting,), ()))
        ctx = with_results(
            {
                "autoconfig.thunderbird": found,
                "autoconfig.outlook": None,
                "autoconfig.mailconf": None,
                "autoconfig.mobileconfig": None,
                "dns.srv": None,
            }
        )
        await asyncio.wait_for(autoconfig.probe_servers(ctx), 20)
    codes = {f.code: f for f in ctx.findings}
    assert "autoconfig.server.mismatch" not in codes  # what it was
    busy_finding = codes["autoconfig.server.busy"]
    assert busy_finding.severity is Severity.INCONCLUSIVE
    assert "Connection queue full" in busy_finding.summary


async def test_a_configuration_url_that_resets_is_not_an_invalid_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()  # an RST, as an overloaded nginx sends

    async with FakeServer(reset) as server:

        async def here(net: Network, host: str) -> list[str]:
            return [server.address]

        monkeypatch.setattr(http, "resolve_allowed", here)
        url = f"http://autoconfig.hostile.test:{server.port}/mail/config-v1.1.xml"
        ctx = with_results({"dns.mailconf": url})
        assert await asyncio.wait_for(autoconfig.probe_mailconf(ctx), 20) is None
    (finding,) = ctx.findings
    assert finding.code == "autoconfig.fetch.failed"  # was: autoconfig.invalid, an error
    assert finding.severity is Severity.INCONCLUSIVE
    assert "closed the connection" in finding.summary
