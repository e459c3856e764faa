"""Full checks per minute, and peak memory, of one `mailcheck check --file` batch.

    .venv/bin/python -m bench.batch [--checks 600] [--parallel 100] [--json]

The lab must be up (`python -m tests.lab up`). One `mailcheck` process
checks `checks` lab domains (healthy.test and scenario domains whose servers
answer, in turn: no connect timeout in the mix), every stage, `parallel` at
once, reading the list from stdin, as an operator would run it. Issue 18
asks for 1,000 checks a minute on a 2-core machine, within 300 MB at
--parallel 100.

Prints the checks a minute (wall time from spawn to exit, start-up
included), the process' CPU time per check, its peak RSS, and the verdicts,
which show that the checks ran whole. The batch shares the machine with the
lab's servers, as it would share a host with nothing else in production:
CPU per check is the figure that carries over. Prints figures, asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from itertools import cycle, islice

from tests.lab.mail import running_lab
from tests.lab.zones import ISPDB_URL, NS_ADDRESS

DOMAINS = (
    "healthy.test",
    "smtp-refused.test",
    "smtp-name.test",
    "tls-expired.test",
    "imap-plain.test",
    "dane-mismatch.test",
    "mtasts-enforce.test",
    "sub-missing.test",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=600)
    parser.add_argument("--parallel", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="JSON Lines instead of lines")
    args = parser.parse_args()
    lab = running_lab()
    if lab is None:
        raise SystemExit("start the lab first: .venv/bin/python -m tests.lab up")
    anchors = lab.state_dir.parent / "dns" / "trust-anchors"
    argv = [
        sys.executable, "-m", "bot.cli", "check", "--file", "-",
        "--parallel", str(args.parallel), "--resolver", NS_ADDRESS,
        "--allow-target", "127.1.0.0/16", "--ca-file", str(lab.ca_file),
        "--trust-anchor", str(anchors), *(["--json"] if args.json else []),
    ]  # fmt: skip
    env = {**os.environ, "MAILCHECK_DNSBL_ZONES": "bl.test", "MAILCHECK_ISPDB_URL": ISPDB_URL}
    domains = "\n".join(islice(cycle(DOMAINS), args.checks)) + "\n"

    started = time.monotonic()
    done = subprocess.run(argv, input=domains, capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.splitlines()[: args.checks]
    if done.returncode not in (0, 1) or len(lines) != args.checks:
        raise SystemExit(f"the batch failed ({done.returncode}):\n{done.stderr[-2000:]}")

    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"{args.checks} full checks of {len(DOMAINS)} lab domains, --parallel {args.parallel}"
        f"{', --json' if args.json else ''}, on {os.cpu_count()} cores"
    )
    print(f"  {args.checks / wall * 60:7.0f} checks/minute   ({wall:.1f} s wall)")
    print(f"  {cpu / args.checks * 1000:7.1f} ms CPU per check ({cpu:.1f} s, one process)")
    print(f"  {usage.ru_maxrss / 1024:7.0f} MB peak RSS")
    if args.json:
        verdicts = Counter((d["domain"], d["worst"]) for d in map(json.loads, lines))
    else:
        verdicts = Counter((line.split()[0], line.split()[1]) for line in lines)
    for (domain, verdict), n in sorted(verdicts.items()):
        print(f"  {n:7} x {domain} {verdict}")


if __name__ == "__main__":
    main()
