"""The lab's DNS scenarios: one broken domain per finding code, and a healthy one.

Each scenario is a zone (records relative to its origin) with the reverse
(PTR) entries for its addresses and the finding codes, at info or above, that
a check of it must report: exactly these, no more. Integration tests iterate
over SCENARIOS; `python -m tests.lab up` serves `all_zones()`.

The send test's domains are zones here too, made from tests/lab/senders.py:
SENDER_SCENARIOS (one per Sender; their `expect` is what the send test's
receiver reports about mail from that sender, not what `mailcheck check`
says) and RECEIVER (sendtest.test). They are served, but in no list that
check tests iterate.

Address plan (all on 127.1.0.0/16, reverse zone 1.127.in-addr.arpa):
127.1.0.53 lab NSD (ns.test., every zone); 127.1.0.54 the stale secondary (a
second NSD serving only an older copy of dns-stale.test, REFUSED for the
rest); 127.1.0.55 the parent-only NSD (ns-parent.test., serving only test.,
so it refers every child name); 127.1.0.56 a nameserver where nothing
listens; 127.1.0.60 the stale-cache resolver stand-in (tests/lab/cachedns.py,
run by the tests); 127.1.1.x healthy.test (127.1.1.10, its submission server,
also sends its mail to the send test's receiver); 127.1.2.x-127.1.5.x one
block per broken scenario; 127.1.6.x DNSBL scenarios; 127.1.7.x the lab's
nginx; 127.1.8.x the nameserver-consistency scenarios' MX hosts; 127.1.9.x
the IDN scenario; 127.1.20.x-127.1.23.x the mail-server
scenarios (tests/lab/mail.py); 127.1.24.x hostile submission servers run by the
tests (HOSTILE_SUBMISSION); 127.1.40.x the send test: 127.1.40.1-.11 one
sending server per Sender, 127.1.40.25 the receiver (mx.sendtest.test, run by
the tests), 127.1.40.99 where send-ptrmismatch.test's PTR name points,
127.1.40.100 the lab's OpenDKIM milter, 127.1.40.200 an address some SPF
records allow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import clients
from .dkim import txt_record
from .mail import SUB_CLEARTEXT_ADDRESS
from .nsd import SOA_MNAME, SOA_SERIAL, Zone
from .pki import CertSpec
from .senders import (
    DKIM_SELECTOR,
    HEALTHY_SENDER,
    RECEIVER_ADDRESS,
    RECEIVER_DOMAIN,
    RECEIVER_HOST,
    SENDERS,
    Sender,
)
from .web import Site

NS_ADDRESS = "127.1.0.53"
NS_NAME = SOA_MNAME  # ns.test.: the lab NSD, serving every zone
REVERSE_ZONE = "1.127.in-addr.arpa"
# More nameservers, for the consistency scenarios below (control.Lab runs them).
STALE_NS_ADDRESS = "127.1.0.54"  # an NSD serving only stale_zone()
PARENT_NS_ADDRESS = "127.1.0.55"  # an NSD serving only test. (ns-parent.test.)
PARENT_NS_NAME = "ns-parent.test."
UNREACHABLE_NS_ADDRESS = "127.1.0.56"  # nothing listens


@dataclass(frozen=True)
class Scenario:
    domain: str  # as a user would type it
    expect: frozenset[str]  # codes of every finding above `ok`
    records: tuple[str, ...] | None = None  # None: no zone at all
    ptr: dict[str, str] = field(default_factory=dict)  # address -> PTR name
    about: str = ""
    # TLSA records (owner relative to the zone, lab certificate name, usage
    # selector type), computed from that certificate when the lab starts: see
    # control.tlsa_data.
    tlsa: tuple[tuple[str, str, str], ...] = ()
    # What the lab's nginx serves for this scenario: (host, path, body), and
    # where it redirects (302): ("host/path", Location).
    web: tuple[tuple[str, str, str], ...] = ()
    redirects: tuple[tuple[str, str], ...] = ()
    # DNSSEC: "signed", "unsigned", or a breakage tests/lab/signing.py makes.
    dnssec: str = "signed"
    # Publish the key the lab's OpenDKIM signs this domain's mail with at
    # DKIM_SELECTOR._domainkey, made when the lab starts (tests/lab/dkim.py).
    lab_dkim: bool = False
    # The NS set test. delegates this zone to: name -> its glue address in
    # test., or None for a name that needs no glue (ns.test. has its own A
    # there). The zone's own apex NS set is in `records` (default: ns.test.).
    delegation: dict[str, str | None] = field(default_factory=lambda: {NS_NAME: None})


@functools.cache
def dkim_record(bits: int = 2048) -> str:
    """A DKIM key TXT record (zone-file text, split into <=200-character strings),
    made once per process: public keys are not secrets, but none is committed.
    Nothing signs with these; the lab's signing keys are in tests/lab/dkim.py."""
    return txt_record(rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key())


def _scenario(
    domain: str,
    expect: set[str],
    records: list[str],
    ptr: dict[str, str] | None = None,
    about: str = "",
    **more: Any,
) -> Scenario:
    return Scenario(domain, frozenset(expect), tuple(records), dict(ptr or {}), about, **more)


def _reversed(address: str) -> str:
    """127.1.40.11 as a DNSBL owner name: 11.40.1.127."""
    return ".".join(reversed(address.split(".")))


# -- MTA-STS: policies served by the lab's nginx (tests/lab/web.py) ----------------------
WEB_ADDRESS = "127.1.7.1"  # HTTPS and HTTP with a certificate for every lab web host
WEB_EXPIRED_ADDRESS = "127.1.7.3"  # HTTPS with an expired certificate
WEB_NOTHING_ADDRESS = "127.1.7.2"  # nothing listens
STS_PATH = "/.well-known/mta-sts.txt"
STS_ID = "2026112501"


def sts_policy(*mx: str, mode: str = "enforce", max_age: int = 604800) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def _mtasts(domain: str, policy: str | None, address: str = WEB_ADDRESS) -> dict[str, Any]:
    """Records and web file of an MTA-STS setup (policy None: announced, not served)."""
    web = ((f"mta-sts.{domain}", STS_PATH, policy),) if policy is not None else ()
    return {
        "records": [f'_mta-sts IN TXT "v=STSv1; id={STS_ID}"', f"mta-sts IN A {address}"],
        "web": web,
    }


