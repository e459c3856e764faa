"""Every URL goes through the one door (issue 16, part 2).

A hostile domain writes URLs in DNS (`mailconf=`), in autodiscover answers
(RedirectUrl, RedirectAddr), in Location headers and behind profile links; the
operator writes one more (the ISPDB). Each literal spelling of 127.0.0.1 below,
from each of those places, must end as `connect.target.refused` in the report
(the lab's policy allows 127.1.0.0/16 only), with not one connection at a
canary listening on 127.0.0.1:80 and :443.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from checks.core.config import EngineConfig, Timeouts
from checks.core.model import CheckRequest, Report, Stage
from checks.engine.runner import run
from tests.lab.zones import (
    HOSTILE_URL_SCENARIOS,
    URL_HOST_FORMS,
    URL_MOBILECONFIG_DOMAIN,
    url_domain,
)

pytestmark = pytest.mark.lab

CANARY = "127.0.0.1"
REFUSED = {CANARY, "::ffff:7f00:1"}  # what the door says it refused


class Canary:
    """Listeners on 127.0.0.1:80 and :443 that count every connection."""

    def __init__(self) -> None:
        self.connections = 0
        self.servers: list[asyncio.Server] = []

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def __aenter__(self) -> Canary:
        for port in (80, 443):
            self.servers.append(await asyncio.start_server(self._accept, CANARY, port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    async with Canary() as listening:
        yield listening


@pytest.fixture
def config(lab_config: EngineConfig) -> EngineConfig:
    return replace(lab_config, timeouts=Timeouts(dns=2, connect=2, banner=3, reply=5, check=60))


async def autoconfig(domain: str, config: EngineConfig, **request: object) -> Report:
    stages = frozenset({Stage.AUTOCONFIG})
    return await run(CheckRequest(domain, domain, domain, stages, **request), config)  # type: ignore[arg-type]


def assert_refused(report: Report, canary: Canary) -> None:
    refused = [f for f in report.findings if f.code == "connect.target.refused"]
    detail = [(f.code, f.summary) for f in report.findings]
    assert refused, detail
    assert {f.target.address for f in refused} <= REFUSED, detail
    assert all("loopback" in f.summary for f in refused), detail
    assert canary.connections == 0


SOURCES = [
    (source, form)
    for source in ("mailconf", "adurl", "adaddr", "location")
    for form in URL_HOST_FORMS
    if any(s.domain == url_domain(source, form) for s in HOSTILE_URL_SCENARIOS)
]


@pytest.mark.parametrize(("source", "form"), SOURCES, ids=[f"{s}-{f}" for s, f in SOURCES])
async def test_a_url_from_the_domain_cannot_reach_a_refused_address(
    source: str, form: str, config: EngineConfig, canary: Canary
) -> None:
    assert_refused(await autoconfig(url_domain(source, form), config), canary)


@pytest.mark.parametrize("form", list(URL_HOST_FORMS))
async def test_a_profile_link_redirecting_to_a_refused_address(
    form: str, config: EngineConfig, canary: Canary
) -> None:
    index = list(URL_HOST_FORMS).index(form)
    url = f"http://mc-{index}.{URL_MOBILECONFIG_DOMAIN}/p.mobileconfig"
    report = await autoconfig("ac-missing.test", config, mobileconfig_url=url)
    assert_refused(report, canary)


@pytest.mark.parametrize("form", list(URL_HOST_FORMS))
async def test_an_ispdb_url_on_a_refused_address(
    form: str, config: EngineConfig, canary: Canary
) -> None:
    config = replace(config, ispdb_url=f"https://{URL_HOST_FORMS[form]}/v1.1/")
    assert_refused(await autoconfig("ac-missing.test", config), canary)
