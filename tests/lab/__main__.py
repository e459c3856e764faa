"""python -m tests.lab up|down|status: run the lab DNS server outside pytest."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .nsd import NSDLab, NSDLabError

REPO_ROOT = Path(__file__).resolve().parents[2]


def lab() -> NSDLab:
    state_dir = Path(os.environ.get("MAILCHECK_LAB_DIR") or REPO_ROOT / ".lab" / "dns")
    return NSDLab(state_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("up", "down", "status"):
        print("usage: python -m tests.lab up|down|status", file=sys.stderr)
        return 2
    dns_lab = lab()
    where = f"{dns_lab.address}:{dns_lab.port}"
    if argv[0] == "up":
        # Imported late: the zone list is the only part that needs the scenarios.
        from .zones import all_zones

        zones = all_zones()
        dns_lab.start(zones)
        print(f"lab dns: nsd on {where} serving {len(zones)} zones (state in {dns_lab.state_dir})")
    elif argv[0] == "down":
        was_running = dns_lab.is_running()
        dns_lab.stop()
        print(f"lab dns: {'stopped' if was_running else 'was not running'} ({where})")
    else:
        running = dns_lab.is_running()
        print(f"lab dns: {'running' if running else 'stopped'} ({where})")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except NSDLabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        sys.exit(1)
