"""What the two floods of issue 16 cost one check, without and with budgets.

    .venv/bin/python -m bench.budgets [--addresses 3000] [--includes 45] [--terms 400]

Everything on loopback, nothing from the lab: a counting DNS server
(tests/support/nanodns.py) serves the hostile zones, a listener on port 25 of
every flood address (127.77.0.0/16; needs root) counts the connections it
accepts and the most open at once in one /24.

1. One MX host with N A records, all answering SMTP.
2. An SPF record of M includes of K `a:` terms each, every term a name under
   victim.test: the diagnosis' questions land on the victim's nameservers.

"unbounded" runs the same engine with every budget out of reach, which is
how it behaved before budgets; "default" with the defaults. Under the
unbounded flood the stand-in (one Python thread) drops datagrams and the
engine runs out of file descriptors, so fewer packets arrive than were sent.
Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from typing import Any

import dns.name

from checks.core.config import Budgets, EngineConfig
from checks.core.model import CheckRequest, Report, Stage
from checks.engine.runner import run
from checks.net.door import Network
from tests.support.floods import (
    SMTPListener,
    flood_addresses,
    flood_config,
    mx_flood_zone,
    served,
    spf_flood_zone,
)
from tests.support.nanodns import NanoDNS

UNBOUNDED = Budgets(**{name: 10**9 for name in Budgets.__dataclass_fields__})


def config(server: NanoDNS, budgets: Budgets) -> EngineConfig:
    return flood_config(server, budgets, check=120)


def exceeded(report: Report) -> str:
    hits = [
        f.data.get("setting", "?") for f in report.findings if f.code == "engine.budget.exceeded"
    ]
    return ", ".join(str(h) for h in hits) or "-"


async def mx_flood(count: int, budgets: Budgets) -> dict[str, Any]:
    addresses = flood_addresses(count)
    with NanoDNS(served(mx_flood_zone(addresses))) as server:
        async with SMTPListener(addresses) as listener:
            net = Network(config(server, budgets))
            started = time.monotonic()
            report = await run(CheckRequest("flood.test", "flood.test"), net.config, network=net)
            took = time.monotonic() - started
            net.close()
        queries = len(server.queries)
    return {
        "connections": listener.connections,
        "most open in one /24": listener.most_open,
        "questions the engine sent": net.budget.queries,
        "DNS packets at the server": queries,
        "findings": len(report.findings),
        "seconds": round(took, 1),
        "budgets hit": exceeded(report),
    }


async def spf_flood(includes: int, terms: int, budgets: Budgets) -> dict[str, Any]:
    victim = dns.name.from_text("victim.test.")
    request = CheckRequest("attacker.test", "attacker.test", stages=frozenset({Stage.POLICY}))
    with NanoDNS(served(spf_flood_zone(includes, terms))) as server:
        net = Network(config(server, budgets))
        started = time.monotonic()
        report = await run(request, net.config, network=net)
        net.close()
        took = time.monotonic() - started
        queries = list(server.queries)
    under = [q.question[0] for q in queries if q.question[0].name.is_subdomain(victim)]
    return {
        "questions the engine sent": net.budget.queries,
        "DNS packets at the server": len(queries),
        "packets under victim.test": len(under),
        "distinct questions there": len({(q.name, q.rdtype) for q in under}),
        "seconds": round(took, 1),
        "budgets hit": exceeded(report),
    }


def show(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(title)
    keys = list(next(iter(rows.values())))
    width = max(len(k) for k in keys)
    print(f"  {'':{width}}  " + "  ".join(f"{name:>28}" for name in rows))
    for key in keys:
        print(f"  {key:{width}}  " + "  ".join(f"{r[key]!s:>28}" for r in rows.values()))


async def main(args: argparse.Namespace) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    show(
        f"1. one MX host with {args.addresses:,} A records (full check)",
        {  # the default first: the unbounded run leaves the machine busy for a while
            "default budgets": await mx_flood(args.addresses, Budgets()),
            "unbounded": await mx_flood(args.addresses, UNBOUNDED),
        },
    )
    show(
        f"2. SPF: {args.includes} includes of {args.terms} a: terms (policy stage)",
        {
            "default budgets": await spf_flood(args.includes, args.terms, Budgets()),
            "unbounded": await spf_flood(args.includes, args.terms, UNBOUNDED),
        },
    )
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
    print(f"peak RSS growth over both: {grown / 1024:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--addresses", type=int, default=3000)
    parser.add_argument("--includes", type=int, default=45)
    parser.add_argument("--terms", type=int, default=400)
    asyncio.run(main(parser.parse_args()))
