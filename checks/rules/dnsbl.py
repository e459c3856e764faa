"""DNS blocklists (RFC 5782): is a mail server's address listed?

`query_name` builds the name to look up (A record); `interpret` turns the
answer into a `Verdict`. Only a proper listing code counts as listed: refusal
and error codes (Spamhaus's 127.255.255.x), 127.0.0.1 and anything outside
127.0.0.0/8 (a resolver that rewrites NXDOMAIN, or a hijacked zone) are
inconclusive, so a misconfigured resolver never makes a server look listed.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from checks.core.text import untrusted

# A starting point, not a recommendation: operators should set the lists they
# (and the receivers they care about) actually use. Spamhaus answers queries
# sent through public resolvers (8.8.8.8, 1.1.1.1, ...) with an error code
# rather than data, and Barracuda's list needs a (free) registered resolver,
# so from a cloud host these often come back inconclusive. SORBS
# (dnsbl.sorbs.net) is left out on purpose: it was shut down in June 2024, and
# a dead list's zone can be taken over and made to "list" everyone.
DEFAULT_ZONES: tuple[str, ...] = (
    "zen.spamhaus.org",
    "bl.spamcop.net",
    "b.barracudacentral.org",
    "psbl.surriel.com",
)

# RFC 5782 5: every IPv4 list must list 127.0.0.2 and must not list 127.0.0.1.
# A zone that does not list TEST_LISTED is not answering this resolver.
TEST_LISTED = "127.0.0.2"
TEST_UNLISTED = "127.0.0.1"

_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_ERRORS = ipaddress.IPv4Network("127.255.255.0/24")  # Spamhaus's range for query errors
_SPAMHAUS_ERRORS = {
    "127.255.255.252": "the blocklist name is misspelt (Spamhaus: typo in the DNSBL name)",
    "127.255.255.254": (
        "Spamhaus refuses queries sent through a public or open resolver; "
        "query from a resolver of your own, or use Spamhaus DQS"
    ),
    "127.255.255.255": "Spamhaus refuses: too many queries from this resolver",
    "127.0.1.255": "an address was looked up in a domain list (Spamhaus DBL)",
}
_SPAMHAUS_CODES = {
    "127.0.0.2": "SBL: a known spam source",
    "127.0.0.3": "SBL CSS: snowshoe spam seen from this address",
    "127.0.0.4": "XBL: a compromised or infected host (CBL data)",
    "127.0.0.9": "SBL DROP: a hijacked or spammer-run network",
    "127.0.0.10": "PBL (ISP-maintained): this range should not send mail directly",
    "127.0.0.11": "PBL (Spamhaus-maintained): this range should not send mail directly",
    "127.0.0.30": "BCL: a botnet controller",
}


class Listing(enum.Enum):
    LISTED = "listed"
    NOT_LISTED = "not_listed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    zone: str
    listing: Listing
    reason: str  # for a person: what the answer means
    answers: tuple[str, ...] = ()

    @property
    def listed(self) -> bool:
        return self.listing is Listing.LISTED


def query_name(address: str, zone: str) -> str:
    """The name to look up: `2.0.0.127.zen.spamhaus.org` for 127.0.0.2; an IPv6
    address as 32 reversed nibbles. Raises ValueError for anything but an address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # the IPv4 address the server really uses
    if isinstance(ip, ipaddress.IPv4Address):
        labels = reversed(str(ip).split("."))
    else:
        labels = reversed(ip.exploded.replace(":", ""))
    return ".".join((*labels, zone.strip(".").lower()))


def interpret(zone: str, answers: list[str]) -> Verdict:
    """What the A records at `query_name(address, zone)` say; [] is NXDOMAIN (not listed)."""
    zone = zone.strip(".").lower()
    shown = tuple(untrusted(a, 60) for a in answers)
    if not answers:
        return Verdict(zone, Listing.NOT_LISTED, f"not listed in {zone}")
    spamhaus = zone == "spamhaus.org" or zone.endswith((".spamhaus.org", ".spamhaus.net"))
    codes = []
    for text in answers:
        try:
            code = ipaddress.ip_address(text.strip())
        except ValueError:
            return _inconclusive(
                zone, shown, f"{zone} answered '{untrusted(text, 60)}', not an address"
            )
        if not isinstance(code, ipaddress.IPv4Address) or code not in _LOOPBACK:
            return _inconclusive(
                zone,
                shown,
                f"{zone} answered {code}, outside 127.0.0.0/8: a resolver that rewrites "
                "NXDOMAIN or a hijacked zone, not a listing",
            )
        error = _SPAMHAUS_ERRORS.get(str(code)) if spamhaus else None
        if error or code in _ERRORS:
            meaning = error or "lists use 127.255.255.0/24 for query errors"
            return _inconclusive(
                zone, shown, f"{zone} answered {code}, which is not a listing: {meaning}"
            )
        if str(code) in ("127.0.0.0", TEST_UNLISTED):
            return _inconclusive(
                zone,
                shown,
                f"{zone} answered {code}, which is not a listing code (RFC 5782); "
                "some lists answer it to refuse the query",
            )
        codes.append(str(code))
    meanings = [
        f"{c} ({_SPAMHAUS_CODES[c]})" if spamhaus and c in _SPAMHAUS_CODES else c for c in codes
    ]
    return Verdict(zone, Listing.LISTED, f"listed in {zone}: {', '.join(meanings)}", shown)


def _inconclusive(zone: str, answers: tuple[str, ...], reason: str) -> Verdict:
    return Verdict(zone, Listing.INCONCLUSIVE, reason, answers)
