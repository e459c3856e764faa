"""SPF record syntax (RFC 7208 sections 4.5, 4.6, 5 and 6): text to terms.

    v=spf1 ip4:192.0.2.0/24 a:mail.%{d} -include:_spf.example.com ~all exp=why.%{d}

`select_record` picks the one SPF record among a name's TXT strings;
`parse_record` checks the whole record at once (RFC 7208 4.6: a syntax
error anywhere is a permerror, even after a matching mechanism) and returns
its terms. Both raise SPFSyntaxError with a message that names the bad term.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from checks.rules.spfmacro import Part, SPFSyntaxError, parse_domain_spec, parse_macro_string

VERSION = "v=spf1"
MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
# The terms that cost a DNS lookup against the limit of 10 (RFC 7208 4.6.4).
DNS_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}

_NAME = r"[A-Za-z][A-Za-z0-9\-_.]*"
_MODIFIER = re.compile(rf"({_NAME})=(.*)", re.DOTALL)
_MECHANISM = re.compile(rf"([+\-~?]?)({_NAME})(.*)", re.DOTALL)
_DUAL_CIDR = re.compile(r"(.*?)(?:/([0-9]+))?(?://([0-9]+))?", re.DOTALL)
_IP4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_IP6 = re.compile(r"[0-9A-Fa-f:.]+")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Mechanism:
    text: str  # the term as written, e.g. "-include:_spf.example.com"
    qualifier: str  # "+", "-", "~" or "?" ("+" when omitted)
    name: str  # lower case: all include a mx ptr ip4 ip6 exists
    domain_spec: str | None = None  # None: the current domain (a, mx, ptr)
    cidr4: int | None = None  # a, mx: prefix for IPv4 clients (None: 32)
    cidr6: int | None = None  # a, mx: prefix for IPv6 clients (None: 128)
    network: IPNetwork | None = None  # ip4, ip6

    @property
    def needs_dns(self) -> bool:
        return self.name in DNS_MECHANISMS

    @property
    def parts(self) -> tuple[Part, ...]:
        """The domain-spec as macro parts (validated at parse time)."""
        return parse_domain_spec(self.domain_spec) if self.domain_spec else ()


@dataclass(frozen=True)
class Modifier:
    text: str
    name: str  # lower case
    value: str


@dataclass(frozen=True)
class Record:
    text: str
    mechanisms: tuple[Mechanism, ...]
    redirect: Modifier | None = None
    exp: Modifier | None = None
    unknown: tuple[Modifier, ...] = ()  # kept for diagnosis; they change nothing

    @property
    def all(self) -> Mechanism | None:
        return next((m for m in self.mechanisms if m.name == "all"), None)


def is_spf(text: str) -> bool:
    """Whether a TXT string is an SPF record: "v=spf1", any case, then a space or the end."""
    return text[:6].lower() == VERSION and text[6:7] in ("", " ")


def select_record(txts: Iterable[str]) -> str | None:
    """The SPF record among a name's TXT strings, None if there is none.

    More than one is a permerror (RFC 7208 4.5), even identical ones:
    raises SPFSyntaxError.
    """
    found = [t for t in txts if is_spf(t)]
    if len(found) > 1:
        raise SPFSyntaxError(f"{len(found)} SPF records published; there must be exactly one")
    return found[0] if found else None


def parse_record(text: str) -> Record:
    """Every term of an SPF record, checked. Raises SPFSyntaxError."""
    if not is_spf(text):
        raise SPFSyntaxError(f"{text[:40]!r} does not start with {VERSION!r}")
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, Modifier] = {}
    unknown: list[Modifier] = []
    # Terms are separated by spaces only (RFC 7208 4.6.1): a tab or CR stays
    # inside its term and makes it invalid.
    for term in text[6:].split(" "):
        if not term:
            continue
        parsed = parse_term(term)
        if isinstance(parsed, Mechanism):
            mechanisms.append(parsed)
        elif parsed.name in ("redirect", "exp"):
            if parsed.name in modifiers:
                raise SPFSyntaxError(f"{parsed.name}= appears twice ({term!r})")
            modifiers[parsed.name] = parsed
        else:
            unknown.append(parsed)
    return Record(
        text, tuple(mechanisms), modifiers.get("redirect"), modifiers.get("exp"), tuple(unknown)
    )


def parse_term(term: str) -> Mechanism | Modifier:
    modifier = _MODIFIER.fullmatch(term)
    if modifier:
        name, value = modifier.group(1).lower(), modifier.group(2)
        try:
            if name in ("redirect", "exp"):
                parse_domain_spec(value)
            else:
                parse_macro_string(value)
        except SPFSyntaxError as exc:
            raise SPFSyntaxError(f"invalid modifier {term!r}: {exc}") from None
        return Modifier(term, name, value)
    mechanism = _MECHANISM.fullmatch(term)
    if mechanism is None:
        raise SPFSyntaxError(f"invalid term {term!r}")
    qualifier, name, rest = mechanism.groups()
    name = name.lower()
    if name not in MECHANISMS:
        hint = f" ({name} is a modifier: {name}=...)" if name in ("redirect", "exp") else ""
        raise SPFSyntaxError(f"unknown mechanism {term!r}{hint}")
    try:
        return _mechanism(term, qualifier or "+", name, rest)
    except SPFSyntaxError as exc:
        raise SPFSyntaxError(f"invalid mechanism {term!r}: {exc}") from None


def _mechanism(term: str, qualifier: str, name: str, rest: str) -> Mechanism:
    if name == "all":
        if rest:
            raise SPFSyntaxError("all takes no argument")
        return Mechanism(term, qualifier, name)
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            raise SPFSyntaxError(f"{name} needs a domain: {name}:example.com")
        parse_domain_spec(rest[1:])
        return Mechanism(term, qualifier, name, rest[1:])
    if name == "ptr":
        if rest and not rest.startswith(":"):
            raise SPFSyntaxError("ptr takes no prefix length")
        if rest:
            parse_domain_spec(rest[1:])
        return Mechanism(term, qualifier, name, rest[1:] or None)
    if name in ("a", "mx"):
        return _address_mechanism(term, qualifier, name, rest)
    return _ip_mechanism(term, qualifier, name, rest)


def _address_mechanism(term: str, qualifier: str, name: str, rest: str) -> Mechanism:
    """a and mx: [ ":" domain-spec ] [ "/" ip4-cidr ] [ "//" ip6-cidr ]."""
    has_domain = rest.startswith(":")
    match = _DUAL_CIDR.fullmatch(rest[1:] if has_domain else rest)
    assert match is not None  # the pattern matches any text
    spec, cidr4, cidr6 = match.groups()
    if has_domain:
        parse_domain_spec(spec)
    elif spec:
        raise SPFSyntaxError(f"unexpected {spec!r} (prefix lengths are /N and //N)")
    return Mechanism(
        term,
        qualifier,
        name,
        spec if has_domain else None,
        _cidr(cidr4, 32),
        _cidr(cidr6, 128),
    )


def _ip_mechanism(term: str, qualifier: str, name: str, rest: str) -> Mechanism:
    if not rest.startswith(":"):
        raise SPFSyntaxError(f"{name} needs an address: {name}:ADDRESS[/LENGTH]")
    address, slash, length = rest[1:].partition("/")
    if name == "ip4":
        # Strict dotted quad: no shortened forms like 1.2.3, no ports, no leading zeros.
        valid = _IP4.fullmatch(address) is not None and all(
            int(x) <= 255 for x in address.split(".")
        )
        limit = 32
    else:
        valid = _IP6.fullmatch(address) is not None and _is_ipv6(address)
        limit = 128
    if not valid:
        raise SPFSyntaxError(f"{address!r} is not an {'IPv4' if limit == 32 else 'IPv6'} address")
    prefix = _cidr(length, limit) if slash else limit
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return Mechanism(term, qualifier, name, network=network)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _cidr(text: str | None, limit: int) -> int | None:
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise SPFSyntaxError(f"bad prefix length /{text}")
    if int(text) > limit:
        raise SPFSyntaxError(f"prefix length /{text} is longer than {limit}")
    return int(text)
