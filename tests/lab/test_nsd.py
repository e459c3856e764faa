"""NSDLab against a real nsd on a loopback address of its own."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from .nsd import NSDLab, NSDLabError, Zone

ADDRESS = "127.1.0.153"
PORT = 5353

ZONES = [
    Zone("lab.test", ("@ IN MX 10 mx1", "mx1 IN A 127.1.1.4")),
    Zone("1.127.in-addr.arpa", ("4.1 IN PTR mx1.lab.test.",)),
]


def query(name: str, rdtype: str, timeout: float = 2.0) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), ADDRESS, port=PORT, timeout=timeout)


def answer(response: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def port_is_free() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ADDRESS, PORT))
        except OSError:
            return False
    return True


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NSDLab]:
    nsd_lab = NSDLab(tmp_path / "dns", address=ADDRESS, port=PORT)
    yield nsd_lab
    nsd_lab.stop()


def test_serves_zones_then_stops(lab: NSDLab) -> None:
    lab.start(ZONES)
    assert lab.is_running()
    pid = int(lab.pid_path.read_text())

    mx = query("lab.test", "MX")
    assert mx.rcode() == dns.rcode.NOERROR and mx.flags & dns.flags.AA
    assert answer(mx) == ["10 mx1.lab.test."]

    a = query("mx1.lab.test", "A")
    assert a.flags & dns.flags.AA and answer(a) == ["127.1.1.4"]

    ptr = query("4.1.1.127.in-addr.arpa", "PTR")
    assert ptr.flags & dns.flags.AA and answer(ptr) == ["mx1.lab.test."]

    missing = query("nope.lab.test", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA

    outside = query("example.com", "A")
    assert outside.rcode() == dns.rcode.REFUSED and not outside.flags & dns.flags.AA

    lab.stop()
    assert not lab.is_running()
    assert not _alive(pid)
    assert port_is_free()
    with pytest.raises((dns.exception.Timeout, ConnectionRefusedError)):
        query("lab.test", "SOA", timeout=0.5)


def test_restart_replaces_leftover_instance(lab: NSDLab) -> None:
    lab.start(ZONES[:1])
    first = int(lab.pid_path.read_text())
    # A fresh NSDLab on the same state dir stands for a later `up` after a crash.
    NSDLab(lab.state_dir, address=ADDRESS, port=PORT).start(ZONES)
    assert not _alive(first)
    assert answer(query("4.1.1.127.in-addr.arpa", "PTR")) == ["mx1.lab.test."]


def test_broken_zone_is_rejected(lab: NSDLab) -> None:
    broken = Zone("broken.test", ("mx1 IN A 999.1.1.1",))
    with pytest.raises(NSDLabError, match=r"broken\.test"):
        lab.start([ZONES[0], broken])
    assert not lab.is_running()


def _alive(pid: int) -> bool:
    """True unless pid is gone or a zombie (nothing may reap the daemon)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
