"""How the engine reaches the network: chosen by the operator, not the user.

A `CheckRequest` says what to check; an `EngineConfig` says through which
resolver, to which addresses, within which time. The CLI and the worker build
one from their settings; tests build one pointing at the lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from checks.accounts import Accounts
from checks.errors import InputError
from checks.targets import TargetPolicy, parse_address


@dataclass(frozen=True)
class Nameserver:
    address: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return host if self.port == 53 else f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Nameserver:
        """Parse `HOST`, `HOST:PORT`, `IPv6` or `[IPv6]:PORT`; HOST must be an address."""
        raw = text.strip()
        port = 53
        if raw.startswith("["):
            host, _, rest = raw[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise InputError(f"resolver {text!r}: expected [ADDRESS]:PORT")
                port = _port(rest[1:], text)
        elif raw.count(":") == 1:
            host, _, port_text = raw.partition(":")
            port = _port(port_text, text)
        else:
            host = raw
        try:
            address = str(parse_address(host))
        except InputError as exc:
            raise InputError(
                f"resolver {text!r}: give the resolver's IP address (optionally :PORT)"
            ) from exc
        return cls(address, port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InputError(f"resolver {whole!r}: port must be a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True)
class Timeouts:
    """Seconds. Each network phase has its own limit, under one check deadline."""

    dns: float = 5.0
    connect: float = 10.0
    banner: float = 30.0  # postscreen delays greetings by 6 s or more
    reply: float = 30.0  # one command's reply, or a TLS handshake
    check: float = 120.0


@dataclass(frozen=True)
class Limits:
    """Bounds on what one server may make us read: hostile servers exist."""

    line: int = 4096  # bytes in one protocol line (RFC 5321 asks for 512)
    reply_lines: int = 200  # lines in one multi-line reply
    bytes_per_connection: int = 256 * 1024


@dataclass(frozen=True)
class EngineConfig:
    nameservers: tuple[Nameserver, ...] = ()  # empty: the system resolver
    policy: TargetPolicy = field(default_factory=TargetPolicy)
    ca_file: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    helo_name: str = "mailcheck.invalid"  # what we call ourselves in EHLO
    dnsbl_zones: tuple[str, ...] | None = None  # None: checks.policy.dnsbl.DEFAULT_ZONES
    # Thunderbird's ISPDB: the domain is appended; "" skips it.
    ispdb_url: str = "https://autoconfig.thunderbird.net/v1.1/"
    limits: Limits = field(default_factory=Limits)
    accounts: Accounts | None = None  # test accounts (server-side secrets), by name
    delivery_timeout: float = 120.0  # seconds a round-trip message may take to arrive
    delivery_slow: float = 30.0  # seconds after which an arrival is reported as slow
    trust_anchors: tuple[str, ...] | None = None  # DS/DNSKEY lines; None: dnssec.ROOT_ANCHORS