_HEALTHY = _scenario(
    "healthy.test",
    set(),
    [
        "@ IN MX 10 mx1",
        "@ IN MX 20 mx2",
        "mx1 IN A 127.1.1.1",
        "mx2 IN A 127.1.1.2",
        "smtp IN A 127.1.1.10",
        "imap IN A 127.1.1.11",
        f"autoconfig IN A {WEB_ADDRESS}",
        f"autodiscover IN A {WEB_ADDRESS}",
        "_submission._tcp IN SRV 0 1 587 smtp",
        "_submissions._tcp IN SRV 0 1 465 smtp",
        "_imap._tcp IN SRV 10 1 143 imap",
        "_imaps._tcp IN SRV 0 1 993 imap",
        "_pop3._tcp IN SRV 10 1 110 imap",
        "_pop3s._tcp IN SRV 0 1 995 imap",
        f'@ IN TXT "{HEALTHY_SENDER.spf}"',  # mx, and the submission server: it sends
        '@ IN TXT "mailconf=https://autoconfig.healthy.test/mail/config-v1.1.xml"',
        '_dmarc IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@healthy.test"',
        f"mail._domainkey IN TXT {dkim_record()}",
        '_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@healthy.test"',
        *_mtasts("healthy.test", "")["records"],
    ],
    {
        "127.1.1.1": "mx1.healthy.test",
        "127.1.1.2": "mx2.healthy.test",
        HEALTHY_SENDER.address: "smtp.healthy.test",  # its HELO name too
    },
    "two MX hosts with confirmed reverse DNS, SRV records, a valid mailconf, MTA-STS "
    "enforced, a signed zone and DANE TLSA for both MX hosts; its submission server "
    "sends mail out, signed by the lab's OpenDKIM",
    tlsa=(
        ("_25._tcp.mx1", "mx1.healthy.test", "3 1 1"),  # DANE-EE: the server's key
        ("_25._tcp.mx2", "mx2.healthy.test", "2 0 1"),  # DANE-TA: the lab intermediate
    ),
    web=(
        (
            "mta-sts.healthy.test",
            STS_PATH,
            sts_policy("mx1.healthy.test", "*.healthy.test"),
        ),
        (
            "autoconfig.healthy.test",
            clients.AUTOCONFIG_PATH,
            clients.autoconfig_xml("healthy.test"),
        ),
        ("autodiscover.healthy.test", clients.AUTODISCOVER_PATH, clients.autodiscover_xml()),
        ("autoconfig.healthy.test", "/healthy.mobileconfig", clients.mobileconfig("healthy.test")),
        (
            "autoconfig.healthy.test",
            "/broken.mobileconfig",
            clients.mobileconfig("healthy.test").replace("com.apple.mail.managed", "x.y"),
        ),
    ),
    lab_dkim=True,
)

SCENARIOS: tuple[Scenario, ...] = (
    _HEALTHY,
    Scenario(
        "nonexistent.test",
        frozenset({"dns.domain.nxdomain"}),
        about="no such name in the test. zone: NXDOMAIN",
    ),
    Scenario(
        "outside.invalid",
        frozenset({"dns.resolver.failure"}),
        about="not served by the lab: the server answers REFUSED",
    ),
    _scenario(
        "nomx.test",
        {"mx.none", "srv.missing"},
        ["@ IN A 127.1.2.1"],
        {"127.1.2.1": "nomx.test"},
        "no MX; the implicit MX (the domain's A record) works",
    ),
    _scenario(
        "nomail.test",
        {"mx.implicit.missing"},
        ['@ IN TXT "nothing here"'],
        about="neither MX nor address",
    ),
    _scenario("nullmx.test", {"mx.null"}, ["@ IN MX 0 ."], about="RFC 7505 null MX"),
    _scenario(
        "nullmixed.test",
        {"mx.null.mixed", "srv.missing"},
        ["@ IN MX 0 .", "@ IN MX 10 mx", "mx IN A 127.1.2.10"],
        {"127.1.2.10": "mx.nullmixed.test"},
        "null MX beside a real one",
    ),
    _scenario(
        "mxcname.test",
        {"mx.cname", "srv.missing"},
        ["@ IN MX 10 mail", "mail IN CNAME host", "host IN A 127.1.3.1"],
        {"127.1.3.1": "host.mxcname.test"},
        "the MX target is an alias",
    ),
    _scenario(
        "mxnoaddr.test",
        {"mx.host.unresolvable", "srv.missing"},
        ["@ IN MX 10 mx1", "@ IN MX 20 ghost", 'mx1 IN TXT "no address here"'],
        about="one MX host exists without an address, the other does not exist",
    ),
    _scenario(
        "mxliteral.test",
        {"mx.ip_literal", "srv.missing"},
        ["@ IN MX 10 127.1.3.20."],
        about="an address written as the MX target",
    ),
    _scenario(
        "mxprivate.test",
        {"mx.address.private", "srv.missing"},
        [
            "@ IN MX 10 mx",
            "@ IN MX 20 lo",
            "mx IN A 10.0.0.25",
            "mx IN AAAA 2001:db8::25",
            "lo IN A 127.0.0.1",
        ],
        about="MX hosts on RFC 1918, documentation and loopback addresses outside the lab",
    ),
    _scenario(
        "ptrmissing.test",
        {"ptr.missing", "srv.missing"},
        ["@ IN MX 10 mx", "mx IN A 127.1.4.1"],
        about="no PTR for the MX address",
    ),
    _scenario(
        "ptrmismatch.test",
        {"ptr.mismatch", "srv.missing"},
        ["@ IN MX 10 mx", "mx IN A 127.1.4.2", "other IN A 127.1.4.99"],
        {"127.1.4.2": "other.ptrmismatch.test"},
        "the PTR name resolves to another address",
    ),
    _scenario(
        "srvbroken.test",
        {"srv.target.unresolvable"},
        [
            "@ IN MX 10 mx",
            "mx IN A 127.1.5.1",
            "_imaps._tcp IN SRV 0 1 993 imap",
            "_submissions._tcp IN SRV 0 1 465 mx",
        ],
        {"127.1.5.1": "mx.srvbroken.test"},
        "an SRV target without an address",
    ),
    _scenario(
        "mailconfhttp.test",
        {"mailconf.invalid", "srv.missing"},
        [
            "@ IN MX 10 mx",
            "mx IN A 127.1.5.10",
            '@ IN TXT "mailconf=http://autoconfig.mailconfhttp.test/mail/config-v1.1.xml"',
        ],
        {"127.1.5.10": "mx.mailconfhttp.test"},
        "mailconf URL over plain http",
    ),
    _scenario(
        "inject.test",
        {"mailconf.invalid", "srv.missing"},
        [
            "@ IN MX 10 mx1.healthy.test.",
            '@ IN TXT "mailconf=http://<!channel>&<@U0123ABC>|<https://evil.example|x>"',
        ],
        about="a TXT record that tries to ping the channel from a Slack report",
    ),
    _scenario(
        "xn--bcher-kva.test",
        {"srv.missing"},
        ["@ IN MX 10 mx", "mx IN A 127.1.9.1"],
        {"127.1.9.1": "mx.xn--bcher-kva.test"},
        "an internationalised domain (bücher.test)",
    ),
)

# -- mail servers: Postfix and Dovecot listeners from tests/lab/mail.py --------------
# These expect the codes of a full check (every stage). Each MX scenario declares
# the client services absent (SRV target "."), so only port 25 speaks; each
# mailbox scenario borrows healthy.test's MX and submission server.

NO_CLIENT_SERVICES = tuple(
    f"{service} IN SRV 0 0 0 ."
    for service in (
        "_submission._tcp",
        "_submissions._tcp",
        "_imap._tcp",
        "_imaps._tcp",
        "_pop3._tcp",
        "_pop3s._tcp",
    )
)
BORROWED_MX = (
    "@ IN MX 10 mx1.healthy.test.",
    "_submission._tcp IN SRV 0 1 587 smtp.healthy.test.",
    "_submissions._tcp IN SRV 0 1 465 smtp.healthy.test.",
)


def _mx_case(
    domain: str,
    address: str,
    expect: set[str],
    about: str,
    extra: tuple[str, ...] = NO_CLIENT_SERVICES,
) -> Scenario:
    return _scenario(
        domain,
        expect,
        ["@ IN MX 10 mx", f"mx IN A {address}", *extra],
        {address: f"mx.{domain}"},
        about,
    )


