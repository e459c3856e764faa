"""Run a real authoritative NSD on a loopback address for the test lab."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from . import proc

SOA_MNAME = "ns.test."
SOA_RNAME = "hostmaster.test."
SOA_SERIAL = 2026112501
DEFAULT_TTL = 300

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class NSDLabError(RuntimeError):
    """NSD could not be found, configured, started or stopped."""


@dataclass(frozen=True)
class Zone:
    """An authoritative zone; records are zone-file lines relative to origin."""

    origin: str
    records: tuple[str, ...]
    serial: int = SOA_SERIAL  # of the SOA render() adds; a stale copy has an older one

    def __post_init__(self) -> None:
        # Accept "example.test." too; everything below assumes no trailing dot.
        object.__setattr__(self, "origin", self.origin.rstrip(".").lower())
        object.__setattr__(self, "records", tuple(self.records))

    def render(self) -> str:
        """The zone file text, with SOA/NS added unless the records have them."""
        lines = [f"$ORIGIN {self.origin}.", f"$TTL {DEFAULT_TTL}"]
        if not self._has_apex("SOA"):
            lines.append(
                f"@ IN SOA {SOA_MNAME} {SOA_RNAME} {self.serial} 3600 900 604800 {DEFAULT_TTL}"
            )
        if not self._has_apex("NS"):
            lines.append(f"@ IN NS {SOA_MNAME}")
        lines.extend(self.records)
        return "\n".join(lines) + "\n"

    def _has_apex(self, rrtype: str) -> bool:
        found = {_owner_and_type(line) for line in self.records}
        return bool(found & {("@", rrtype), (f"{self.origin}.", rrtype)})


def _owner_and_type(line: str) -> tuple[str, str] | None:
    tokens = line.split()
    # A leading blank means "same owner as before"; not worth tracking here.
    if not tokens or line[0].isspace() or tokens[0].startswith(("$", ";")):
        return None
    for token in tokens[1:]:
        if token.isdigit() or token.upper() in ("IN", "CH", "HS"):
            continue
        return tokens[0].lower(), token.upper()
    return None


def find_nsd_tool(name: str = "nsd") -> str:
    """Path of an NSD binary; /usr/sbin is often not on a non-root PATH."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise NSDLabError(
            f"{name} not found on PATH or in /usr/sbin; run scripts/test, which installs nsd"
        )
    return found


class NSDLab:
    """One NSD instance whose config, zones, pidfile and log live in state_dir."""

    def __init__(self, state_dir: Path, address: str = "127.1.0.53", port: int = 53) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.address = address
        self.port = port
        self.conf_path = self.state_dir / "nsd.conf"
        self.pid_path = self.state_dir / "nsd.pid"
        self.log_path = self.state_dir / "nsd.log"
        self.zones_dir = self.state_dir / "zones"

    def start(self, zones: Iterable[Zone]) -> None:
        zones = list(zones)
        if not zones:
            raise ValueError("NSDLab.start() needs at least one zone")
        nsd = find_nsd_tool("nsd")
        self.stop()  # a leftover instance from an earlier run would hold the port

        self._write_config(zones)
        for zone in zones:
            self._run_checked(
                [find_nsd_tool("nsd-checkzone"), zone.origin, str(self._zone_path(zone))],
                f"zone {zone.origin} is invalid",
            )
        self._run_checked(
            [find_nsd_tool("nsd-checkconf"), str(self.conf_path)], "nsd.conf is invalid"
        )

        with self.log_path.open("a") as log:
            # Pre-daemon errors (bad bind, etc.) go to stderr, so keep them with the log.
            result = subprocess.run(
                [nsd, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise NSDLabError(
                f"nsd exited with {result.returncode}\n{proc.log_tail(self.log_path)}"
            )
        self._wait_until_serving(zones[0])

    def stop(self) -> None:
        proc.stop(self._pid(), "nsd", STOP_TIMEOUT, error=NSDLabError)
        # Also clears a stale pidfile, so start() can tell the new daemon's apart.
        self.pid_path.unlink(missing_ok=True)

    def is_running(self) -> bool:
        return self._pid() is not None

    def _pid(self) -> int | None:
        """PID from the pidfile, if that process is still a live nsd."""
        # nsd retitles its processes ("nsd: xfrd", "nsd: main"); the pidfile
        # holds xfrd's, which leads the group.
        return proc.read_pid(self.pid_path, "nsd")

    def _zone_path(self, zone: Zone) -> Path:
        return self.zones_dir / f"{zone.origin}.zone"

    def _write_config(self, zones: list[Zone]) -> None:
        self.zones_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.zones_dir.glob("*.zone"):
            stale.unlink()
        for zone in zones:
            self._zone_path(zone).write_text(zone.render())

        state = self.state_dir
        # Every path is pinned into state_dir: the Debian defaults point at /etc,
        # /var/lib and /run, which would clash with (or need) a system NSD.
        server = {
            "ip-address": f"{self.address}@{self.port}",
            "server-count": "1",
            "username": '""',
            "chroot": '""',
            "database": '""',
            "zonesdir": f'"{self.zones_dir}"',
            "zonelistfile": f'"{state / "zone.list"}"',
            "xfrdfile": f'"{state / "xfrd.state"}"',
            "xfrdir": f'"{state}"',
            "cookie-secret-file": f'"{state / "cookiesecrets.txt"}"',
            "pidfile": f'"{self.pid_path}"',
            "logfile": f'"{self.log_path}"',
            # Tests fire many identical queries from one address; RRL would
            # start dropping or truncating them.
            "rrl-ratelimit": "0",
            "rrl-whitelist-ratelimit": "0",
        }
        lines = ["server:"]
        lines += [f"    {key}: {value}" for key, value in server.items()]
        lines += ["", "remote-control:", "    control-enable: no", ""]
        for zone in zones:
            zonefile = self._zone_path(zone)
            lines += ["zone:", f"    name: {zone.origin}.", f'    zonefile: "{zonefile}"', ""]
        self.conf_path.write_text("\n".join(lines))

    def _run_checked(self, argv: list[str], what: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stderr + result.stdout).strip()
            raise NSDLabError(f"{what}:\n{output}")

    def _wait_until_serving(self, zone: Zone) -> None:
        query = dns.message.make_query(f"{zone.origin}.", "SOA")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                response = dns.query.udp(query, self.address, port=self.port, timeout=0.2)
                if response.rcode() == dns.rcode.NOERROR:
                    return
            except (dns.exception.Timeout, OSError):
                pass
            # The daemon may already have died (e.g. port in use); no point waiting.
            if self.pid_path.exists() and not self.is_running():
                break
            time.sleep(0.05)
        raise NSDLabError(
            f"nsd did not answer SOA {zone.origin} on {self.address}@{self.port} "
            f"within {START_TIMEOUT:.0f}s\n{proc.log_tail(self.log_path)}"
        )
