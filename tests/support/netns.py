"""Run a command in a network namespace of its own, with extra addresses on
its loopback: how a test gets many IPv6 sources (loopback has only ::1)
without touching the machine's network.

    result = run_in_netns([sys.executable, "-c", code], ["2001:db8:5::1", ...])
    # None: this machine cannot make network namespaces (the test skips)

The namespace has nothing but `lo`: no route out, no lab, no Redis. It lives
as long as the command.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence

# root makes namespaces directly; an unprivileged user may through a user namespace
_UNSHARE = (("unshare", "--net"), ("unshare", "--user", "--map-root-user", "--net"))


def _unshare() -> tuple[str, ...] | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    for command in _UNSHARE:
        probe = subprocess.run(
            [*command, "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
        )
        if probe.returncode == 0:
            return command
    return None


def run_in_netns(
    argv: Sequence[str], addresses: Sequence[str], timeout: float = 60, cwd: str | None = None
) -> subprocess.CompletedProcess[str] | None:
    """`argv` run in a new network namespace whose lo is up and carries
    `addresses` (each a /128 or /32, no duplicate detection); None when
    namespaces are not available here."""
    unshare = _unshare()
    if unshare is None:
        return None
    setup = ["ip link set lo up"] + [
        f"ip addr add {shlex.quote(a)}/{128 if ':' in a else 32} dev lo"
        + (" nodad" if ":" in a else "")
        for a in addresses
    ]
    script = " && ".join([*setup, 'exec "$@"'])
    return subprocess.run(
        [*unshare, "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