def _mailbox_case(
    domain: str, address: str, expect: set[str], about: str, services: dict[str, int | None]
) -> Scenario:
    """services: SRV name -> port, or None for "declared absent"."""
    records = [*BORROWED_MX, f"imap IN A {address}"]
    for name in ("_imap._tcp", "_imaps._tcp", "_pop3._tcp", "_pop3s._tcp"):
        port = services.get(name)
        records.append(f"{name} IN SRV 0 1 {port} imap" if port else f"{name} IN SRV 0 0 0 .")
    return _scenario(domain, expect, records, about=about)


MAIL_SCENARIOS: tuple[Scenario, ...] = (
    _HEALTHY,
    _mx_case(
        "smtp-refused.test",
        "127.1.20.1",
        {"smtp.connect.refused"},
        "nothing listens on the MX's port 25",
    ),
    _mx_case(
        "smtp-timeout.test",
        "127.1.20.2",
        {"smtp.connect.timeout"},
        "port 25 filtered (iptables DROP)",
    ),
    _mx_case(
        "smtp-stall.test",
        "127.1.20.3",
        {"smtp.banner.timeout"},
        "accepts, never greets (a fake server run by the test)",
    ),
    _mx_case(
        "smtp-reject.test",
        "127.1.20.4",
        {"smtp.banner.rejected"},
        "greets with a rejection instead of 220",
    ),
    _mx_case(
        "smtp-name.test",
        "127.1.20.5",
        {"smtp.hostname.mismatch"},
        "calls itself elsewhere.example.net",
    ),
    _mx_case("smtp-notls.test", "127.1.20.6", {"smtp.starttls.missing"}, "no STARTTLS"),
    _mx_case(
        "smtp-tlsfail.test",
        "127.1.20.7",
        {"smtp.starttls.failed"},
        "advertises STARTTLS, then refuses it",
    ),
    _mx_case(
        "smtp-authplain.test",
        "127.1.20.8",
        {"smtp.auth.before_tls"},
        "AUTH PLAIN LOGIN before STARTTLS",
    ),
    _mx_case(
        "sub-missing.test",
        "127.1.20.9",
        {"submission.missing"},
        "no SRV records, nothing on 587/465 of the MX",
        (
            "_imap._tcp IN SRV 0 0 0 .",
            "_imaps._tcp IN SRV 0 0 0 .",
            "_pop3._tcp IN SRV 0 0 0 .",
            "_pop3s._tcp IN SRV 0 0 0 .",
        ),
    ),
    _mx_case("tls-expired.test", "127.1.21.1", {"tls.cert.expired"}, "expired two days ago"),
    _mx_case("tls-future.test", "127.1.21.2", {"tls.cert.not_yet_valid"}, "valid in 5 days"),
    _mx_case("tls-expiring.test", "127.1.21.3", {"tls.cert.expiring"}, "expires in 10 days"),
    _mx_case(
        "tls-wrongname.test",
        "127.1.21.4",
        {"tls.cert.hostname_mismatch"},
        "certificate for other.example.net",
    ),
    _mx_case("tls-selfsigned.test", "127.1.21.5", {"tls.cert.untrusted"}, "self-signed"),
    _mx_case(
        "tls-nochain.test", "127.1.21.6", {"tls.cert.chain_incomplete"}, "intermediate not sent"
    ),
    _mx_case(
        "tls-unknownca.test",
        "127.1.21.7",
        {"tls.cert.untrusted"},
        "issued by an untrusted CA, chain sent",
    ),
    _mx_case("tls-legacy.test", "127.1.21.8", {"tls.protocol.legacy"}, "accepts TLS 1.0 and 1.1"),
    _mx_case(
        "tls-weakcipher.test",
        "127.1.21.9",
        {"tls.cipher.weak"},
        "only AES128-SHA: static RSA, no forward secrecy (Debian 12 has no 3DES)",
    ),
    _mx_case("tls-weakkey.test", "127.1.21.10", {"tls.key.weak"}, "RSA 1024 key"),
    _mx_case(
        "tls-plain465.test",
        "127.1.21.11",
        {"tls.handshake.failed"},
        "port 465 speaks plain SMTP instead of TLS",
        (
            "_submission._tcp IN SRV 0 0 0 .",
            "_submissions._tcp IN SRV 0 1 465 mx",
            "_imap._tcp IN SRV 0 0 0 .",
            "_imaps._tcp IN SRV 0 0 0 .",
            "_pop3._tcp IN SRV 0 0 0 .",
            "_pop3s._tcp IN SRV 0 0 0 .",
        ),
    ),
    _scenario(
        "sub-refused.test",
        {"submission.connect.refused"},
        [
            "@ IN MX 10 mx1.healthy.test.",
            "smtp IN A 127.1.23.1",
            "_submission._tcp IN SRV 0 1 587 smtp",
            "_submissions._tcp IN SRV 0 1 465 smtp",
            *NO_CLIENT_SERVICES[2:],
        ],
        about="submission advertised by SRV, nothing listens",
    ),
    _scenario(
        "sub-timeout.test",
        {"submission.connect.timeout"},
        [
            "@ IN MX 10 mx1.healthy.test.",
            "smtp IN A 127.1.23.2",
            "_submissions._tcp IN SRV 0 1 465 smtp",
            *NO_CLIENT_SERVICES[2:],
        ],
        about="submission advertised by SRV, filtered",
    ),
    _mailbox_case(
        "imap-refused.test",
        "127.1.23.1",
        {"imap.connect.refused"},
        "IMAPS advertised, nothing listens",
        {"_imaps._tcp": 993},
    ),
    _mailbox_case(
        "imap-timeout.test",
        "127.1.23.2",
        {"imap.connect.timeout"},
        "IMAP advertised, filtered",
        {"_imap._tcp": 143, "_imaps._tcp": 993},
    ),
    _mailbox_case(
        "imap-notls.test",
        "127.1.23.3",
        {
            "imap.starttls.missing",
            "imap.auth.before_tls",
            "pop3.starttls.missing",
            "pop3.auth.before_tls",
        },
        "IMAP and POP3 without TLS",
        {"_imap._tcp": 143, "_pop3._tcp": 110},
    ),
    _mailbox_case(
        "imap-plain.test",
        "127.1.23.4",
        {"imap.auth.before_tls", "pop3.auth.before_tls"},
        "STARTTLS offered, but passwords accepted before it",
        {"_imap._tcp": 143, "_imaps._tcp": 993, "_pop3._tcp": 110, "_pop3s._tcp": 995},
    ),
    _scenario(
        "imap-missing.test",
        {"imap.missing"},
        list(BORROWED_MX),
        about="no IMAP SRV records, no imap./mail. hosts",
    ),
    _mailbox_case(
        "pop3-refused.test",
        "127.1.23.5",
        {"pop3.connect.refused"},
        "POP3S advertised, nothing listens",
        {"_pop3s._tcp": 995},
    ),
    _mailbox_case(
        "pop3-timeout.test",
        "127.1.23.6",
        {"pop3.connect.timeout"},
        "POP3 advertised, filtered",
        {"_pop3._tcp": 110},
    ),
    _mailbox_case(
        "imap-expired.test",
        "127.1.23.9",
        {"tls.cert.expired"},
        "expired certificate on IMAP: an error, unlike on port 25",
        {"_imap._tcp": 143, "_imaps._tcp": 993},
    ),
)

