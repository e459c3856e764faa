"""The network door's DNS half, against tiny real DNS servers on loopback."""

import asyncio

import dns.rcode
import pytest

from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.errors import NXDomain, ResolverFailure, ResolverTimeout
from checks.core.model import CheckRequest, Severity
from checks.engine.runner import run
from checks.net.door import Network, recording
from tests.support.nanodns import NanoDNS, reply


def door(server: NanoDNS, dns_timeout: float = 2.0) -> Network:
    return Network(
        EngineConfig(
            nameservers=(Nameserver(server.address, server.port),),
            timeouts=Timeouts(dns=dns_timeout, check=10),
        )
    )


def mx_answer(query):
    name = query.question[0].name.to_text()
    return reply(query, answers=[f"{name} 300 IN MX 10 mx.example.test."])


async def test_queries_go_to_the_configured_server_only_and_are_memoised() -> None:
    with NanoDNS(mx_answer) as server:
        net = door(server)
        lines: list[str] = []
        with recording(lines):
            first, second = await asyncio.gather(
                net.query("Example.TEST.", "MX"), net.query("example.test", "mx")
            )
        assert first is second
        assert first.texts() == ["10 mx.example.test."]
        assert len(server.queries) == 1  # one packet for two identical questions
        assert str(server.queries[0].question[0].name) == "example.test."
        assert len(lines) == 2 and all("MX example.test -> 10 mx.example.test." in x for x in lines)


@pytest.mark.parametrize(
    ("rcode", "error", "text"),
    [
        (dns.rcode.NXDOMAIN, NXDomain, "does not exist"),
        (dns.rcode.SERVFAIL, ResolverFailure, "SERVFAIL"),
        (dns.rcode.REFUSED, ResolverFailure, "REFUSED"),
    ],
)
async def test_error_answers_are_translated(rcode: int, error: type, text: str) -> None:
    with NanoDNS(lambda q: reply(q, rcode)) as server:
        with pytest.raises(error) as info:
            await door(server).query("example.test", "MX")
        assert text in str(info.value)
        assert info.value.qname == "example.test" and info.value.rdtype == "MX"


async def test_silence_is_a_timeout() -> None:
    with NanoDNS(lambda q: None) as server:
        with pytest.raises(ResolverTimeout) as info:
            await door(server, dns_timeout=0.3).query("example.test", "MX")
        assert isinstance(info.value, TimeoutError)
        assert "0.3 s" in str(info.value)


async def test_garbage_is_a_failure_not_a_crash() -> None:
    with NanoDNS(lambda q: b"\x00\x01garbage" * 3) as server, pytest.raises(ResolverFailure):
        await door(server, dns_timeout=0.5).query("example.test", "MX")


async def test_a_name_without_that_record_gives_an_empty_answer() -> None:
    with NanoDNS(lambda q: reply(q)) as server:
        answer = await door(server).query("example.test", "MX")
        assert answer.records == () and answer.ttl is None and not answer.via_cname


async def test_servfail_in_a_check_is_inconclusive_not_an_error() -> None:
    with NanoDNS(lambda q: reply(q, dns.rcode.SERVFAIL)) as server:
        net = door(server)
        report = await run(CheckRequest("example.test", "example.test"), net.config, network=net)
    assert [(f.code, f.severity) for f in report.findings] == [
        ("dns.resolver.failure", Severity.INCONCLUSIVE)
    ]
    assert f"@{server.address} -p {server.port}" in (report.findings[0].reproduce or "")


def test_dig_commands_name_the_resolver() -> None:
    net = Network(EngineConfig(nameservers=(Nameserver("127.1.0.53"),)))
    assert net.dig("example.test", "mx") == "dig +short MX example.test @127.1.0.53"
    assert net.dig("192.0.2.1", "PTR") == "dig +short -x 192.0.2.1 @127.1.0.53"
    net = Network(EngineConfig(nameservers=(Nameserver("::1", 5353),)))
    assert net.dig("example.test", "A") == "dig +short A example.test @::1 -p 5353"
