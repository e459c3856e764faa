"""What the send-test receiver allows a stranger on port 25, as bookkeeping
apart from the SMTP server (bot/receiver.py) that applies it.

- Connections are counted per source *network*, its /24 (IPv4) or /64 (IPv6)
  by default: one host of an IPv6 network may use any of 2^64 addresses, so
  limits per exact address would hold nobody. An IPv4-mapped IPv6 peer (a
  dual-stack listener's view of an IPv4 sender) counts as its IPv4 address.
- Connections open at once from everyone are capped too: per-network limits
  alone let a sender with many networks hold any number open, and each open
  session may hold a message of up to the size limit.
- `read_data` reads a message's DATA keeping at most the size limit, however
  the sender splits or fails to split its lines.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from dataclasses import dataclass

log = logging.getLogger("mailcheck.receiver")

HOUR = 3600
# Networks whose hourly count is kept. A sender rotating through its networks
# could otherwise grow the table without end; past this the least recently
# seen network's count is forgotten (said in the log), and the cap on open
# connections still holds.
MAX_NETWORKS = 10_000
# A refused message (too big, a line too long) is read on, and dropped, up to
# the end of its data so the sender gets its 552 as RFC 5321 4.2.5 implies;
# past this many times the size limit the receiver stops reading and hangs up.
DRAIN_FACTOR = 2


def source_network(address: str, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    """The network a source address is counted in, e.g. "192.0.2.0/24"; a peer
    name that is no IP address counts as itself."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%lo: the zone is no part
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    return str(ipaddress.ip_network((ip, prefix), strict=False))


class SourceLimits:
    """Connections open at once and opened per hour, per source network; and
    connections open at once from all sources."""

    def __init__(
        self,
        concurrent: int,
        per_hour: int,
        total: int = 20,
        v4_prefix: int = 24,
        v6_prefix: int = 64,
    ) -> None:
        self.concurrent = concurrent
        self.per_hour = per_hour
        self.total = total
        self.v4_prefix, self.v6_prefix = v4_prefix, v6_prefix
        self.open: collections.Counter[str] = collections.Counter()
        self.open_total = 0
        # network -> times of its connections this hour; in order of last use
        self.recent: dict[str, collections.deque[float]] = {}
        self._swept: float | None = None
        self._forgetting_said = False

    def network(self, source: str) -> str:
        return source_network(source, self.v4_prefix, self.v6_prefix)

    def admit(self, source: str, now: float | None = None) -> str | None:
        """Count a new connection from `source`; the reason to refuse it, or None."""
        now = time.monotonic() if now is None else now
        self._forget(now)
        if self.open_total >= self.total:
            return f"too busy: {self.open_total} connections open (limit {self.total}), try later"
        network = self.network(source)
        if self.open[network] >= self.concurrent:
            return f"too many connections from {network} at once (limit {self.concurrent})"
        if self.per_hour:
            seen = self.recent.pop(network, None) or collections.deque()
            self.recent[network] = seen  # last in the order: just used
            while seen and seen[0] <= now - HOUR:
                seen.popleft()
            if len(seen) >= self.per_hour:
                return f"too many connections from {network} this hour (limit {self.per_hour})"
            seen.append(now)
            self._bound()
        self.open[network] += 1
        self.open_total += 1
        return None

    def release(self, source: str) -> None:
        network = self.network(source)
        self.open[network] -= 1
        self.open_total -= 1
        if self.open[network] <= 0:
            del self.open[network]

    def _bound(self) -> None:
        while len(self.recent) > MAX_NETWORKS:
            oldest = next(iter(self.recent))
            del self.recent[oldest]
            if not self._forgetting_said:  # once an hour: a flood would flood the log too
                self._forgetting_said = True
                log.warning(
                    "more than %d sending networks this hour: forgetting the hourly "
                    "count of the least recently seen (%s first)",
                    MAX_NETWORKS,
                    oldest,
                )

    def _forget(self, now: float) -> None:
        """Once an hour, drop the networks not seen for an hour: on port 25 every
        scanner on the internet is a source, and they must not pile up."""
        if self._swept is not None and now - self._swept < HOUR:
            return
        self._swept = now
        self._forgetting_said = False
        for network in [n for n, seen in self.recent.items() if not seen or seen[-1] <= now - HOUR]:
            del self.recent[network]


@dataclass(frozen=True)
class Data:
    """A message's DATA as read: its content (dot-unstuffed), or why it is
    refused; `closed` when reading stopped before the end of the data (the
    connection must end: what follows is no command)."""

    content: bytes = b""
    refused: str = ""
    closed: bool = False


async def read_data(reader: asyncio.StreamReader, max_size: int, line_limit: int) -> Data:
    """Read DATA up to its lone dot, holding at most `max_size` bytes of it.

    `line_limit` is the longest line taken, CRLF (and a transparency dot)
    included; `reader`'s own limit must not exceed it, so that no line is
    buffered whole beyond it. A longer line, or more than `max_size` bytes,
    refuses the message: the rest is read and dropped as it comes, up to
    DRAIN_FACTOR times `max_size`, after which reading stops (`closed`).
    The message is kept in one buffer, not as an object per line: a message
    of bare CRLFs would otherwise cost some thirty times its size.
    """
    body = bytearray()
    size = 0  # bytes read, line ends and dots included (as aiosmtpd counts)
    in_long_line = False  # reading the rest of an over-long line
    refused = ""
    too_long = f"a line is longer than {line_limit - 3} octets (RFC 5321 4.5.3.1.6)"
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
            ended = True
        except asyncio.LimitOverrunError as exc:
            # The line goes on past the limit: take what is buffered and drop it.
            line = await reader.read(exc.consumed)
            ended = False
        except asyncio.IncompleteReadError:
            return Data(refused="the connection ended in the middle of the data", closed=True)
        if ended and not in_long_line and line == b".\r\n":
            break
        size += len(line)
        if in_long_line or not ended or len(line) > line_limit:
            refused = refused or too_long
            in_long_line = not ended
        elif not refused:
            body += line[1:] if line.startswith(b".") else line  # RFC 5321 4.5.2
        if not refused and size > max_size:
            refused = f"the message is larger than {max_size} bytes"
        if refused and body:
            body = bytearray()
        if size > DRAIN_FACTOR * max_size:
            return Data(refused=refused, closed=True)
    return Data(refused=refused) if refused else Data(content=bytes(body))
