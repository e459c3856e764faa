"""A check costs its round trips: nothing waits that need not.

Two orderings used to add round trips to every check (issue 18, part 2):
- the legacy-TLS probe of a port started only after that port's main
  conversation had ended, because a check opened one connection at a time
  per address:port;
- the SRV, TXT, _dmarc, _mta-sts and DKIM lookups were asked only once the
  MX answer was in, one round trip later than they could have been.
Both are observed here through a delay proxy (bench/delayproxy.py) in front
of the lab's real servers: what it saw, not how long it took.
"""

from __future__ import annotations

from dataclasses import replace

import dns.message
import dns.rdatatype
import pytest

from bench.delayproxy import DelayProxy
from checks.core.config import EngineConfig, Nameserver
from checks.core.model import CheckRequest, Stage
from checks.engine.runner import run
from checks.stages import default_probes
from checks.stages.dns import SRVTarget
from checks.stages.probe import Probe, ProbeContext
from tests.lab.zones import NS_ADDRESS

pytestmark = pytest.mark.lab
IMAP = ("127.1.1.11", 143)  # imap.healthy.test, Dovecot
RELAY = ("127.1.1.11", 10143)  # the same address, another port: the name still matches
DNS_RELAY = ("127.1.0.156", 53)


@pytest.fixture
def config(lab_config: EngineConfig, mail_lab: str) -> EngineConfig:
    return replace(lab_config, ca_file=mail_lab)


def probes(*names: str) -> list[Probe]:
    wanted = {p.name: p for p in default_probes() if p.name in names}
    assert len(wanted) == len(names)
    return list(wanted.values())


async def test_legacy_tls_runs_beside_the_main_conversation(config: EngineConfig) -> None:
    async def srv(ctx: ProbeContext) -> dict[str, tuple[SRVTarget, ...]]:
        # IMAP published on the relay's port; the host name is the real one.
        return {"_imap._tcp": (SRVTarget("_imap._tcp", 0, 1, RELAY[1], "imap.healthy.test"),)}

    relay = DelayProxy(RELAY, IMAP, rtt=0.05)  # slow enough for the conversations to meet
    await relay.start(udp=False)
    stages = frozenset({Stage.CONNECT, Stage.TLS})
    try:
        report = await run(
            CheckRequest("healthy.test", "healthy.test", stages=stages),
            config,
            probes=[
                *probes("dns.mx", "connect.imap", "tls.legacy.imap"),
                Probe("dns.srv", Stage.DNS, srv, needs=("dns.mx",)),
            ],
        )
    finally:
        await relay.stop()
    timing = {t.probe: t for t in report.timings}
    main, legacy = timing["connect.imap"], timing["tls.legacy.imap"]
    assert main.outcome == legacy.outcome == "done"
    # The legacy handshake (refused by Dovecot) had its own connection while
    # the main conversation still held the first: two open at once.
    assert relay.most_open == 2
    assert legacy.started < main.started + main.duration
    legacy_lines = report.transcripts["tls.legacy.imap"]
    assert any(f":{RELAY[1]}" in line for line in legacy_lines), legacy_lines
    assert "imap.ok" in {f.code for f in report.findings}


async def test_independent_lookups_start_at_once(config: EngineConfig) -> None:
    rtt = 0.2
    relay = DelayProxy(DNS_RELAY, (NS_ADDRESS, 53), rtt=rtt)
    await relay.start(tcp=False)
    slow = replace(config, nameservers=(Nameserver(*DNS_RELAY),))
    stages = frozenset({Stage.DNS, Stage.POLICY})
    try:
        report = await run(CheckRequest("healthy.test", "healthy.test", stages=stages), slow)
    finally:
        await relay.stop()
    assert "spf.ok" in {f.code for f in report.findings}
    first: dict[tuple[str, str], float] = {}
    for when, datagram in relay.arrivals:
        question = dns.message.from_wire(datagram).question[0]
        key = (question.name.to_text().rstrip(".").lower(), dns.rdatatype.to_text(question.rdtype))
        first.setdefault(key, when)
    mx = first[("healthy.test", "MX")]
    independent = [
        ("_submission._tcp.healthy.test", "SRV"),
        ("_imaps._tcp.healthy.test", "SRV"),
        ("healthy.test", "TXT"),
        ("_dmarc.healthy.test", "TXT"),
        ("_mta-sts.healthy.test", "TXT"),
        ("_smtp._tls.healthy.test", "TXT"),
        ("default._domainkey.healthy.test", "TXT"),
    ]
    # Asked with the MX lookup, not a round trip after its answer.
    late = {q: round(first[q] - mx, 3) for q in independent if first[q] - mx >= rtt / 2}
    assert not late, late
    # What depends on the MX answer still waits for it.
    assert first[("mx1.healthy.test", "A")] - mx >= rtt * 0.9