# Port 25 held against what the domain publishes: DANE TLSA and MTA-STS enforce.
# Each borrows an MX listener of another scenario (no PTR of its own).
MAIL_SCENARIOS += (
    _scenario(
        "dane-mismatch.test",
        {"dane.tlsa.mismatch", "tls.cert.hostname_mismatch"},
        ["@ IN MX 10 mx", "mx IN A 127.1.1.1", *NO_CLIENT_SERVICES],
        about="the TLSA record is for another key than the one mx1.healthy.test serves",
        tlsa=(("_25._tcp.mx", "mx2.healthy.test", "3 1 1"),),
    ),
    _scenario(
        "dane-notls.test",
        {"smtp.starttls.missing", "dane.tls.unavailable"},
        ["@ IN MX 10 mx", "mx IN A 127.1.20.6", *NO_CLIENT_SERVICES],
        about="TLSA records for an MX without STARTTLS",
        tlsa=(("_25._tcp.mx", "mx1.healthy.test", "3 1 1"),),
    ),
    _scenario(
        "mtasts-enforce.test",
        {"tls.cert.expired"},
        [
            "@ IN MX 10 mx.tls-expired.test.",
            *NO_CLIENT_SERVICES,
            *_mtasts("mtasts-enforce.test", "")["records"],
        ],
        about="MTA-STS enforce over an MX whose certificate expired: an error, not a warning",
        web=(("mta-sts.mtasts-enforce.test", STS_PATH, sts_policy("mx.tls-expired.test")),),
    ),
    _scenario(
        "mtasts-notls.test",
        {"smtp.starttls.missing", "mtasts.tls.unavailable"},
        [
            "@ IN MX 10 mx.smtp-notls.test.",
            *NO_CLIENT_SERVICES,
            *_mtasts("mtasts-notls.test", "")["records"],
        ],
        about="MTA-STS enforce over an MX without STARTTLS",
        web=(("mta-sts.mtasts-notls.test", STS_PATH, sts_policy("mx.smtp-notls.test")),),
    ),
)

# -- mail policy: SPF, DMARC, DKIM, TLS-RPT in DNS (checked with the policy stage only) ------------
# Each borrows healthy.test's MX (127.1.1.1), so "is the MX permitted" has an answer.


_DEFAULT_STS = sts_policy("mx1.healthy.test")


def _policy_case(
    domain: str,
    expect: set[str],
    about: str,
    *records: str,
    mx: str = "mx1.healthy.test.",
    spf: str | None = "v=spf1 mx -all",
    dmarc: str | None = "v=DMARC1; p=reject; rua=mailto:dmarc@{d}",
    dkim: bool = True,
    mtasts: str | None = _DEFAULT_STS,  # the policy served; None: no MTA-STS at all
    mtasts_address: str = WEB_ADDRESS,
    **more: Any,
) -> Scenario:
    """A domain whose policies are all in order (SPF, DMARC, DKIM, MTA-STS,
    DNSSEC) but for what the arguments change."""
    lines = [f"@ IN MX 10 {mx}", *records]
    if dkim:
        lines.append(f"s1._domainkey IN TXT {dkim_record()}")
    if spf:
        lines.append(f'@ IN TXT "{spf}"')
    if dmarc:
        lines.append(f'_dmarc IN TXT "{dmarc.format(d=domain)}"')
    web: tuple[tuple[str, str, str], ...] = ()
    if mtasts is not None:
        sts = _mtasts(domain, mtasts or None, mtasts_address)
        lines += sts["records"]
        web = sts["web"]
    return _scenario(domain, expect, lines, about=about, web=web, **more)


POLICY_SCENARIOS: tuple[Scenario, ...] = (
    _policy_case("spf-missing.test", {"spf.missing"}, "no SPF record", spf=None),
    _policy_case(
        "spf-multiple.test",
        {"spf.multiple"},
        "two SPF records",
        '@ IN TXT "v=spf1 ip4:192.0.2.1 -all"',
    ),
    _policy_case(
        "spf-syntax.test",
        {"spf.syntax"},
        "an unknown mechanism",
        spf="v=spf1 mx frob:example.net -all",
    ),
    _policy_case(
        "spf-lookups.test",
        {"spf.lookups.exceeded"},
        "11 DNS-querying terms",
        *(f"h{i} IN A 192.0.2.{i}" for i in range(1, 12)),
        spf="v=spf1 " + " ".join(f"a:h{i}.spf-lookups.test" for i in range(1, 12)) + " -all",
    ),
    _policy_case(
        "spf-void.test",
        {"spf.void_lookups.exceeded"},
        "three names without records",
        spf="v=spf1 a:v1.spf-void.test a:v2.spf-void.test a:v3.spf-void.test mx -all",
    ),
    _policy_case(
        "spf-plusall.test", {"spf.all.permissive"}, "+all lets anyone send", spf="v=spf1 mx +all"
    ),
    _policy_case(
        "spf-include.test",
        {"spf.include.missing"},
        "include of a domain without SPF",
        "nospf IN A 192.0.2.9",
        spf="v=spf1 mx include:nospf.spf-include.test -all",
    ),
    _policy_case(
        "spf-mx.test",
        {"spf.mx.not_permitted"},
        "the MX is not an allowed sender",
        spf="v=spf1 ip4:192.0.2.1 -all",
    ),
    _policy_case("dmarc-missing.test", {"dmarc.missing"}, "no DMARC record", dmarc=None),
    _policy_case(
        "dmarc-multiple.test",
        {"dmarc.multiple"},
        "two DMARC records",
        '_dmarc IN TXT "v=DMARC1; p=none"',
    ),
    _policy_case(
        "dmarc-syntax.test", {"dmarc.syntax"}, "p=block is no policy", dmarc="v=DMARC1; p=block"
    ),
    _policy_case(
        "dmarc-none.test",
        {"dmarc.policy.none"},
        "monitoring only",
        dmarc="v=DMARC1; p=none; rua=mailto:dmarc@{d}",
    ),
    _policy_case(
        "dmarc-rua.test",
        {"dmarc.rua.unauthorized"},
        "reports to another domain that has not agreed",
        dmarc="v=DMARC1; p=reject; rua=mailto:dmarc@reports.test",
    ),
    _policy_case(
        "dmarc-weak.test",
        {
            "dmarc.pct.partial",
            "dmarc.testing",
            "dmarc.subdomain.weaker",
            "dmarc.rua.missing",
            "dmarc.reporting.odd",
        },
        "p=reject, but for half the mail, in testing mode, not for subdomains, and unseen",
        dmarc="v=DMARC1; p=reject; sp=none; pct=50; t=y; fo=1; ri=3600",
    ),
    _policy_case(
        "dkim-none.test", {"dkim.none_found"}, "no key at any common selector", dkim=False
    ),
    _policy_case(
        "dkim-invalid.test",
        {"dkim.key.invalid"},
        "a key that is not base64",
        'google._domainkey IN TXT "v=DKIM1; k=rsa; p=not*base64!"',
        dkim=False,
    ),
    _policy_case(
        "dkim-weak.test",
        {"dkim.key.weak"},
        "a 1024-bit RSA key",
        f"k1._domainkey IN TXT {dkim_record(1024)}",
        dkim=False,
    ),
    _policy_case(
        "dkim-revoked.test",
        {"dkim.key.revoked"},
        "a retired selector",
        'selector1._domainkey IN TXT "v=DKIM1; p="',
    ),
    _policy_case(
        "dnsbl-listed.test",
        {"dnsbl.listed"},
        "its MX address is on the lab blocklist (bl.test)",
        "mx IN A 127.1.6.1",
        mx="mx",
        mtasts=sts_policy("mx.dnsbl-listed.test"),
    ),
    _policy_case(
        "dnsbl-refused.test",
        {"dnsbl.inconclusive"},
        "the blocklist answers 127.255.255.254 (refused), which is no listing",
        "mx IN A 127.1.6.2",
        mx="mx",
        mtasts=sts_policy("mx.dnsbl-refused.test"),
    ),
    _policy_case(
        "tlsrpt-invalid.test",
        {"tlsrpt.invalid"},
        "reports to an ftp: URI",
        '_smtp._tls IN TXT "v=TLSRPTv1; rua=ftp://reports.tlsrpt-invalid.test"',
    ),
    # MTA-STS
    _policy_case("mtasts-missing.test", {"mtasts.missing"}, "no MTA-STS at all", mtasts=None),
    _policy_case(
        "mtasts-record.test",
        {"mtasts.record.invalid"},
        "an id with punctuation in the _mta-sts record",
        '_mta-sts IN TXT "v=STSv1; id=2026-11-25!"',
        mtasts=None,
    ),
    _policy_case(
        "mtasts-unreachable.test",
        {"mtasts.policy.unreachable"},
        "nothing listens on mta-sts.<domain>:443",
        mtasts_address=WEB_NOTHING_ADDRESS,
    ),
    _policy_case(
        "mtasts-badcert.test",
        {"mtasts.policy.unreachable"},
        "the policy host's certificate expired",
        mtasts_address=WEB_EXPIRED_ADDRESS,
    ),
    _policy_case(
        "mtasts-404.test",
        {"mtasts.policy.unreachable"},
        "the web server has no policy file (HTTP 404)",
        mtasts="",
    ),
    _policy_case(
        "mtasts-invalid.test",
        {"mtasts.policy.invalid"},
        "mode: block is no mode",
        mtasts=sts_policy("mx1.healthy.test", mode="block"),
    ),
    _policy_case(
        "mtasts-mx.test",
        {"mtasts.mx.not_covered"},
        "the policy names another MX",
        mtasts=sts_policy("mail.elsewhere.test"),
    ),
    _policy_case(
        "mtasts-testing.test",
        {"mtasts.mode.testing"},
        "a policy in testing mode",
        mtasts=sts_policy("mx1.healthy.test", mode="testing"),
    ),
    # DNSSEC
    _policy_case(
        "dnssec-unsigned.test", {"dnssec.unsigned"}, "a zone without DNSSEC", dnssec="unsigned"
    ),
    _policy_case(
        "dnssec-expired.test", {"dnssec.bogus"}, "every signature expired", dnssec="expired"
    ),
    _policy_case(
        "dnssec-badsig.test", {"dnssec.bogus"}, "the MX signature was altered", dnssec="badsig"
    ),
    _policy_case(
        "dnssec-dsmismatch.test",
        {"dnssec.bogus"},
        "the parent's DS names a key the zone does not publish",
        dnssec="ds-mismatch",
    ),
    # DANE records in DNS (matching them against the server is a TLS-stage scenario)
    _policy_case(
        "dane-unsigned.test",
        {"dane.tlsa.unsigned", "dnssec.unsigned"},
        "TLSA records in a zone without DNSSEC",
        "mx IN A 127.1.1.1",
        mx="mx",
        mtasts=sts_policy("mx.dane-unsigned.test"),
        dnssec="unsigned",
        tlsa=(("_25._tcp.mx", "mx1.healthy.test", "3 1 1"),),
    ),
    _policy_case(
        "dane-unusable.test",
        {"dane.tlsa.unusable"},
        "only a PKIX-EE(1) record, which SMTP senders ignore",
        "mx IN A 127.1.1.1",
        "_25._tcp.mx IN TLSA 1 1 1 " + "ab" * 32,
        mx="mx",
        mtasts=sts_policy("mx.dane-unusable.test"),
    ),
)

