"""A full check (every stage) against the lab, with 50 ms of added latency.

    .venv/bin/python -m bench.full_check [--rtt 0.05] [--runs 5]

The lab must be up (`python -m tests.lab up`, which scripts/demo also does).
A second NSD on 127.1.0.154 serves a copy of healthy.test whose hosts resolve
to delay proxies on 127.1.40.x (each forwarding to the real Postfix/Dovecot
listener), plus halfdown.test: the same services, but its preferred MX is the
lab's filtered address (packets dropped). DNS goes through a delay proxy too,
and so does the MTA-STS policy host. The zones are signed like the lab's
(with their own test. parent and trust anchor) and carry the lab's TLSA
records, so DNSSEC validation and DANE matching are part of the check.

It prints each check's duration against the critical path: the longest chain
of round trips that must happen one after another (see CRITICAL_PATH; issue
18 asks for at most 1.3x), and, for halfdown.test, the cost of the filtered
host against one connect timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
from pathlib import Path
from typing import Any

from bench.delayproxy import DelayProxy
from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.model import CheckRequest, Report, Severity
from checks.core.targets import TargetPolicy, parse_networks
from checks.engine.runner import run
from tests.lab.control import tlsa_data
from tests.lab.mail import running_lab
from tests.lab.nsd import NSDLab, Zone
from tests.lab.pki import LabPKI
from tests.lab.signing import SignedLab, sign_lab
from tests.lab.zones import BY_DOMAIN, REVERSE_ZONE

BENCH_DNS = ("127.1.0.154", 53)
DNS_PROXY = ("127.1.0.155", 53)
PROXIED = {
    "127.1.1.1": "127.1.40.1",
    "127.1.1.2": "127.1.40.2",
    "127.1.1.10": "127.1.40.10",
    "127.1.1.11": "127.1.40.11",
    "127.1.7.1": "127.1.40.7",  # mta-sts.healthy.test
}
PORTS = {
    "127.1.1.1": (25,),
    "127.1.1.2": (25,),
    "127.1.1.10": (587, 465),
    "127.1.1.11": (143, 993, 110, 995),
    "127.1.7.1": (443, 80),
}
FILTERED = "127.1.20.2"  # dropped by the lab's iptables chain
CONNECT_TIMEOUT = 2.0

# Round trips on the longest chain that must happen one after another, port 25
# of the MX: the MX lookup, its host's address, connect, greeting, EHLO,
# STARTTLS, the TLS 1.3 handshake, EHLO again. Every other lookup starts at
# once (SRV, TXT, _dmarc, _mta-sts, DKIM and the web names are asked at the
# start), and each legacy-TLS probe runs beside its port's main conversation.
CRITICAL_PATH = 8
TARGET_RATIO = 1.3


def bench_zones(pki: LabPKI) -> SignedLab:
    healthy = BY_DOMAIN["healthy.test"]
    records = list(healthy.records or ())
    records += [f"{o} IN TLSA {tlsa_data(pki, cert, p)}" for o, cert, p in healthy.tlsa]
    for real, proxy in PROXIED.items():
        records = [r.replace(f" {real}", f" {proxy}") if r.endswith(real) else r for r in records]
    halfdown = [
        "@ IN MX 10 dead",
        "@ IN MX 20 mx1.healthy.test.",
        f"dead IN A {FILTERED}",
        *(
            f"{s} IN SRV 0 1 {port} {host}.healthy.test."
            for s, port, host in (
                ("_submission._tcp", 587, "smtp"),
                ("_submissions._tcp", 465, "smtp"),
                ("_imap._tcp", 143, "imap"),
                ("_imaps._tcp", 993, "imap"),
                ("_pop3._tcp", 110, "imap"),
                ("_pop3s._tcp", 995, "imap"),
            )
        ),
    ]
    reverse = [
        f"{proxy.split('.')[3]}.40 IN PTR {name}."
        for real, name in healthy.ptr.items()
        for r, proxy in PROXIED.items()
        if r == real
    ]
    reverse.append("2.20 IN PTR dead.halfdown.test.")
    parent = ("ns IN A " + BENCH_DNS[0], "healthy IN NS ns.test.", "halfdown IN NS ns.test.")
    zones = [
        Zone("test", parent),
        Zone("healthy.test", tuple(records)),
        Zone("halfdown.test", tuple(halfdown)),
        Zone(REVERSE_ZONE, tuple(reverse)),
    ]
    return sign_lab(zones, unsigned={REVERSE_ZONE})


def serve_proxies(rtt: float, ready: Any, stop: Any) -> None:
    """The delay proxies, in a process of their own: in the check's process
    their CPU would queue behind the check's and add latency of its own."""

    async def serve() -> None:
        proxies = [DelayProxy(DNS_PROXY, BENCH_DNS, rtt)]
        proxies += [
            DelayProxy((PROXIED[real], port), (real, port), rtt)
            for real, ports in PORTS.items()
            for port in ports
        ]
        for i, proxy in enumerate(proxies):
            await proxy.start(udp=i == 0, tcp=i > 0)
        ready.set()
        await asyncio.to_thread(stop.wait)
        for proxy in proxies:
            await proxy.stop()

    asyncio.run(serve())


