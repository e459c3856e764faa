"""Process plumbing shared by the lab's daemon managers (nsd.py, redis.py, mail.py).

Every lab daemon detaches: it is reparented to PID 1, which here may never
reap it, so a zombie counts as gone throughout. Each also leads its own
process group (it setsids when it detaches), and its children (NSD's servers,
Postfix's smtpd, Dovecot's logins) hold listening sockets too, so stop() and
wait_for_exit() wait for the whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

POLL_INTERVAL = 0.05


def is_live(pid: int, comm: str | None = None) -> bool:
    """True if pid runs and is not a zombie and, given comm, is named comm.

    The name is /proc/PID/comm; a process that retitles itself ("nsd: xfrd")
    counts by the part before the colon.
    """
    state = _stat(pid)
    if state is None or state[0] in ("Z", "X"):
        return False
    if comm is None:
        return True
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return name.split(":")[0] == comm


def read_pid(path: Path, comm: str | None = None) -> int | None:
    """The PID in a pidfile, if that process is still live (and named comm)."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if is_live(pid, comm) else None


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group pgid."""
    members = []
    for pid in _all_pids():
        state = _stat(pid)
        if state is not None and state[1] == pgid and state[0] not in ("Z", "X"):
            members.append(pid)
    return members


def pids_with_cwd(directory: Path, comm: str | None = None) -> list[int]:
    """Live processes (named comm, if given) whose working directory is directory."""
    pids = []
    for pid in _all_pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == str(directory) and is_live(pid, comm):
            pids.append(pid)
    return pids


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to timeout seconds until pid is gone, and with it every live
    member of the process group it leads (if it leads one). True if they are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(POLL_INTERVAL)
    return _gone(pid)


def stop(pid: int | None, what: str, timeout: float, error: type[Exception] = RuntimeError) -> None:
    """Stop a daemon: SIGTERM, wait_for_exit(), then SIGKILL for the process
    group it leads (or pid alone, if it leads none) and wait again.

    Raises error("<what> (pid <pid>) did not exit") if even that fails. A pid
    of None (no daemon, as read_pid() says) is nothing to do.
    """
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_for_exit(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        if group_members(pid):
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    if not wait_for_exit(pid, timeout):
        raise error(f"{what} (pid {pid}) did not exit")


def accepts(address: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections at address:port."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, headed with its path, for an error message."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"--- tail of {path} ---\n" + "\n".join(tail)


def _gone(pid: int) -> bool:
    # A group outlives its leader while members remain, and its id (the
    # leader's pid) is not reused meanwhile; a pid that never led a group
    # has no members under its number.
    return not is_live(pid) and not group_members(pid)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a process from /proc/PID/stat, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2, in parentheses) may hold spaces and parentheses itself.
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
