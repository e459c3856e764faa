"""How the engine reaches the network: chosen by the operator, not the user.

A `CheckRequest` says what to check; an `EngineConfig` says through which
resolver, to which addresses, within which time. The CLI and the worker build
one from their settings; tests build one pointing at the lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from checks.core.accounts import Accounts
from checks.core.errors import InputError
from checks.core.targets import TargetPolicy, parse_address


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
class Budgets:
    """What one check may do at most, whatever the domain's DNS says: a hostile
    zone must not turn a check into a flood against a third party. Each is a
    setting (checks.net.budget.BUDGETS names it); hitting one is one
    `engine.budget.exceeded` finding saying what was skipped."""

    mx_hosts: int = 10  # MX hosts checked, in preference order
    addresses: int = 8  # addresses tried per host name and address family
    srv_targets: int = 10  # targets per SRV name
    redirects: int = 2  # autodiscover redirects followed (Outlook follows two)
    dkim_selectors: int = 20  # selectors looked up (the user's, then the common ones)
    dnsbl_zones: int = 10  # blocklists asked per address
    connections: int = 200  # TCP connections per check
    dns_queries: int = 1500  # DNS questions per check (a full check asks about 100)
    spf_queries: int = 100  # of those, the SPF diagnosis' own walk of the record tree
    prefix_connections: int = 16  # open at once to one /24 (IPv4) or /64 (IPv6)


@dataclass(frozen=True)
class CPULimits:
    """Bounds on the CPU-heavy work one check may be made to do. A hostile zone
    or message can ask for thousands of signature checks at milliseconds each
    (KeyTrap, CVE-2023-50387); past a bound the verdict is inconclusive and
    names the bound, as validating resolvers have done since February 2024.
    The work itself runs off the event loop (checks.rules.dnssec, checks.rules.dkimverify)."""

    # DNSKEYs sharing one key tag and algorithm tried per RRSIG: PowerDNS
    # Recursor's max-dnskeys (2, since 4.8.6/4.9.3/5.0.2).
    dnssec_keys_per_tag: int = 2
    # Signature checks per RRset: Unbound's MAX_VALIDATE_RRSIGS (8, since 1.19.1).
    dnssec_signatures_per_rrset: int = 8
    # Signature checks per check. BIND makes 16 per fetch (max-validations-per-
    # fetch), PowerDNS 30 per query (max-signature-validations-per-query); a
    # check validates the MX and each MX host's TLSA, each with its own chain.
    dnssec_validations: int = 100
    # NSEC/NSEC3 records checked in one denial: a real proof needs 3 at most;
    # Unbound hashes at most 8 NSEC3 names per message (MAX_NSEC3_CALCULATIONS).
    dnssec_denial_records: int = 8
    # NSEC3 extra hash iterations: RFC 9276 asks for 0, and validators give up
    # above a limit: 50 in BIND 9.20 (DNS_NSEC3_MAXITERATIONS), 150 in Unbound.
    nsec3_iterations: int = 50
    # DKIM-Signatures verified per message, from the top: OpenDKIM's
    # MaximumSignaturesToVerify default.
    dkim_signatures: int = 3
    # ARC sets verified per message: RFC 8617 allows 50, real chains have a hop
    # or three; each set hashes the body once more.
    arc_sets: int = 8
    # Bytes hashed per message, all DKIM signatures and ARC sets together (each
    # hashes the whole body): twice the receiver's default message size.
    dkim_hash_bytes: int = 20 * 1024 * 1024
    # Seconds one message's DKIM/ARC verification may take in its child process.
    dkim_seconds: float = 20.0


@dataclass(frozen=True)
class EngineConfig:
    nameservers: tuple[Nameserver, ...] = ()  # empty: the system resolver
    policy: TargetPolicy = field(default_factory=TargetPolicy)
    ca_file: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    helo_name: str = "mailcheck.invalid"  # what we call ourselves in EHLO
    dnsbl_zones: tuple[str, ...] | None = None  # None: checks.rules.dnsbl.DEFAULT_ZONES
    # Thunderbird's ISPDB: the domain is appended; "" skips it.
    ispdb_url: str = "https://autoconfig.thunderbird.net/v1.1/"
    limits: Limits = field(default_factory=Limits)
    cpu: CPULimits = field(default_factory=CPULimits)  # signature checks and hashing
    accounts: Accounts | None = None  # test accounts (server-side secrets), by name
    delivery_timeout: float = 120.0  # seconds a round-trip message may take to arrive
    delivery_slow: float = 30.0  # seconds after which an arrival is reported as slow
    trust_anchors: tuple[str, ...] | None = None  # DS/DNSKEY lines; None: dnssec.ROOT_ANCHORS
    budgets: Budgets = field(default_factory=Budgets)  # per-check caps (checks.net.budget)