async def measure(
    domain: str, rtt: float, runs: int, ca_file: str, anchors: tuple[str, ...]
) -> list[Report]:
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    proxies = multiprocessing.Process(target=serve_proxies, args=(rtt, ready, stop))
    proxies.start()
    if not ready.wait(10):
        proxies.terminate()
        raise SystemExit("the delay proxies did not start")
    config = EngineConfig(
        nameservers=(Nameserver(*DNS_PROXY),),
        policy=TargetPolicy(parse_networks(["127.1.0.0/16"])),
        ca_file=ca_file,
        timeouts=Timeouts(dns=5, connect=CONNECT_TIMEOUT, banner=10, reply=10, check=60),
        dnsbl_zones=(),  # no blocklist in the bench's DNS copy
        trust_anchors=anchors,
    )
    reports = []
    try:
        for _ in range(runs):
            reports.append(await run(CheckRequest(domain, domain), config))
    finally:
        stop.set()
        proxies.join(10)
    return reports


def median_ms(reports: list[Report]) -> float:
    return statistics.median(r.duration for r in reports) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt", type=float, default=0.05, help="added round trip, seconds")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    lab = running_lab()
    if lab is None:
        raise SystemExit("start the lab first: .venv/bin/python -m tests.lab up")
    dns = NSDLab(Path(".lab/bench-dns"), address=BENCH_DNS[0])
    signed = bench_zones(lab.pki)
    dns.start(signed.zones)
    try:
        ca, anchors = str(lab.ca_file), signed.anchors
        results = {}
        for domain in ("healthy.test", "halfdown.test"):
            base = asyncio.run(measure(domain, 0.0, args.runs, ca, anchors))
            slow = asyncio.run(measure(domain, args.rtt, args.runs, ca, anchors))
            results[domain] = (base, slow)
    finally:
        dns.stop()

    rtt_ms = args.rtt * 1000
    base, slow = results["healthy.test"]
    bad = [f.code for f in slow[-1].findings if f.severity >= Severity.WARNING]
    bound = CRITICAL_PATH * rtt_ms
    print(
        f"full check of healthy.test, {args.runs} runs each, "
        f"{len(slow[-1].timings)} probes, problems: {bad or 'none'}"
    )
    print(f"  no added latency:         median {median_ms(base):7.1f} ms")
    print(f"  +{rtt_ms:.0f} ms per round trip:   median {median_ms(slow):7.1f} ms")
    print(
        f"  critical path:            {bound:7.1f} ms ({CRITICAL_PATH:g} round trips)  "
        f"ratio {median_ms(slow) / bound:.2f}x (target {TARGET_RATIO:g}x, "
        f"{TARGET_RATIO * bound:.0f} ms)"
    )
    hb, hs = results["halfdown.test"]
    extra = median_ms(hs) - median_ms(slow)
    print(
        f"full check of halfdown.test (preferred MX filtered, connect timeout "
        f"{CONNECT_TIMEOUT:g} s):"
    )
    print(f"  no added latency:         median {median_ms(hb):7.1f} ms")
    print(
        f"  +{rtt_ms:.0f} ms per round trip:   median {median_ms(hs):7.1f} ms  "
        f"({extra:+.0f} ms over healthy.test; one connect timeout is "
        f"{CONNECT_TIMEOUT * 1000:.0f} ms)"
    )
    codes = sorted({f.code for f in hs[-1].findings if f.severity >= Severity.WARNING})
    print(f"  its problems: {codes}")


if __name__ == "__main__":
    main()
