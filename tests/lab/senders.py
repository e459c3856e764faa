"""Sending servers for the send test: what the lab's Postfix sends as, per domain.

The send test's receiver (started by the tests, not the lab) listens on
RECEIVER_ADDRESS:25 as RECEIVER_HOST and judges how a sending server behaved
with a message to st-<token>@RECEIVER_DOMAIN: reverse DNS of the source
address, the HELO name, TLS, SPF, DKIM, DMARC, DNSBL. Each Sender below is one
way of sending: a domain, a source address of its own, and one thing done
wrong (or nothing), with the codes the receiver must report at warning or
above (`expect`).

The lab's Postfix (tests/lab/mail.py) sends mail whose envelope sender is in
a Sender's domain, and whose recipient is in RECEIVER_DOMAIN, straight to
[RECEIVER_ADDRESS]:25 from that Sender's address, with its HELO name and TLS
setting; the lab's OpenDKIM milter signs it (selector DKIM_SELECTOR) when
`dkim` says so. The zones (tests/lab/zones.py) publish each Sender's PTR, A,
SPF, DMARC and DKIM records as the fields say. Inject mail with
MailLab.send(); HEALTHY_SENDER is how mail that alice submits at healthy.test's
submission server leaves the lab.

Addresses: 127.1.40.1-127.1.40.99 senders, 127.1.40.25 the receiver,
127.1.40.100 the OpenDKIM milter, 127.1.40.200 an address SPF allows that
never sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

RECEIVER_ADDRESS = "127.1.40.25"
RECEIVER_PORT = 25
RECEIVER_DOMAIN = "sendtest.test"
RECEIVER_HOST = "mx.sendtest.test"  # also the name of its lab certificate (mail.CERTS)

DKIM_SELECTOR = "lab"
MILTER_ADDRESS = "127.1.40.100"  # OpenDKIM, run by MailLab
MILTER_PORT = 8891
SPF_OTHER_ADDRESS = "127.1.40.200"  # allowed by some SPF records; nothing sends from it

Signing = Literal["sign", "none", "bad"]


@dataclass(frozen=True)
class Sender:
    """One sending server: mail from @domain leaves from address as helo."""

    domain: str
    address: str  # the source address of its connections to the receiver
    helo: str  # what it says in EHLO
    tls: bool  # STARTTLS when offered (smtp_tls_security_level may), else never
    # sign: OpenDKIM signs with the key published at DKIM_SELECTOR; bad: it
    # signs with a key other than the one published there; none: unsigned.
    dkim: Signing
    expect: frozenset[str]  # the send test's codes at warning or above
    about: str
    ptr: str | None  # the PTR name of address; None: no PTR at all
    hosts: Mapping[str, str]  # A records in the zone: name (relative) -> address
    spf: str
    dmarc: str = "v=DMARC1; p=reject"
    records: tuple[str, ...] = ()  # anything else in the zone

    @property
    def transport(self) -> str:
        """Its Postfix transport (master.cf service) towards the receiver."""
        return "out-" + self.domain.removesuffix(".test").replace(".", "-")


def _sender(
    domain: str,
    number: int,
    expect: set[str],
    about: str,
    *,
    tls: bool = True,
    dkim: Signing = "sign",
    helo: str | None = None,
    ptr: str | None = "",  # "": mail.<domain>
    hosts: Mapping[str, str] | None = None,
    spf: str | None = None,
    dmarc: str = "v=DMARC1; p=reject",
) -> Sender:
    """A healthy sender at 127.1.40.<number> (PTR mail.<domain> with a matching
    A record, HELO that name, SPF for exactly its address, DMARC p=reject),
    but for what the arguments change."""
    address = f"127.1.40.{number}"
    return Sender(
        domain=domain,
        address=address,
        helo=helo or f"mail.{domain}",
        tls=tls,
        dkim=dkim,
        expect=frozenset(expect),
        about=about,
        ptr=f"mail.{domain}" if ptr == "" else ptr,
        hosts=dict(hosts if hosts is not None else {"mail": address}),
        spf=spf or f"v=spf1 ip4:{address} -all",
        dmarc=dmarc,
        records=("@ IN MX 10 mail",),
    )


SENDERS: tuple[Sender, ...] = (
    _sender("send-ok.test", 1, set(), "everything right: FCrDNS, TLS, SPF, DKIM, DMARC"),
    _sender("send-notls.test", 2, {"sendtest.tls.none"}, "never uses STARTTLS", tls=False),
    _sender("send-noptr.test", 3, {"sendtest.ptr.missing"}, "no PTR for its address", ptr=None),
    _sender(
        "send-ptrmismatch.test",
        4,
        {"sendtest.ptr.mismatch"},
        "its PTR name resolves to another address (HELO smtp.<domain> resolves right)",
        helo="smtp.send-ptrmismatch.test",
        hosts={"mail": "127.1.40.99", "smtp": "127.1.40.4"},
    ),
    _sender("send-badhelo.test", 5, {"sendtest.helo.invalid"}, "EHLO localhost", helo="localhost"),
    _sender(
        "send-spffail.test",
        6,
        {"sendtest.spf.fail"},
        "SPF -all excludes it; DKIM passes, so DMARC does",
        spf=f"v=spf1 ip4:{SPF_OTHER_ADDRESS} -all",
    ),
    _sender(
        "send-softfail.test",
        7,
        {"sendtest.spf.softfail"},
        "SPF ~all excludes it; DKIM passes, so DMARC does",
        spf=f"v=spf1 ip4:{SPF_OTHER_ADDRESS} ~all",
    ),
    _sender(
        "send-nodkim.test",
        8,
        {"sendtest.dkim.none"},
        "not DKIM-signed; SPF passes, so DMARC does",
        dkim="none",
    ),
    _sender(
        "send-dkimbad.test",
        9,
        {"sendtest.dkim.fail"},
        "signed with a key other than the one its DNS publishes; SPF passes",
        dkim="bad",
    ),
    _sender(
        "send-dmarcfail.test",
        10,
        {"sendtest.spf.fail", "sendtest.dkim.none", "sendtest.dmarc.fail"},
        "SPF -all excludes it and nothing is signed: DMARC p=reject fails",
        dkim="none",
        spf=f"v=spf1 ip4:{SPF_OTHER_ADDRESS} -all",
    ),
    _sender(
        "send-listed.test",
        11,
        {"sendtest.dnsbl.listed"},
        "healthy, but its address is on the lab blocklist bl.test",
    ),
)

# How mail from healthy.test (alice, through its submission server 127.1.1.10)
# reaches the receiver: from the submission server's address, as its name,
# signed; healthy.test's zone publishes the PTR, SPF and key (tests/lab/zones.py).
HEALTHY_SENDER = Sender(
    domain="healthy.test",
    address="127.1.1.10",
    helo="smtp.healthy.test",
    tls=True,
    dkim="sign",
    expect=frozenset(),
    about="healthy.test's submission server relays alice's mail, signed",
    ptr="smtp.healthy.test",
    hosts={"smtp": "127.1.1.10"},
    spf="v=spf1 mx a:smtp.healthy.test -all",
)

# Every Sender the lab's Postfix sends as, and the domains OpenDKIM signs for.
ALL_SENDERS: tuple[Sender, ...] = (*SENDERS, HEALTHY_SENDER)
SIGNING_DOMAINS: tuple[str, ...] = tuple(s.domain for s in ALL_SENDERS if s.dkim != "none")


def sender(domain: str) -> Sender:
    """The Sender of a domain ("send-ok.test", or "healthy.test")."""
    for entry in ALL_SENDERS:
        if entry.domain == domain:
            return entry
    raise KeyError(f"no lab sender for {domain!r}")