# -- nameserver consistency (DNS stage): each zone's nameservers queried directly --------
# Every zone here is unsigned, so the stale copy on STALE_NS_ADDRESS needs no
# keys of its own, and declares the client services absent (no srv.* finding);
# each MX host has an address on 127.1.8.x with a confirming PTR.


def _ns_records(
    apex: Iterable[str], mx: str, mx_hosts: dict[str, str], ns_hosts: dict[str, str]
) -> tuple[str, ...]:
    """Zone lines: the apex NS set (absolute names), `@ MX 10 mx`, the MX hosts'
    addresses (relative names) and the in-zone nameservers' (absolute names)."""
    return (
        *(f"@ IN NS {name}" for name in apex),
        f"@ IN MX 10 {mx}",
        *(f"{host} IN A {address}" for host, address in mx_hosts.items()),
        *(f"{name} IN A {address}" for name, address in ns_hosts.items()),
        *NO_CLIENT_SERVICES,
    )


def _ns_case(
    domain: str,
    expect: set[str],
    about: str,
    *,
    apex: tuple[str, ...],
    mx_hosts: dict[str, str],
    mx: str,
    ns_hosts: dict[str, str] | None = None,
    delegation: tuple[str, ...] | None = None,
) -> Scenario:
    """A zone whose apex NS set is `apex`; test. delegates it to `delegation`
    (default: the same set), with glue from `ns_hosts` for in-zone names."""
    ns_hosts = ns_hosts or {}
    return _scenario(
        domain,
        expect,
        list(_ns_records(apex, mx, mx_hosts, ns_hosts)),
        {address: f"{host}.{domain}" for host, address in mx_hosts.items()},
        about,
        dnssec="unsigned",
        delegation={name: ns_hosts.get(name) for name in delegation or apex},
    )


_STALE_APEX = (NS_NAME, "ns2.dns-stale.test.")
_STALE_MX_HOSTS = {"mx-new": "127.1.8.1", "mx-old": "127.1.8.2"}
_STALE_NS_HOSTS = {"ns2.dns-stale.test.": STALE_NS_ADDRESS}

SCENARIOS += (
    _ns_case(
        "dns-stale.test",
        {"dns.ns.serial_mismatch", "dns.ns.records_differ"},
        "the secondary ns2 missed the last update: SOA serial one lower, MX still mx-old",
        apex=_STALE_APEX,
        mx_hosts=_STALE_MX_HOSTS,
        mx="mx-new",
        ns_hosts=_STALE_NS_HOSTS,
    ),
    _ns_case(
        "dns-lame.test",
        {"dns.ns.lame"},
        "a listed nameserver serves only test., so it refers back instead of answering (no AA)",
        apex=(NS_NAME, "ns.dns-lame.test."),
        mx_hosts={"mx": "127.1.8.11"},
        mx="mx",
        ns_hosts={"ns.dns-lame.test.": PARENT_NS_ADDRESS},
    ),
    _ns_case(
        "dns-refused.test",
        {"dns.ns.refused"},
        "a listed nameserver does not serve the zone: it answers REFUSED",
        apex=(NS_NAME, "ns.dns-refused.test."),
        mx_hosts={"mx": "127.1.8.21"},
        mx="mx",
        ns_hosts={"ns.dns-refused.test.": STALE_NS_ADDRESS},
    ),
    _ns_case(
        "dns-unreachable.test",
        {"dns.ns.unreachable"},
        "a listed nameserver's address has nothing listening",
        apex=(NS_NAME, "ns.dns-unreachable.test."),
        mx_hosts={"mx": "127.1.8.31"},
        mx="mx",
        ns_hosts={"ns.dns-unreachable.test.": UNREACHABLE_NS_ADDRESS},
    ),
    _ns_case(
        "dns-parentchild.test",
        {"dns.ns.parent_child_mismatch"},
        "test. delegates to ns.test. and ns-extra (which answers), the zone lists only ns.test.",
        apex=(NS_NAME,),
        mx_hosts={"mx": "127.1.8.41"},
        mx="mx",
        # In the zone too, so the name resolves, but not in its apex NS set.
        ns_hosts={"ns-extra.dns-parentchild.test.": NS_ADDRESS},
        delegation=(NS_NAME, "ns-extra.dns-parentchild.test."),
    ),
    _ns_case(
        "dns-privatens.test",
        {"dns.ns.address.private"},
        "a listed nameserver has a private address (10.53.0.1): the target policy, which "
        "allows only the lab's network, keeps the check from ever sending it a packet",
        apex=(NS_NAME, "ns.dns-privatens.test."),
        mx_hosts={"mx": "127.1.8.61"},
        mx="mx",
        ns_hosts={"ns.dns-privatens.test.": "10.53.0.1"},
    ),
)


