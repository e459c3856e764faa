"""python -m tests.lab up|down|status: run the lab outside pytest.

python -m tests.lab stages DOMAIN prints the `--stage` options that check a
lab scenario's domain for its own faults only (nothing for healthy.test or a
domain that is no scenario), and what the scenario is on standard error:
scripts/demo uses it.

State lives in $MAILCHECK_LAB_DIR, default .lab/ in the repository: dns/ for
NSD (dns/trust-anchors is the DNSSEC trust anchor to give --trust-anchor),
dns-stale/ and dns-parent/ for the second and third NSD (a stale secondary,
and a server of the parent zone test. only), mail/ for Postfix, Dovecot,
OpenDKIM and the lab PKI (mail/pki/ca.pem is the CA to trust, --ca-file),
web/ for nginx, redis/ for the bot's Redis.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .control import Lab, LabErrors, running_root

REPO_ROOT = Path(__file__).resolve().parents[2]


def lab_root() -> Path:
    return Path(os.environ.get("MAILCHECK_LAB_DIR") or REPO_ROOT / ".lab").resolve()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "stages":
        return _stages(argv[1])
    if len(argv) != 1 or argv[0] not in ("up", "down", "status"):
        print("usage: python -m tests.lab up|down|status|stages DOMAIN", file=sys.stderr)
        return 2
    if argv[0] == "up":
        for line in Lab(lab_root()).up():
            print(line)
        return 0
    # down and status act on the lab that runs, wherever it was started from.
    lab = Lab(running_root() or lab_root())
    if argv[0] == "down":
        for line in lab.down():
            print(line)
        return 0
    state = lab.status()
    for part, running in state.items():
        print(f"lab {part}: {'running' if running else 'stopped'} (state in {lab.root})")
    return 0 if all(state.values()) else 1


def _stages(domain: str) -> int:
    from .zones import BY_DOMAIN, scenario_stages

    stages = scenario_stages(domain)
    if stages is not None:
        scenario = BY_DOMAIN[domain]
        expected = ", ".join(sorted(scenario.expect)) or "nothing"
        print(
            f"lab scenario {domain}: {scenario.about}; expected: {expected}.\n"
            f"The lab builds only what the {', '.join(stages)} stage(s) look at for it, so "
            f"only those run; give --stage to choose others.",
            file=sys.stderr,
        )
        print(" ".join(f"--stage {s}" for s in stages))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except LabErrors as exc:
        print(f"lab: {exc}", file=sys.stderr)
        sys.exit(1)
