"""What a host that drops every packet costs a full check.

    .venv/bin/python -m bench.silent_host [--connect-timeout 10] [--runs 3]

The lab must be up (`python -m tests.lab up`). blackhole.test has its MX, its
web and autoconfig names and every name Thunderbird guesses on the lab's
filtered address (iptables DROP, 127.1.20.2). A full check (every stage)
should cost one connect timeout, plus the rest of the check: the target is
MAILCHECK_CONNECT_TIMEOUT + 2 s. Prints each run's wall time, the target,
and how many connects waited out the timeout versus were answered from the
check's memory of the silent host.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from dataclasses import replace

from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.model import CheckRequest
from checks.core.targets import TargetPolicy, parse_networks
from checks.engine.runner import run
from tests.lab.mail import running_lab

DOMAIN, SILENT = "blackhole.test", "127.1.20.2"
DIAL = re.compile(rf"\[{re.escape(SILENT)}\]:\d+\S*: (no answer to connect|not tried)")


async def one(config: EngineConfig) -> tuple[float, int, int]:
    started = time.monotonic()
    report = await run(CheckRequest(DOMAIN, DOMAIN, DOMAIN), config)
    wall = time.monotonic() - started
    lines = [m[1] for ls in report.transcripts.values() for line in ls if (m := DIAL.search(line))]
    return wall, lines.count("no answer to connect"), lines.count("not tried")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connect-timeout", type=float, default=Timeouts().connect)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = running_lab()
    if lab is None:
        raise SystemExit("start the lab first: .venv/bin/python -m tests.lab up")
    anchors = lab.state_dir.parent / "dns" / "trust-anchors"
    config = EngineConfig(
        nameservers=(Nameserver("127.1.0.53", 53),),
        policy=TargetPolicy(parse_networks(["127.1.0.0/16"])),
        ca_file=str(lab.ca_file),
        timeouts=replace(Timeouts(), connect=args.connect_timeout),
        trust_anchors=tuple(anchors.read_text().split("\n")[:-1]),
    )
    print(f"Full check of {DOMAIN}: every name on {SILENT}, which drops every packet")
    walls = []
    for i in range(args.runs):
        wall, waited, remembered = asyncio.run(one(config))
        walls.append(wall)
        print(
            f"  run {i + 1}: {wall:5.2f} s  ({waited} connects waited out the timeout, "
            f"{remembered} answered from the check's memory)"
        )
    target = args.connect_timeout + 2
    median = statistics.median(walls)
    print(
        f"  median {median:.2f} s against connect timeout {args.connect_timeout:g} s + 2 = "
        f"{target:g} s: {'within' if median <= target else 'OVER'} target"
    )


if __name__ == "__main__":
    main()
