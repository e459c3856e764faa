"""What DNS said: the answers the network door hands to stages and rules.

Values only, no I/O: a rule that reads DNS takes a small lookup interface
(see `checks.rules.spf.SPFLookup`, `checks.rules.dnssec.SignedLookup`) whose
answers are these, and the stage hands it the door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset


@dataclass(frozen=True)
class DNSAnswer:
    """The records of one lookup; empty when the name has none of that type."""

    qname: str
    rdtype: str
    canonical_name: str  # differs from qname when a CNAME was followed
    records: tuple[Any, ...]  # dnspython rdata objects
    ttl: int | None

    @property
    def via_cname(self) -> bool:
        return self.canonical_name.rstrip(".").lower() != self.qname.rstrip(".").lower()

    def texts(self) -> list[str]:
        return [r.to_text() for r in self.records]


@dataclass(frozen=True)
class SignedAnswer:
    """One DO+CD lookup, kept whole for a DNSSEC validator (checks.rules.dnssec).

    Nothing is digested: the answer section (CNAMEs, DNAMEs, the records,
    every RRSIG) and the authority section (SOA, NSEC, NSEC3 and their RRSIGs)
    are the rrsets as the server sent them. Hostile servers send anything, so
    a reader must not assume an rrset is there, or is about the name asked.
    """

    qname: str  # as asked, without the final dot ("." for the root)
    rdtype: str
    rcode: dns.rcode.Rcode  # NOERROR or NXDOMAIN; any other rcode raised
    answer: tuple[dns.rrset.RRset, ...]
    authority: tuple[dns.rrset.RRset, ...]
    server: str  # which nameserver answered: "ADDRESS", "ADDRESS:PORT" or "[V6]:PORT"
    tcp: bool  # the UDP answer was truncated and TCP gave this one

    def find(
        self,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        covers: dns.rdatatype.RdataType = dns.rdatatype.NONE,
        *,
        authority: bool = False,
    ) -> dns.rrset.RRset | None:
        """The rrset of `name`/`rdtype` (RRSIG: those covering `covers`), if sent."""
        for rrset in self.authority if authority else self.answer:
            if rrset.name == name and rrset.rdtype == rdtype and rrset.covers == covers:
                return rrset
        return None

    def summary(self) -> str:
        """A transcript line's tail: 'NXDOMAIN [2 RRSIG]', '10 mx.example. [1 RRSIG]'."""
        wanted = dns.rdatatype.from_text(self.rdtype)
        shown = [r.to_text() for rs in self.answer if rs.rdtype == wanted for r in rs]
        sigs = sum(
            len(rs) for rs in (*self.answer, *self.authority) if rs.rdtype == dns.rdatatype.RRSIG
        )
        head = ", ".join(shown) or "(no records)"
        if self.rcode != dns.rcode.NOERROR:
            head = dns.rcode.to_text(self.rcode)
        via = " over TCP" if self.tcp else ""
        return f"{head} [{sigs} RRSIG{via}]"


def hostname(name: Any) -> str:
    """A dnspython name or text as lower-case text without the root dot ('' for root)."""
    text = name.to_text() if hasattr(name, "to_text") else str(name)
    return "" if text == "." else text.rstrip(".").lower()


def txt_strings(answer: DNSAnswer) -> list[str]:
    """Each TXT record as one string (its character-strings joined, RFC 7208 style)."""
    return [b"".join(r.strings).decode("utf-8", errors="replace") for r in answer.records]
