"""The target policy: which addresses mailcheck may connect to.

A diagnosis tool that connects wherever DNS points is an SSRF cannon: anyone
who controls a zone can aim it at the operator's internal network. So every
address is classified against the IANA special-purpose registries before any
connection, and only globally reachable unicast addresses pass, unless the
operator explicitly allows a network (`--allow-target 127.1.0.0/16`).

IPv6 addresses that embed an IPv4 address (v4-mapped, IPv4-translated/SIIT,
IPv4-compatible, NAT64, 6to4, Teredo) are judged by the embedded address too,
since that is where traffic ends up. The local-use NAT64 prefix 64:ff9b:1::/48
places the IPv4 address where its operator chose, so it is refused as a whole.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from checks.core.errors import InputError, TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (network, why it is not a public target). Most specific first where they nest.
_SPECIAL: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "an unspecified/'this network' address (RFC 1122)"),
        ("10.0.0.0/8", "a private address (RFC 1918)"),
        ("100.64.0.0/10", "a shared carrier-grade NAT address (RFC 6598)"),
        ("127.0.0.0/8", "a loopback address (RFC 1122)"),
        ("169.254.0.0/16", "a link-local address (RFC 3927)"),
        ("172.16.0.0/12", "a private address (RFC 1918)"),
        ("192.0.0.0/24", "an IETF protocol assignment (RFC 6890)"),
        ("192.0.2.0/24", "a documentation address (RFC 5737)"),
        ("192.88.99.0/24", "a deprecated 6to4 relay address (RFC 7526)"),
        ("192.168.0.0/16", "a private address (RFC 1918)"),
        ("198.18.0.0/15", "a benchmarking address (RFC 2544)"),
        ("198.51.100.0/24", "a documentation address (RFC 5737)"),
        ("203.0.113.0/24", "a documentation address (RFC 5737)"),
        ("224.0.0.0/4", "a multicast address (RFC 5771)"),
        ("255.255.255.255/32", "the limited broadcast address (RFC 919)"),
        ("240.0.0.0/4", "a reserved address (RFC 1112)"),
        ("::/128", "the unspecified address (RFC 4291)"),
        ("::1/128", "a loopback address (RFC 4291)"),
        ("::/96", "a deprecated IPv4-compatible address (RFC 4291)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address (RFC 8215)"),
        ("100::/64", "a discard-only address (RFC 6666)"),
        ("2001::/23", "an IETF protocol assignment (RFC 2928)"),
        ("2001:db8::/32", "a documentation address (RFC 3849)"),
        ("3fff::/20", "a documentation address (RFC 9637)"),
        ("5f00::/16", "a segment-routing SID address (RFC 9602)"),
        ("fc00::/7", "a unique-local (private) address (RFC 4193)"),
        ("fe80::/10", "a link-local address (RFC 4291)"),
        ("fec0::/10", "a deprecated site-local address (RFC 3879)"),
        ("ff00::/8", "a multicast address (RFC 4291)"),
    )
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765, SIIT)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # IPv4-compatible (deprecated, RFC 4291)
# Globally reachable exceptions inside 2001::/23 (IANA registry, "Globally Reachable: True").
_GLOBAL_IN_2001 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001:1::1/128",
        "2001:1::2/128",
        "2001:3::/32",
        "2001:4:112::/48",
        "2001:20::/28",
        "2001:30::/28",
    )
)


def parse_address(text: str) -> IPAddress:
    """Parse an address, stripping brackets and an IPv6 zone; raises InputError."""
    cleaned = text.strip().removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(cleaned.split("%", 1)[0])
    except ValueError as exc:
        raise InputError(f"{text!r} is not an IP address") from exc


def embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address that traffic to `addr` really reaches, if it embeds one."""
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64 or addr in _SIIT or (addr in _COMPATIBLE and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    return None


def special_purpose(addr: IPAddress) -> str | None:
    """Why `addr` is not a public unicast address, or None if it is one."""
    inner = embedded_ipv4(addr)
    if inner is not None:
        why = special_purpose(inner)
        return f"{why}, embedded in {addr}" if why else None
    if any(addr in net for net in _GLOBAL_IN_2001):
        return None
    for net, why in _SPECIAL:
        if addr.version == net.version and addr in net:
            return why
    return None


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse `--allow-target` values (CIDR or single address); raises InputError."""
    nets: list[IPNetwork] = []
    for raw in texts:
        for text in raw.split(","):
            text = text.strip()
            if not text:
                continue
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise InputError(
                    f"--allow-target {text!r} is not a network in CIDR form (like 127.1.0.0/16)"
                ) from exc
    return tuple(nets)


@dataclass(frozen=True)
class TargetPolicy:
    """Public unicast addresses pass; anything else only inside `allowed`."""

    allowed: tuple[IPNetwork, ...] = ()

    def is_allowed(self, addr: IPAddress) -> bool:
        candidates = [addr]
        inner = embedded_ipv4(addr)
        if inner is not None:
            candidates.append(inner)
        for candidate in candidates:
            if any(candidate.version == n.version and candidate in n for n in self.allowed):
                return True
        return special_purpose(addr) is None

    def refusal(self, address: str) -> str | None:
        """Why a connection to `address` is refused, or None when it may proceed."""
        addr = parse_address(address)
        if self.is_allowed(addr):
            return None
        return special_purpose(addr)

    def check(self, address: str) -> None:
        """Raise TargetRefused unless `address` may be connected to."""
        reason = self.refusal(address)
        if reason is not None:
            raise TargetRefused(address, reason)