def stale_zone() -> Zone:
    """What the stale secondary (STALE_NS_ADDRESS) serves: dns-stale.test as it
    was one update ago, serial one lower and the MX still on mx-old."""
    records = _ns_records(_STALE_APEX, "mx-old", _STALE_MX_HOSTS, _STALE_NS_HOSTS)
    return Zone("dns-stale.test", records, serial=SOA_SERIAL - 1)


# A resolver's cache (tests/lab/cachedns.py, on CACHE_RESOLVER_ADDRESS) still
# holds the MX this healthy zone had before it moved to mx-new, with
# CACHE_STALE_TTL seconds left. Not in SCENARIOS: only a check through that
# stand-in sees the difference.
CACHE_RESOLVER_ADDRESS = "127.1.0.60"
CACHE_STALE_MX = "10 mx-old.dns-cache.test."
CACHE_STALE_TTL = 2460
CACHE_SCENARIO = _ns_case(
    "dns-cache.test",
    set(),
    "healthy at its nameserver; the stale-cache resolver stand-in still serves its old MX",
    apex=(NS_NAME,),
    mx_hosts={"mx-new": "127.1.8.51", "mx-old": "127.1.8.52"},
    mx="mx-new",
)

# -- client autoconfiguration (checked with the autoconfig stage only) --------------------
# Each has its own MX name (so Thunderbird's MX-based lookup stays in the
# domain), a good autoconfig and autodiscover on the lab's nginx unless the
# scenario replaces one, and the healthy.test mail servers behind them.
WEB_HTTP_ONLY_ADDRESS = "127.1.7.4"  # nginx on port 80 only
ISPDB_URL = "https://ispdb.test/v1.1/"  # the lab's stand-in for Thunderbird's ISPDB


def _client_case(
    domain: str,
    expect: set[str],
    about: str,
    *records: str,
    autoconfig: str | None = "",  # "": the good document; None: none served
    autodiscover: str | None = "",
    autoconfig_address: str = WEB_ADDRESS,
    web: tuple[tuple[str, str, str], ...] = (),
    redirects: tuple[tuple[str, str], ...] = (),
) -> Scenario:
    lines = ["@ IN MX 10 mx", "mx IN A 127.1.1.1", *records]
    files = list(web)
    if autoconfig is not None:
        lines.append(f"autoconfig IN A {autoconfig_address}")
        body = autoconfig or clients.autoconfig_xml(domain)
        files.append((f"autoconfig.{domain}", clients.AUTOCONFIG_PATH, body))
    if autodiscover is not None:
        lines.append(f"autodiscover IN A {WEB_ADDRESS}")
        body = autodiscover or clients.autodiscover_xml()
        files.append((f"autodiscover.{domain}", clients.AUTODISCOVER_PATH, body))
    return _scenario(domain, expect, lines, about=about, web=tuple(files), redirects=redirects)


_DEAD_IMAP = ("imap", "imap.healthy.test", 9993, "SSL")
_SSL_ON_143 = ("imap", "imap.healthy.test", 143, "SSL")

CLIENT_SCENARIOS: tuple[Scenario, ...] = (
    _HEALTHY,
    _client_case(
        "ac-missing.test",
        {"autoconfig.missing", "autodiscover.missing"},
        "nothing to discover, and nothing to guess",
        autoconfig=None,
        autodiscover=None,
    ),
    _client_case(
        "ac-guess.test",
        {"autoconfig.missing", "autodiscover.missing"},
        "nothing to discover, but Thunderbird's guesses find imap. and smtp.",
        "imap IN A 127.1.1.11",
        "smtp IN A 127.1.1.10",
        autoconfig=None,
        autodiscover=None,
    ),
    _client_case(
        "ac-invalid.test",
        {"autoconfig.invalid", "autoconfig.missing"},
        "a config-v1.1.xml that is not XML: Thunderbird skips it and guesses",
        autoconfig="<clientConfig><emailProvider id='x'>",
    ),
    _client_case(
        "ac-deadport.test",
        {"autoconfig.server.unreachable"},
        "autoconfig names IMAP port 9993, where nothing listens",
        autoconfig=clients.autoconfig_xml("ac-deadport.test", (_DEAD_IMAP,)),
    ),
    _client_case(
        "ac-socket.test",
        {"autoconfig.server.mismatch"},
        "autoconfig says SSL on port 143, which speaks STARTTLS",
        autoconfig=clients.autoconfig_xml("ac-socket.test", (_SSL_ON_143,)),
    ),
    _client_case(
        "ac-plain.test",
        {"autoconfig.insecure"},
        "autoconfig sets IMAP up without TLS, password in the clear",
        autoconfig=clients.autoconfig_xml(
            "ac-plain.test", (("imap", "imap.healthy.test", 143, "plain"),)
        ),
    ),
    _client_case(
        "ac-httponly.test",
        {"autoconfig.insecure"},
        "autoconfig served over http only",
        autoconfig_address=WEB_HTTP_ONLY_ADDRESS,
    ),
    _client_case(
        "ac-ispdb.test",
        set(),
        "no autoconfig of its own; the ISPDB knows it",
        autoconfig=None,
    ),
    _client_case(
        "ad-invalid.test",
        {"autodiscover.invalid", "autodiscover.missing"},
        "an autodiscover response that is not XML",
        autodiscover="<Autodiscover><Response>",
    ),
    _client_case(
        "ad-redirect.test",
        {"autodiscover.redirect.refused", "connect.target.refused"},
        "autodiscover redirects to a host on a private address",
        "private IN A 10.0.0.1",
        autodiscover=clients.autodiscover_redirect_url(
            "https://private.ad-redirect.test/autodiscover/autodiscover.xml"
        ),
    ),
    _client_case(
        "ad-loop.test",
        {"autodiscover.redirect.refused"},
        "autodiscover redirects to itself",
        autodiscover=clients.autodiscover_redirect_url(
            "https://autodiscover.ad-loop.test/autodiscover/autodiscover.xml"
        ),
    ),
    _client_case(
        "ad-deadport.test",
        {"autodiscover.server.unreachable"},
        "autodiscover names IMAP port 9993, where nothing listens",
        autodiscover=clients.autodiscover_xml((_DEAD_IMAP,)),
    ),
    _client_case(
        "ad-socket.test",
        {"autodiscover.server.mismatch"},
        "autodiscover says SSL on port 143",
        autodiscover=clients.autodiscover_xml((_SSL_ON_143,)),
    ),
    _client_case(
        "ad-httpredirect.test",
        set(),
        "autodiscover.<domain> only redirects (Outlook's http GET) to the real host",
        f"mail IN A {WEB_ADDRESS}",
        f"autodiscover IN A {WEB_ADDRESS}",
        autodiscover=None,
        web=(("mail.ad-httpredirect.test", clients.AUTODISCOVER_PATH, clients.autodiscover_xml()),),
        redirects=(
            (
                "autodiscover.ad-httpredirect.test" + clients.AUTODISCOVER_PATH,
                "https://mail.ad-httpredirect.test" + clients.AUTODISCOVER_PATH,
            ),
        ),
    ),
    _client_case(
        "ad-srv.test",
        set(),
        "autodiscover found only through the _autodiscover._tcp SRV record",
        f"mail IN A {WEB_ADDRESS}",
        "_autodiscover._tcp IN SRV 0 0 443 mail.ad-srv.test.",
        autodiscover=None,
        web=(("mail.ad-srv.test", clients.AUTODISCOVER_PATH, clients.autodiscover_xml()),),
    ),
    _client_case(
        "srv-deadport.test",
        {"srv.server.unreachable"},
        "an _imaps SRV record pointing at a port where nothing listens",
        "_imaps._tcp IN SRV 0 1 9994 imap.healthy.test.",
    ),
    _client_case(
        "srv-socket.test",
        {"srv.server.mismatch"},
        "an _imaps SRV record (implicit TLS) pointing at port 143 (STARTTLS)",
        "_imaps._tcp IN SRV 0 1 143 imap.healthy.test.",
    ),
)

