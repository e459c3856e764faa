"""How long `mailcheck` takes to start, and which imports the time goes to.

    .venv/bin/python -m bench.startup [--runs 9]

Runs the installed `mailcheck` script for `--help`, `codes`, `check --help`
and a DNS-stage check of the lab's healthy.test (the engine's start plus a
few loopback lookups; needs the lab's DNS at 127.1.0.53, skipped without it).
For each: the median wall time of `runs` runs, then one run under
`python -X importtime` summed over its top-level imports (each counted with
everything it pulled in, the interpreter's own start-up included) and the
five biggest of them. `python -c pass` is the floor. Issue 18 asks for 150 ms.

The runs keep their bytecode in a temporary PYTHONPYCACHEPREFIX, compiled by
a first run that is not counted: an installed mailcheck has its .pyc files,
while the tree's __pycache__ goes stale under PYTHONDONTWRITEBYTECODE and
would charge every edited module its compilation.
Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query

MAILCHECK = str(Path(sys.executable).with_name("mailcheck"))
LAB_DNS = "127.1.0.53"
LAB_CHECK = (
    "check", "healthy.test", "--stage", "dns", "--json",
    "--resolver", LAB_DNS, "--allow-target", "127.1.0.0/16",
)  # fmt: skip
# `-X importtime` lines: "import time: self | cumulative | <indent>name".
_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)")


def wall(argv: list[str], runs: int, env: dict[str, str]) -> float:
    """Median seconds from spawning `argv` to its exit, after one uncounted run."""
    times = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def imports(argv: list[str], env: dict[str, str]) -> list[tuple[str, float]]:
    """The top-level imports of one run of `argv` (a script), with their cumulative seconds."""
    run = [sys.executable, "-X", "importtime", *argv]
    err = subprocess.run(run, capture_output=True, text=True, check=False, env=env).stderr
    found = [_LINE.match(line) for line in err.splitlines()]
    return [(m[3], int(m[1]) / 1e6) for m in found if m and m[2] == " "]


def lab_up() -> bool:
    try:
        dns.query.udp(dns.message.make_query("healthy.test", "SOA"), LAB_DNS, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    cases = [
        ("python -c pass", ["-c", "pass"]),
        ("mailcheck --help", [MAILCHECK, "--help"]),
        ("mailcheck codes", [MAILCHECK, "codes"]),
        ("mailcheck check --help", [MAILCHECK, "check", "--help"]),
    ]
    if lab_up():
        cases.append(("mailcheck check (lab, dns)", [MAILCHECK, *LAB_CHECK]))
    else:
        print(f"no lab DNS at {LAB_DNS}: the check is left out")
    cache = tempfile.TemporaryDirectory(prefix="mailcheck-pycache-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache.name
    print(f"median wall time of {args.runs} runs; -X importtime of one run, top-level imports")
    for label, argv in cases:
        seconds = wall([sys.executable, *argv], args.runs, env)
        top = imports(argv, env)
        total = sum(s for _, s in top)
        print(f"\n{label:28} wall {seconds * 1000:6.1f} ms   imports {total * 1000:6.1f} ms")
        for name, s in sorted(top, key=lambda t: -t[1])[:5]:
            print(f"    {s * 1000:6.1f} ms  {name}")


if __name__ == "__main__":
    main()
