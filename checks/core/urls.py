"""HTTP(S) URLs from strangers, reduced to the host and port a client would reach.

URLs reach mailcheck from DNS (`mailconf=`), from servers (autodiscover
redirects, `Location` headers, mobileconfig links) and from settings. A URL's
host can be written in many ways that clients all read as one address:
full-width digits and dots (U+FF11 U+FF12 U+FF17 U+FF0E ... for 127.0.0.1),
the shorthand and numeric
forms inet_aton and the WHATWG URL standard accept (`127.1`, `2130706433`,
`0x7f.1`, `0177.0.0.1`), percent-encoding, a trailing dot, brackets around
IPv6, upper case. `parse_http_url` reads the host the way a browser does
(percent-decoding, UTS 46 mapping, the WHATWG IPv4 parser) and returns one
canonical form: a plain IP address when it is one, else the A-label name.
The fetch then resolves and checks exactly that, and connects to the
address it checked, so no spelling can reach an address the policy forbids.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import idna

from checks.core.errors import ProtocolViolation

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# What may stand in a request target as it is; everything else is %-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


@dataclass(frozen=True)
class HTTPURL:
    """An http(s) URL as a client would use it."""

    scheme: str  # "http" or "https"
    host: str  # canonical: an IP address (IPv6 without brackets) or an A-label name
    port: int
    target: str  # the request target: path and query, ASCII
    literal: bool  # the host is an IP address

    @property
    def authority(self) -> str:
        """What the Host header says: the host, with the port when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = _DEFAULT_PORTS[self.scheme] == self.port
        return host if default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"


def parse_http_url(url: str) -> HTTPURL:
    """The URL's scheme, canonical host, port and request target; ProtocolViolation
    (naming the problem) for anything that is not a usable http(s) URL."""
    shown = url[:200]
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ProtocolViolation(f"not a valid URL ({exc}): {shown}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ProtocolViolation(f"not an http(s) URL: {shown}")
    if parts.username is not None or parts.password is not None:
        raise ProtocolViolation(f"a URL with credentials in it is not fetched: {shown}")
    raw_host = parts.netloc.rpartition("@")[2]
    raw_host = raw_host[: raw_host.rindex("]") + 1] if raw_host.startswith("[") else raw_host
    if not raw_host.startswith("["):
        raw_host = raw_host.partition(":")[0]
    host = canonical_host(raw_host)
    if not host:
        raise ProtocolViolation(f"no host in URL: {shown}")
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return HTTPURL(
        scheme=scheme,
        host=host,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        target=target,
        literal=_is_address(host),
    )


def canonical_host(raw: str) -> str:
    """One canonical spelling of a URL's host (see the module docstring);
    ProtocolViolation when no client could use it."""
    if raw.startswith("["):  # IPv6; a zone identifier names a local interface: refused
        inner = raw[1:].removesuffix("]")
        if "%" in inner:
            raise ProtocolViolation(f"an IPv6 zone names a local interface: [{inner[:60]}]")
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise ProtocolViolation(f"not an IPv6 address: [{inner[:60]}]") from None
    try:
        text = unquote(raw, errors="strict")
        text = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except (UnicodeDecodeError, idna.IDNAError) as exc:
        raise ProtocolViolation(f"not a host name: {raw[:100]!r} ({exc})") from None
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    address = whatwg_ipv4(text)
    if address is not None:
        return address
    try:
        name = idna.encode(text, uts46=False).decode("ascii") if not text.isascii() else text
    except idna.IDNAError as exc:
        raise ProtocolViolation(f"not a host name: {raw[:100]!r} ({exc})") from None
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ProtocolViolation(f"not a host name: {raw[:100]!r}")
    return name


def whatwg_ipv4(host: str) -> str | None:
    """The WHATWG URL standard's IPv4 parser (what browsers and inet_aton read as
    an address): None when `host` is a name, the dotted quad when it is an
    address, ProtocolViolation when it ends in a number but is no address."""
    parts = host.split(".")
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not parts or _number(parts[-1]) is None:
        return None  # the last label is not numeric: a domain name
    numbers = [_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise ProtocolViolation(f"not a host name or an IPv4 address: {host[:100]!r}")
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):
        raise ProtocolViolation(f"not an IPv4 address (a part is too large): {host[:100]!r}")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def _number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if digits == "":
        return 0 if base == 16 else None
    try:
        return int(digits, base) if digits.isalnum() and digits.isascii() else None
    except ValueError:
        return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