# -- logins (checked with a test account, tests/integration/test_auth_lab.py) --------------
_NO_MAILBOX_SERVICES = tuple(
    f"{service} IN SRV 0 0 0 ."
    for service in ("_submissions._tcp", "_imap._tcp", "_imaps._tcp", "_pop3._tcp", "_pop3s._tcp")
)
AUTH_SCENARIOS: tuple[Scenario, ...] = (
    _scenario(
        "sub-cleartext.test",
        {"auth.cleartext.refused"},
        [
            "@ IN MX 10 mx1.healthy.test.",
            "_submission._tcp IN SRV 0 1 587 smtp",
            f"smtp IN A {SUB_CLEARTEXT_ADDRESS}",
            *_NO_MAILBOX_SERVICES,
        ],
        about="submission offers AUTH, but no TLS at all",
    ),
    _scenario(
        "sub-noauth.test",
        {"auth.mechanisms.none"},
        [
            "@ IN MX 10 mx1.healthy.test.",
            "_submission._tcp IN SRV 0 1 25 mx1.healthy.test.",
            *_NO_MAILBOX_SERVICES,
        ],
        about="the submission SRV points at an MX port that offers no AUTH",
    ),
)

# Submission servers that would steal a test account's password (issue 16): the
# tests run a recording server (tests/support/smtprecorder.py) on port 587 of
# each address, with a self-signed certificate, or a good lab certificate for
# another name. In no list that check tests iterate: nothing listens without them.
HOSTILE_SUBMISSION = {
    "auth-selfsigned.test": "127.1.24.1",
    "auth-wrongname.test": "127.1.24.2",
}
HOSTILE_AUTH_SCENARIOS: tuple[Scenario, ...] = tuple(
    _scenario(
        domain,
        set(),
        [
            "@ IN MX 10 mx1.healthy.test.",
            "_submission._tcp IN SRV 0 1 587 smtp",
            f"smtp IN A {address}",
            *_NO_MAILBOX_SERVICES,
        ],
        about="a submission server that accepts any password (a test's recording server)",
    )
    for domain, address in HOSTILE_SUBMISSION.items()
)

# URLs whose host is 127.0.0.1 written so that a naive check misses it (issue
# 16): from each place a stranger writes URLs. Nothing of the lab listens on
# 127.0.0.1, which the lab's target policy (127.1.0.0/16) refuses; the tests
# run a canary there and count that nothing connects. url-<source>-<n>.test.
URL_HOST_FORMS: dict[str, str] = {
    "fullwidth": "\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11",
    "short": "127.1",
    "decimal": "2130706433",
    "hex": "0x7f.0.0.1",
    "octal": "0177.0.0.1",
    "mapped6": "[::ffff:127.0.0.1]",
    "dot": "127.0.0.1.",
    "percent": "%31%32%37.0.0.1",
}
URL_SOURCES = ("mailconf", "adurl", "adaddr", "location", "mobileconfig")
URL_MOBILECONFIG_DOMAIN = "url-mobileconfig.test"


def _zone_text(text: str) -> str:
    """Non-ASCII as zone-file \\DDD escapes of its UTF-8 bytes."""
    return "".join(chr(b) if b < 128 else f"\\{b:03d}" for b in text.encode())


def url_domain(source: str, form: str) -> str:
    return f"url-{source}-{list(URL_HOST_FORMS).index(form)}.test"


def _url_case(source: str, form: str) -> Scenario:
    host = URL_HOST_FORMS[form]
    domain = url_domain(source, form)
    about = f"a {source} URL on {host!r}, which is 127.0.0.1"
    path = clients.AUTODISCOVER_PATH
    if source == "mailconf":
        txt = _zone_text(f"mailconf=https://{host}{clients.AUTOCONFIG_PATH}")
        return _client_case(
            domain, set(), about, f'@ IN TXT "{txt}"', autoconfig=None, autodiscover=None
        )
    if source == "location":
        return _client_case(
            domain,
            set(),
            about,
            f"autodiscover IN A {WEB_ADDRESS}",
            autoconfig=None,
            autodiscover=None,
            redirects=((f"autodiscover.{domain}{path}", f"https://{host}{path}"),),
        )
    body = (
        clients.autodiscover_redirect_url(f"https://{host}{path}")
        if source == "adurl"
        else clients.autodiscover_redirect_addr(f"user@{host}")
    )
    return _client_case(domain, set(), about, autoconfig=None, autodiscover=body)


HOSTILE_URL_SCENARIOS: tuple[Scenario, ...] = (
    *(
        replace(_url_case(source, form), dnssec="unsigned")
        for source in URL_SOURCES
        if source != "mobileconfig"
        for form in URL_HOST_FORMS
        # An address carries neither %-escapes nor a bare bracketed IPv6: the
        # autodiscover parser refuses those RedirectAddrs (autodiscover.invalid).
        if not (source == "adaddr" and form in ("percent", "mapped6"))
    ),
    _scenario(
        URL_MOBILECONFIG_DOMAIN,
        set(),
        [f"mc-{i} IN A {WEB_ADDRESS}" for i in range(len(URL_HOST_FORMS))],
        about="http://mc-<n>.url-mobileconfig.test/p.mobileconfig redirects to 127.0.0.1",
        redirects=tuple(
            (f"mc-{i}.{URL_MOBILECONFIG_DOMAIN}/p.mobileconfig", f"https://{host}/p.mobileconfig")
            for i, host in enumerate(URL_HOST_FORMS.values())
        ),
        dnssec="unsigned",
    ),
)

# Thunderbird's ISPDB, as the lab serves it (engine setting ispdb_url = ISPDB_URL).
ISPDB = _scenario(
    "ispdb.test",
    set(),
    [f"@ IN A {WEB_ADDRESS}"],
    about="the lab's ISPDB",
    web=(("ispdb.test", "/v1.1/ac-ispdb.test", clients.autoconfig_xml("ac-ispdb.test")),),
)

# -- the send test: sending servers (tests/lab/senders.py) and the receiver ----------------


def _sender_case(sender: Sender) -> Scenario:
    records = [
        *sender.records,
        *(f"{name} IN A {address}" for name, address in sender.hosts.items()),
        f'@ IN TXT "{sender.spf}"',
        f'_dmarc IN TXT "{sender.dmarc}"',
    ]
    return _scenario(
        sender.domain,
        set(sender.expect),
        records,
        {sender.address: sender.ptr} if sender.ptr else {},
        sender.about,
        lab_dkim=sender.dkim != "none",
    )


