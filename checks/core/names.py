"""Turning what a user typed into the domain to check.

Accepted: a domain in any case with or without the root dot (`Example.COM.`),
an internationalised domain (converted to A-labels; both forms are kept), an
email address (its domain), or a URL (its host). Everything else raises
InputError with a message that names the problem.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from checks.core.errors import InputError

_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAX_INPUT = 1024


@dataclass(frozen=True)
class DomainName:
    ascii: str  # A-labels, lower case, no root dot: what goes on the wire
    unicode: str  # U-labels: what people read

    @property
    def is_idn(self) -> bool:
        return self.ascii != self.unicode


def within(name: str, domain: str) -> bool:
    """`name` is `domain` or below it, ignoring case and final dots."""
    name, domain = name.rstrip(".").lower(), domain.rstrip(".").lower()
    return name == domain or name.endswith("." + domain)


def normalize_domain(text: str) -> DomainName:
    """Extract and validate the domain from user input; raises InputError."""
    raw = text.strip()
    if not raw:
        raise InputError("no domain given")
    if len(raw) > _MAX_INPUT:
        raise InputError(f"input is {len(raw)} characters long; a domain has at most 253")
    if any(ch.isspace() for ch in raw):
        raise InputError(f"{_show(raw)} contains spaces; give a single domain")
    host = _host_part(raw)
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        pass
    else:
        raise InputError(f"{_show(host)} is an IP address; give the mail domain instead")
    return _to_domain(host)


def normalize_selector(text: str) -> str:
    """A DKIM selector: one or more DNS labels (`s1`, `2024.mail`), lower case."""
    name = text.strip().lower()
    labels = name.split(".")
    if len(name) > 200 or not all(
        label
        and len(label) <= 63
        and label.replace("-", "").replace("_", "").isalnum()
        and label.isascii()
        for label in labels
    ):
        raise InputError(f"DKIM selector {_show(text)} is not a DNS label (like s1 or mail)")
    return name


def normalize_sender_ip(text: str) -> str:
    """A sending address for the SPF verdict: IPv4 or IPv6, in canonical form."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise InputError(f"sender IP {_show(text)} is not an IPv4 or IPv6 address") from None


def _host_part(raw: str) -> str:
    if "://" in raw:
        parts = urlsplit(raw)
        if not parts.hostname:
            raise InputError(f"{_show(raw)} is a URL without a host name")
        return parts.hostname
    if "@" in raw:
        local, _, domain = raw.rpartition("@")
        if not local or not domain:
            raise InputError(f"{_show(raw)} is not an email address: nothing on one side of '@'")
        return domain
    if "/" in raw or "?" in raw or "#" in raw:
        raise InputError(
            f"{_show(raw)} is not a domain; give example.com, user@example.com or a URL"
        )
    return raw


def _to_domain(host: str) -> DomainName:
    name = host.rstrip(".") if host.endswith(".") and not host.endswith("..") else host
    if not name:
        raise InputError("the domain is empty")
    labels = name.split(".")
    if any(not label for label in labels):
        raise InputError(f"{_show(host)} has an empty label (two dots in a row, or a leading dot)")
    if len(labels) < 2:
        raise InputError(f"{_show(host)} is a single label; give a full domain such as example.com")
    if len(name) > 253:
        raise InputError(f"{_show(host)} is longer than 253 characters")
    try:
        ascii_name = idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InputError(f"{_show(host)} is not a valid domain name: {exc}") from exc
    except UnicodeError as exc:
        raise InputError(f"{_show(host)} is not a valid domain name (label too long?)") from exc
    ascii_name = ascii_name.lower()
    for label in ascii_name.split("."):
        if not _LDH_LABEL.match(label):
            raise InputError(
                f"{_show(host)} is not a valid domain name: label {label!r} may hold only "
                "letters, digits and inner hyphens, 1 to 63 characters"
            )
    if len(ascii_name) > 253:
        raise InputError(f"{_show(host)} is longer than 253 characters")
    try:
        unicode_name = idna.decode(ascii_name)
    except idna.IDNAError:
        unicode_name = ascii_name
    return DomainName(ascii=ascii_name, unicode=unicode_name)


def _show(text: str, limit: int = 80) -> str:
    """Quote user input for an error message, bounded and with controls made visible."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    return repr(shown)
