"""How long a DNS-stage check takes against the lab, with and without latency.

    .venv/bin/python -m bench.dns_check [--rtt 0.05] [--runs 10]

Starts the lab DNS if it is not running, puts a delay proxy in front of it
and checks healthy.test repeatedly. Prints the duration against the critical
path (the longest chain of resolver lookups that must happen one after
another: MX -> A/AAAA of each MX host -> PTR, and the nameserver comparison's
SOA (of the zone and its parent at once) -> NS -> the nameservers' A/AAAA:
3 round trips either way; the PTR's forward confirmation reuses the MX
host's A answer from the per-check memo, and what the resolver serves is
asked beside the nameservers) and against what the same lookups would cost
one after another. The nameservers are asked directly at their own
addresses, so those questions do not pass the delay proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from pathlib import Path

from bench.delayproxy import DelayProxy
from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.model import CheckRequest, Severity, Stage
from checks.core.targets import TargetPolicy, parse_networks
from checks.engine.runner import run

CRITICAL_PATH_ROUND_TRIPS = 3
PROXY = ("127.1.0.153", 53)
LAB_DNS = ("127.1.0.53", 53)


def ensure_lab() -> object | None:
    import dns.exception
    import dns.message
    import dns.query

    try:
        dns.query.udp(dns.message.make_query("healthy.test", "SOA"), LAB_DNS[0], timeout=0.5)
        return None
    except (dns.exception.Timeout, OSError):
        pass
    from tests.lab.nsd import NSDLab
    from tests.lab.zones import all_zones

    lab = NSDLab(Path(".lab/bench-dns"), address=LAB_DNS[0])
    lab.start(all_zones())
    return lab


async def measure(rtt: float, runs: int) -> tuple[list[float], int]:
    proxy = DelayProxy(PROXY, LAB_DNS, rtt)
    await proxy.start(tcp=False)
    config = EngineConfig(
        nameservers=(Nameserver(*PROXY),),
        policy=TargetPolicy(parse_networks(["127.1.0.0/16"])),
        timeouts=Timeouts(dns=5, check=60),
    )
    durations = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            request = CheckRequest("healthy.test", "healthy.test", stages=frozenset({Stage.DNS}))
            report = await run(request, config)
            durations.append(time.perf_counter() - t0)
            assert not report.at_least(Severity.INFO), "lab is not healthy"
    finally:
        await proxy.stop()
    return durations, proxy.datagrams // runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt", type=float, default=0.05, help="added round trip, seconds")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    lab = ensure_lab()
    try:
        base, queries = asyncio.run(measure(0.0, args.runs))
        slow, _ = asyncio.run(measure(args.rtt, args.runs))
    finally:
        if lab is not None:
            lab.stop()  # type: ignore[attr-defined]
    base_ms = statistics.median(base) * 1000
    slow_ms = statistics.median(slow) * 1000
    bound_ms = base_ms + CRITICAL_PATH_ROUND_TRIPS * args.rtt * 1000
    serial_ms = base_ms + queries * args.rtt * 1000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"healthy.test DNS stage, {args.runs} runs each, {queries} queries per check")
    print(f"  no added latency:        median {base_ms:7.1f} ms  (max {max(base) * 1000:.1f})")
    print(
        f"  +{args.rtt * 1000:.0f} ms per round trip:  median {slow_ms:7.1f} ms  "
        f"(max {max(slow) * 1000:.1f})"
    )
    print(
        f"  critical path bound:     {bound_ms:7.1f} ms  "
        f"({CRITICAL_PATH_ROUND_TRIPS} round trips)  ratio {slow_ms / bound_ms:.2f}x"
    )
    print(f"  same queries in series:  {serial_ms:7.1f} ms  ({slow_ms / serial_ms:.0%} of it)")
    print(f"  peak RSS:                {rss:7.1f} MiB")


if __name__ == "__main__":
    main()
