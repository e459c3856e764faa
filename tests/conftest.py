"""Shared fixtures. The lab (a real NSD on 127.1.0.53) is started by
scripts/test; when pytest runs on its own, `lab_dns` starts it here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import pytest

from checks.config import EngineConfig, Nameserver, Timeouts
from checks.targets import TargetPolicy, parse_networks
from tests.lab.nsd import NSDLab
from tests.lab.zones import NS_ADDRESS, all_zones

REPO = Path(__file__).resolve().parents[1]
LAB_NETWORK = "127.1.0.0/16"


def _answers(address: str) -> bool:
    try:
        dns.query.udp(dns.message.make_query("healthy.test", "SOA"), address, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return False
    return True


@pytest.fixture(scope="session")
def lab_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of the lab's authoritative DNS server, started if needed."""
    if _answers(NS_ADDRESS):
        yield NS_ADDRESS
        return
    lab = NSDLab(tmp_path_factory.mktemp("nsd"), address=NS_ADDRESS)
    lab.start(all_zones())
    try:
        yield NS_ADDRESS
    finally:
        lab.stop()


def lab_engine_config(address: str, **timeouts: float) -> EngineConfig:
    return EngineConfig(
        nameservers=(Nameserver(address),),
        policy=TargetPolicy(parse_networks([LAB_NETWORK])),
        timeouts=Timeouts(**{"dns": 2.0, "check": 30.0, **timeouts}),
        dnsbl_zones=("bl.test",),  # the lab's blocklist; public lists are not reachable
    )


@pytest.fixture
def lab_config(lab_dns: str) -> EngineConfig:
    return lab_engine_config(lab_dns)


@pytest.fixture(scope="session")
def mail_lab(lab_dns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The CA file of the running Postfix/Dovecot lab (started here if needed)."""
    from tests.lab.mail import running_mail_lab

    with running_mail_lab(tmp_path_factory.mktemp("mail")) as lab:
        yield str(lab.ca_file)


@pytest.fixture(scope="session")
def lab_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The lab's real Redis (a RedisLab: .url, .restart()), started here if needed."""
    from tests.lab.redis import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as redis_lab:
        yield redis_lab


@pytest.fixture
async def stalling_mx() -> Any:
    """smtp-stall.test's MX (127.1.20.3:25): accepts connections, never greets."""
    import asyncio

    from tests.support.fakeserver import FakeServer

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async with FakeServer(never_greet, "127.1.20.3", 25) as server:
        yield server