SENDER_SCENARIOS: tuple[Scenario, ...] = tuple(_sender_case(s) for s in SENDERS)
RECEIVER = _scenario(
    RECEIVER_DOMAIN,
    set(),
    ["@ IN MX 10 mx", f"mx IN A {RECEIVER_ADDRESS}"],
    {RECEIVER_ADDRESS: RECEIVER_HOST},
    "the send test's receiver (run by the tests, not the lab)",
)
_LISTED_SENDER = next(s for s in SENDERS if s.domain == "send-listed.test")

# The lab's blocklist (checks run with dnsbl_zones=("bl.test",)): RFC 5782 test
# entries, the two policy scenarios above and the listed sender.
BLOCKLIST = _scenario(
    "bl.test",
    set(),
    [
        "2.0.0.127 IN A 127.0.0.2",
        "1.6.1.127 IN A 127.0.0.2",
        '1.6.1.127 IN TXT "listed in the mailcheck lab"',
        "2.6.1.127 IN A 127.255.255.254",
        f"{_reversed(_LISTED_SENDER.address)} IN A 127.0.0.2",
        f'{_reversed(_LISTED_SENDER.address)} IN TXT "sender listed in the mailcheck lab"',
    ],
    about="a DNS blocklist zone",
)
BLOCKLIST_ZONE = BLOCKLIST.domain

# A whole domain behind one silent host: its MX, its web and autoconfig names
# and the names Thunderbird guesses all on the filtered address (#18: one
# connect timeout for the check, not one per probe).
BLACKHOLE = _scenario(
    "blackhole.test",
    set(),  # tested on its own (tests/integration/test_silent_host.py)
    [
        "@ IN MX 10 mx",
        *(
            f"{name} IN A 127.1.20.2"
            for name in ("@", "mx", "autoconfig", "autodiscover", "imap", "pop3", "pop", "mail")
        ),
        "smtp IN A 127.1.20.2",
        *NO_CLIENT_SERVICES,
    ],
    about="every name of the domain on a host that drops every packet",
)

BY_DOMAIN = {
    s.domain: s
    for s in (
        BLACKHOLE,
        *SCENARIOS,
        *MAIL_SCENARIOS,
        *POLICY_SCENARIOS,
        *CLIENT_SCENARIOS,
        *AUTH_SCENARIOS,
        *HOSTILE_AUTH_SCENARIOS,
        *HOSTILE_URL_SCENARIOS,
        ISPDB,
        BLOCKLIST,
        CACHE_SCENARIO,
        *SENDER_SCENARIOS,
        RECEIVER,
    )
}


# The stages each family of scenarios is built for and checked with by its
# tests: a scenario's zone holds only what those stages look at, so a full
# check of it also reports what the lab leaves out (no mail server behind a
# DNS scenario's MX, no SPF in a mail scenario). healthy.test has everything.
_FAMILY_STAGES: tuple[tuple[tuple[Scenario, ...], tuple[str, ...]], ...] = (
    (MAIL_SCENARIOS, ("dns", "connect", "tls")),
    (POLICY_SCENARIOS, ("policy",)),
    (CLIENT_SCENARIOS, ("autoconfig",)),
    (SCENARIOS, ("dns",)),
)
HEALTHY = "healthy.test"


def scenario_stages(domain: str) -> tuple[str, ...] | None:
    """The stages to check `domain` with to see only its scenario's faults;
    None for healthy.test, a domain outside these families, or no scenario."""
    if domain == HEALTHY:
        return None
    for family, stages in _FAMILY_STAGES:
        if any(s.domain == domain for s in family):
            return stages
    return None


def all_zones(
    tlsa: Callable[[str, str], str] | None = None, dkim: Callable[[str], str] | None = None
) -> list[Zone]:
    """The test. parent zone (served by ns.test. and ns-parent.test.) with each
    zone's delegation NS set and glue, each scenario zone, and the reverse zone,
    unsigned. `tlsa(cert_name, "3 1 1")` gives the TLSA data for
    a lab certificate, `dkim(domain)` the TXT data of the lab's signing key for
    a domain (DKIMKeys.record); without them, those records are left out."""
    served = [s for s in BY_DOMAIN.values() if s.records is not None and s.domain.endswith(".test")]
    parent = [
        f"@ IN NS {NS_NAME}",
        f"@ IN NS {PARENT_NS_NAME}",
        f"{NS_NAME} IN A {NS_ADDRESS}",
        f"{PARENT_NS_NAME} IN A {PARENT_NS_ADDRESS}",
    ]
    for s in served:
        label = s.domain.removesuffix(".test")
        parent += [f"{label} IN NS {name}" for name in s.delegation]
        parent += [f"{name} IN A {glue}" for name, glue in s.delegation.items() if glue]
    zones = [Zone("test", tuple(parent))]
    for s in served:
        records = list(s.records or ())
        if tlsa is not None:
            records += [f"{owner} IN TLSA {tlsa(cert, params)}" for owner, cert, params in s.tlsa]
        if dkim is not None and s.lab_dkim:
            records.append(f"{DKIM_SELECTOR}._domainkey IN TXT {dkim(s.domain)}")
        zones.append(Zone(s.domain, tuple(records)))
    reverse = []
    for s in served:
        for address, name in s.ptr.items():
            a, b, c, d = address.split(".")
            assert (a, b) == ("127", "1"), address
            reverse.append(f"{d}.{c} IN PTR {name}.")
    zones.append(Zone(REVERSE_ZONE, tuple(reverse)))
    return zones


def dnssec_plan() -> tuple[set[str], dict[str, str]]:
    """(zones left unsigned, zones broken on purpose -> how) for signing.sign_lab."""
    unsigned = {s.domain for s in BY_DOMAIN.values() if s.dnssec == "unsigned"}
    broken = {
        s.domain: s.dnssec
        for s in BY_DOMAIN.values()
        if s.dnssec not in ("signed", "unsigned") and s.records is not None
    }
    return unsigned | {REVERSE_ZONE}, broken


def web_sites() -> list[Site]:
    """What the lab's nginx serves: every scenario's files on WEB_ADDRESS, with a
    certificate for every mta-sts.<domain> that has an _mta-sts record (so a
    missing file is a 404, not a certificate error), and the same files behind
    an expired certificate on WEB_EXPIRED_ADDRESS."""
    files: dict[str, dict[str, str]] = {}
    for scenario in BY_DOMAIN.values():
        for host, path, body in scenario.web:
            files.setdefault(host, {})[path] = body
    announced = {
        f"mta-sts.{s.domain}"
        for s in BY_DOMAIN.values()
        if any(r.startswith("_mta-sts ") for r in s.records or ())
    }
    hosts = sorted(announced | set(files))
    expired = CertSpec(
        "web-expired.lab",
        ("mta-sts.mtasts-badcert.test",),
        not_before=timedelta(days=-400),
        not_after=timedelta(days=-2),
    )
    redirects = dict(r for scenario in BY_DOMAIN.values() for r in scenario.redirects)
    return [
        Site(WEB_ADDRESS, CertSpec("web.lab", tuple(hosts)), files, redirects),
        Site(WEB_EXPIRED_ADDRESS, expired, files, http=False),
        Site(WEB_HTTP_ONLY_ADDRESS, expired, files, https=False),
    ]
