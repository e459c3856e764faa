"""Every finding code the engine can emit: the single source of truth.

Each entry gives the default severity, a short title, why it matters (for the
on-call engineer: what breaks for users) and how to fix it (which record or
setting to change). `mailcheck codes` prints this table and
`docs/findings.md` is generated from it; `finding()` refuses a code that is
not here, and a test fails if the source mentions one that is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from checks.core.model import Finding, Severity, Stage, Target


@dataclass(frozen=True)
class Entry:
    code: str
    severity: Severity
    stage: Stage
    title: str
    why: str
    fix: str


_OK, _INFO, _INC, _WARN, _ERR = (
    Severity.OK,
    Severity.INFO,
    Severity.INCONCLUSIVE,
    Severity.WARNING,
    Severity.ERROR,
)

_ENTRIES: tuple[Entry, ...] = (
    # -- the engine itself -------------------------------------------------
    Entry(
        "engine.probe.failed",
        _INC,
        Stage.DNS,
        "A probe failed inside mailcheck",
        "mailcheck hit an unexpected error while running this probe, so it says "
        "nothing about the domain. The rest of the report is unaffected.",
        "Re-run the check; if it keeps failing, report it with the JSON output "
        "(`mailcheck check --json`).",
    ),
    Entry(
        "engine.deadline",
        _INC,
        Stage.DNS,
        "The check ran out of time",
        "The overall deadline passed before this probe finished; its result is unknown.",
        "Re-run with a longer `--timeout`, or look for a server that answers very slowly.",
    ),
    Entry(
        "engine.budget.exceeded",
        _INC,
        Stage.DNS,
        "The check reached one of its budgets",
        "The domain's DNS names more hosts, addresses, redirects or lookups than one check "
        "follows, so mailcheck stopped at its budget rather than flood the servers they "
        "point at. What was skipped is unknown; the rest of the report stands.",
        "Publish fewer records (a handful of MX hosts, a few addresses each, an SPF record "
        "within 10 lookups). If the domain really needs more, raise the setting the "
        "summary names (`MAILCHECK_MAX_*`).",
    ),
    # -- DNS: the domain and the resolver -----------------------------------
    Entry(
        "dns.domain.nxdomain",
        _ERR,
        Stage.DNS,
        "The domain does not exist",
        "The domain's authoritative servers say the name does not exist (NXDOMAIN). "
        "Nobody can send mail to it, and mail from it fails sender checks everywhere.",
        "Check the spelling; check that the domain is registered, not expired, and "
        "delegated to nameservers that serve its zone.",
    ),
    Entry(
        "dns.resolver.failure",
        _INC,
        Stage.DNS,
        "DNS lookup failed",
        "The resolver gave no usable answer (timeout, SERVFAIL or REFUSED), so nothing "
        "can be concluded about these records. SERVFAIL for a whole domain often means "
        "broken DNSSEC or unreachable nameservers; senders see the same failure and "
        "defer mail.",
        "Repeat the lookup with the reproduce command. If the domain's nameservers "
        "answer directly but resolvers fail, look at DNSSEC (DS/DNSKEY) and delegation.",
    ),
    # -- nameservers: each authoritative server asked directly ---------------------------
    Entry(
        "dns.ns.ok",
        _OK,
        Stage.DNS,
        "The nameservers agree",
        "Every nameserver of the zone answers with authority, with the same serial and the "
        "same mail records; the delegation matches the zone.",
        "",
    ),
    Entry(
        "dns.ns.serial_mismatch",
        _WARN,
        Stage.DNS,
        "The nameservers serve different versions of the zone",
        "The SOA serials differ: a secondary has not taken the latest zone (a failed zone "
        "transfer, a NOTIFY not sent or not allowed, a serial that went down), so resolvers "
        "get old or new records depending on which server they ask.",
        "Check the zone transfer from the primary to the server behind (its logs, "
        "allow-transfer/also-notify, the serial's direction) and make it catch up.",
    ),
    Entry(
        "dns.ns.records_differ",
        _WARN,
        Stage.DNS,
        "The nameservers give different mail records",
        "Two authoritative servers answer the same question differently, so which MX, SPF "
        "or DMARC record a sender sees depends on the server its resolver happens to ask: "
        "mail works for some senders and not others.",
        "Make every server serve the same zone: fix the transfer (see the serials), or "
        "update every provider's copy when the zone is kept in two places by hand.",
    ),
    Entry(
        "dns.ns.lame",
        _WARN,
        Stage.DNS,
        "A nameserver is lame",
        "A server listed as a nameserver of the zone answers without authority (no AA "
        "flag: a referral or an error) instead of serving the zone. Resolvers that ask it "
        "waste a round trip or fail, and lookups get slow or time out.",
        "Load the zone on that server, or remove it from the NS records (in the zone and at "
        "the registrar).",
    ),
    Entry(
        "dns.ns.refused",
        _WARN,
        Stage.DNS,
        "A nameserver refuses queries for the zone",
        "A server listed as a nameserver of the zone answers REFUSED: it does not serve "
        "the zone (removed from the provider, or a typo in the NS record). Resolvers that "
        "ask it must try another.",
        "Add the zone on that server, or remove it from the NS records (in the zone and at "
        "the registrar).",
    ),
    Entry(
        "dns.ns.unreachable",
        _WARN,
        Stage.DNS,
        "A nameserver does not answer",
        "A nameserver of the zone did not answer at all (down, firewalled, or an address "
        "that is wrong or has none). Resolvers wait for it before trying another, so "
        "lookups of the domain are slow and fail when the others are down too.",
        "Bring the server back or fix its address; remove it from the NS records (zone "
        "and registrar) if it is gone for good.",
    ),
    Entry(
        "dns.ns.address.private",
        _WARN,
        Stage.DNS,
        "A nameserver has a non-public address",
        "A nameserver of the zone resolves to a private, loopback or otherwise non-public "
        "address: resolvers on the internet cannot reach it. mailcheck does not send it "
        "packets (see Target safety).",
        "Give the nameserver its public address, or remove it from the NS records (zone "
        "and registrar). To check an internal zone, allow its network with --allow-target.",
    ),
    Entry(
        "dns.ns.parent_child_mismatch",
        _WARN,
        Stage.DNS,
        "The delegation and the zone list different nameservers",
        "The parent zone (the registry, through your registrar) delegates the domain to "
        "one set of nameservers and the zone's own NS records list another. Resolvers use "
        "either, so a server in only one of the lists gets traffic it may not expect, or "
        "none when it should.",
        "Make the NS records at the registrar and in the zone the same list.",
    ),
    Entry(
        "dns.propagation.pending",
        _INFO,
        Stage.DNS,
        "The resolver still serves an older answer",
        "The nameservers agree on a record, but the resolver serves another one from its "
        "cache; it will serve the new one once the cached copy's TTL runs out. A "
        "propagation delay, not a broken server: senders using such resolvers see the old "
        "record until then.",
        "Wait for the TTL in the summary. Lower the TTL a day ahead of the next planned "
        "change, so caches expire quickly around it.",
    ),
    # -- MX ------------------------------------------------------------------
    Entry(
        "mx.found",
        _OK,
        Stage.DNS,
        "MX records",
        "The domain publishes mail exchangers; senders try them in preference order.",
        "",
    ),
    Entry(
        "mx.none",
        _WARN,
        Stage.DNS,
        "No MX record",
        "Without an MX record, senders fall back to the domain's own A/AAAA address "
        "(the implicit MX, RFC 5321 section 5.1). That works only if that host runs a "
        "mail server, and many filters treat a domain with no MX as suspect.",
        "Publish an MX record naming your mail server, e.g. `example.com. MX 10 "
        "mx1.example.com.`; if the domain must not receive mail, publish a null MX "
        "(`MX 0 .`) instead.",
    ),
    Entry(
        "mx.implicit.missing",
        _ERR,
        Stage.DNS,
        "No MX and no address: mail cannot be delivered",
        "The domain has neither MX nor A/AAAA records, so no sender can find a server "
        "to deliver to; mail bounces.",
        "Publish an MX record for the mail server, or a null MX (`MX 0 .`) to say "
        "clearly that the domain takes no mail.",
    ),
    Entry(
        "mx.null",
        _INFO,
        Stage.DNS,
        "Null MX: the domain accepts no mail",
        "The domain publishes a null MX (RFC 7505), so senders reject mail to it at "
        "once instead of queueing it. That is right for a domain that sends but never "
        "receives.",
        "Nothing to fix if the domain must not receive mail; otherwise replace the "
        "`MX 0 .` record with real MX records.",
    ),
    Entry(
        "mx.null.mixed",
        _ERR,
        Stage.DNS,
        "Null MX mixed with other MX records",
        "RFC 7505 says a null MX must be the only MX record. Mixed with others, senders "
        "behave differently: some bounce, some deliver.",
        "Remove either the `MX 0 .` record or the other MX records.",
    ),
    Entry(
        "mx.cname",
        _ERR,
        Stage.DNS,
        "MX points at a CNAME",
        "RFC 2181 and RFC 5321 forbid an MX target that is an alias. Many senders "
        "follow it anyway, but some reject or misroute the mail, and it breaks "
        "DANE and MTA-STS matching.",
        "Point the MX at the canonical host name (the CNAME's target), or replace the "
        "CNAME with A/AAAA records.",
    ),
    Entry(
        "mx.host.unresolvable",
        _ERR,
        Stage.DNS,
        "MX host has no address",
        "Senders cannot deliver to a mail exchanger whose name has no A or AAAA record; "
        "they skip it, and if it is the only one, mail bounces or queues.",
        "Add A (and AAAA) records for the MX host, or fix the MX record to name a host "
        "that has them.",
    ),
    Entry(
        "mx.ip_literal",
        _ERR,
        Stage.DNS,
        "MX names an IP address, not a host",
        "An MX record must name a host; an address written there is read as a host name "
        "(such as `192.0.2.1.`) that does not resolve, so senders cannot deliver.",
        "Create a host name with an A/AAAA record for the address, and name that host "
        "in the MX record.",
    ),
    Entry(
        "mx.address.private",
        _ERR,
        Stage.DNS,
        "MX host resolves to a non-public address",
        "The address is private, loopback, link-local, or otherwise not reachable from "
        "the internet, so outside senders cannot deliver to it (they may even try to "
        "deliver to themselves). Usually an internal zone leaked into public DNS.",
        "Publish the mail server's public address in the public zone; keep internal "
        "addresses in split-horizon DNS only.",
    ),
    Entry(
        "mx.host.addresses",
        _OK,
        Stage.DNS,
        "MX host addresses",
        "The mail exchanger's name resolves; these are the addresses senders connect to.",
        "",
    ),
    # -- reverse DNS -----------------------------------------------------------
    Entry(
        "ptr.ok",
        _OK,
        Stage.DNS,
        "Reverse DNS confirmed",
        "The address has a PTR record whose name resolves back to the same address "
        "(forward-confirmed reverse DNS), as receivers expect of a mail server.",
        "",
    ),
    Entry(
        "ptr.missing",
        _WARN,
        Stage.DNS,
        "No reverse DNS (PTR) for a mail server address",
        "Many receivers reject or junk mail from an address without a PTR record "
        "(Gmail and Microsoft require one). Mail sent from this host will suffer.",
        "Ask whoever owns the address block (your hosting provider or ISP) to set a PTR "
        "record naming the mail server, e.g. `mx1.example.com`.",
    ),
    Entry(
        "ptr.mismatch",
        _WARN,
        Stage.DNS,
        "Reverse DNS does not confirm",
        "The address has a PTR record, but that name does not resolve back to the same "
        "address (forward-confirmed reverse DNS fails). Receivers treat that like a "
        "missing PTR.",
        "Make the PTR name's A/AAAA record include this address, or change the PTR to "
        "a name that does.",
    ),
    # -- client discovery records ------------------------------------------------
    Entry(
        "srv.found",
        _OK,
        Stage.DNS,
        "Mail service SRV records",
        "RFC 6186 / RFC 8314 SRV records tell mail clients which servers and ports to use.",
        "",
    ),
    Entry(
        "srv.missing",
        _INFO,
        Stage.DNS,
        "No mail client SRV records",
        "Without RFC 6186 / RFC 8314 SRV records, clients that use them (Apple Mail, "
        "many mobile clients, Outlook on some platforms) fall back to guessing host "
        "names and ports.",
        "Publish e.g. `_submissions._tcp.example.com. SRV 0 1 465 smtp.example.com.` and "
        "`_imaps._tcp.example.com. SRV 0 1 993 imap.example.com.`; a target of `.` says "
        "a service is deliberately not offered.",
    ),
    Entry(
        "srv.target.unresolvable",
        _WARN,
        Stage.DNS,
        "SRV record names a host with no address",
        "Clients that follow this SRV record find no server and fail to configure.",
        "Add A/AAAA records for the target host, or correct the SRV target.",
    ),
    Entry(
        "mailconf.found",
        _OK,
        Stage.DNS,
        "mailconf TXT record",
        "The domain points clients at its autoconfiguration document with a "
        "`mailconf=` TXT record.",
        "",
    ),
    Entry(
        "mailconf.invalid",
        _WARN,
        Stage.DNS,
        "Invalid mailconf TXT record",
        "The `mailconf=` TXT record must hold exactly one https URL of the domain's "
        "autoconfiguration document; clients ignore anything else (or, worse, fetch "
        "settings over plain http that an attacker can rewrite).",
        "Publish a single TXT record `mailconf=https://autoconfig.example.com/mail/"
        "config-v1.1.xml`.",
    ),
    # -- connect: port 25 of the MX hosts ------------------------------------------
    Entry(
        "smtp.ok",
        _OK,
        Stage.CONNECT,
        "SMTP server answers",
        "The mail exchanger greets, answers EHLO and (where offered) upgrades to TLS.",
        "",
    ),
    Entry(
        "smtp.connect.refused",
        _ERR,
        Stage.CONNECT,
        "MX refuses connections on port 25",
        "Nothing listens on port 25 at this MX address (or a firewall rejects it), so "
        "senders cannot deliver there; they try the next MX, or queue and bounce.",
        "Start the mail server or open port 25 for this address; if the host no longer "
        "receives mail, remove it from the MX records.",
    ),
    Entry(
        "smtp.connect.timeout",
        _ERR,
        Stage.CONNECT,
        "MX port 25 does not answer",
        "Connections to port 25 time out: a firewall drops them, or the host is down. "
        "Senders wait for each attempt before trying the next MX, delaying mail.",
        "Check the firewall (inbound TCP 25 must be open to the internet) and that the "
        "host is up. Note that many home and cloud networks block outbound port 25: "
        "check from a network that allows it.",
    ),
    Entry(
        "smtp.banner.timeout",
        _WARN,
        Stage.CONNECT,
        "SMTP server sends no greeting",
        "The server accepted the connection but did not send its 220 greeting in time. "
        "A greeting delay (postscreen, tarpitting) beyond a sender's patience loses mail.",
        "Look for an overloaded server, a stuck filter, or a greet delay that is too long "
        "(postscreen_greet_wait).",
    ),
    Entry(
        "smtp.banner.rejected",
        _INC,
        Stage.CONNECT,
        "SMTP server turned us away",
        "The server answered with a 4xx/5xx greeting instead of 220: it is busy, rate "
        "limits, greylists or blocks our address. That says more about us than about the "
        "domain, so the result is inconclusive.",
        "Repeat the check from another address, or look at the server's logs for why it "
        "rejects this client.",
    ),
    Entry(
        "smtp.ehlo.rejected",
        _ERR,
        Stage.CONNECT,
        "SMTP server rejects EHLO",
        "Without EHLO there is no ESMTP: no STARTTLS, no SIZE, no 8BITMIME. Senders fall "
        "back to HELO and deliver in the clear.",
        "Enable ESMTP; check HELO/EHLO restrictions (smtpd_helo_restrictions).",
    ),
    Entry(
        "smtp.hostname.mismatch",
        _WARN,
        Stage.CONNECT,
        "SMTP server name matches neither MX nor PTR",
        "The name in the greeting or EHLO reply is neither the MX host name nor the "
        "address's PTR. Some receivers and anti-spam checks expect them to agree, and it "
        "suggests a misconfigured or shared server.",
        "Set the server's host name (Postfix: myhostname) to the MX name that has the PTR.",
    ),
    Entry(
        "smtp.starttls.missing",
        _ERR,
        Stage.CONNECT,
        "No STARTTLS",
        "The server does not offer STARTTLS, so everything sent to it (mail, or logins on "
        "a submission port) crosses the network in the clear. On an MX, senders still "
        "deliver, unencrypted.",
        "Configure a certificate and enable TLS (Postfix: smtpd_tls_security_level=may on "
        "port 25, encrypt on 587).",
    ),
    Entry(
        "smtp.starttls.failed",
        _ERR,
        Stage.CONNECT,
        "STARTTLS advertised but refused",
        "The server offers STARTTLS and then refuses it (usually 454 TLS not available: "
        "its certificate or key cannot be loaded). Senders retry in the clear or defer.",
        "Read the server log for the TLS error; check the certificate and key files and "
        "their permissions.",
    ),
    Entry(
        "smtp.auth.before_tls",
        _ERR,
        Stage.CONNECT,
        "Password login offered before TLS",
        "The server offers AUTH PLAIN or LOGIN on an unencrypted connection, so a client "
        "(or an attacker stripping STARTTLS) can send passwords in the clear.",
        "Offer AUTH only after STARTTLS (Postfix: smtpd_tls_auth_only=yes); no AUTH at "
        "all on port 25.",
    ),
    # -- connect: submission ------------------------------------------------------------
    Entry(
        "submission.ok",
        _OK,
        Stage.CONNECT,
        "Submission server answers",
        "Mail clients can submit mail here.",
        "",
    ),
    Entry(
        "submission.connect.refused",
        _ERR,
        Stage.CONNECT,
        "Advertised submission port refuses connections",
        "An SRV record sends mail clients to this submission port, but nothing listens, "
        "so users cannot send mail.",
        "Start the submission service (Postfix master.cf: submission/submissions) or fix "
        "the SRV record.",
    ),
    Entry(
        "submission.connect.timeout",
        _ERR,
        Stage.CONNECT,
        "Advertised submission port does not answer",
        "An SRV record sends clients here, but connections time out (filtered?).",
        "Open the port in the firewall, or fix the SRV record.",
    ),
    Entry(
        "submission.missing",
        _WARN,
        Stage.CONNECT,
        "No submission server found",
        "Neither port 587 (STARTTLS) nor 465 (implicit TLS) answers on the hosts a client "
        "would try, so users need hand-made settings, or send through port 25, which many "
        "networks block.",
        "Run submission on 587 and/or 465 and publish `_submissions._tcp` / `_submission."
        "_tcp` SRV records naming the host.",
    ),
    # -- connect: IMAP and POP3 ---------------------------------------------------------
    Entry("imap.ok", _OK, Stage.CONNECT, "IMAP server answers", "Clients can read mail here.", ""),
    Entry(
        "imap.connect.refused",
        _ERR,
        Stage.CONNECT,
        "Advertised IMAP port refuses connections",
        "An SRV record sends mail clients to this IMAP port, but nothing listens.",
        "Start the IMAP service on that port, or fix the SRV record.",
    ),
    Entry(
        "imap.connect.timeout",
        _ERR,
        Stage.CONNECT,
        "Advertised IMAP port does not answer",
        "An SRV record sends clients here, but connections time out (filtered?).",
        "Open the port in the firewall, or fix the SRV record.",
    ),
    Entry(
        "imap.banner.timeout",
        _WARN,
        Stage.CONNECT,
        "IMAP server sends no greeting",
        "The server accepted the connection but sent no `* OK` greeting in time; clients give up.",
        "Look for an overloaded or stuck IMAP server.",
    ),
    Entry(
        "imap.banner.rejected",
        _INC,
        Stage.CONNECT,
        "IMAP server turned us away",
        "The server greeted with `* BYE` (busy, or blocking our address): inconclusive.",
        "Repeat from another address; read the server log.",
    ),
    Entry(
        "imap.starttls.missing",
        _ERR,
        Stage.CONNECT,
        "IMAP port 143 without STARTTLS",
        "Clients connecting on 143 cannot encrypt, so passwords and mail travel in the clear.",
        "Enable TLS on the IMAP server (Dovecot: ssl = yes with a certificate).",
    ),
    Entry(
        "imap.starttls.failed",
        _ERR,
        Stage.CONNECT,
        "IMAP STARTTLS refused",
        "The server advertises STARTTLS and then refuses it.",
        "Read the IMAP server's log for the TLS error; check certificate and key.",
    ),
    Entry(
        "imap.auth.before_tls",
        _ERR,
        Stage.CONNECT,
        "IMAP accepts passwords before TLS",
        "Port 143 allows LOGIN (no LOGINDISABLED) or AUTHENTICATE PLAIN before STARTTLS, so "
        "a client, or an attacker stripping STARTTLS, sends the password in the clear.",
        "Refuse plaintext logins without TLS (Dovecot: disable_plaintext_auth = yes, or "
        "auth_allow_cleartext = no in 2.4).",
    ),
    Entry(
        "imap.missing",
        _INFO,
        Stage.CONNECT,
        "No IMAP server found",
        "No IMAP server answers on the names clients try (SRV records, imap., mail., the "
        "domain). Fine if mailboxes are hosted elsewhere; otherwise clients cannot "
        "configure themselves.",
        "Publish `_imaps._tcp` SRV records naming the IMAP host, or an imap. host name.",
    ),
    Entry("pop3.ok", _OK, Stage.CONNECT, "POP3 server answers", "Clients can fetch mail here.", ""),
    Entry(
        "pop3.connect.refused",
        _ERR,
        Stage.CONNECT,
        "Advertised POP3 port refuses connections",
        "An SRV record sends mail clients to this POP3 port, but nothing listens.",
        "Start the POP3 service on that port, or fix (or set to `.`) the SRV record.",
    ),
    Entry(
        "pop3.connect.timeout",
        _ERR,
        Stage.CONNECT,
        "Advertised POP3 port does not answer",
        "An SRV record sends clients here, but connections time out (filtered?).",
        "Open the port in the firewall, or fix the SRV record.",
    ),
    Entry(
        "pop3.banner.timeout",
        _WARN,
        Stage.CONNECT,
        "POP3 server sends no greeting",
        "The server accepted the connection but sent no `+OK` greeting in time.",
        "Look for an overloaded or stuck POP3 server.",
    ),
    Entry(
        "pop3.banner.rejected",
        _INC,
        Stage.CONNECT,
        "POP3 server turned us away",
        "The server greeted with `-ERR` (busy, or blocking our address): inconclusive.",
        "Repeat from another address; read the server log.",
    ),
    Entry(
        "pop3.starttls.missing",
        _ERR,
        Stage.CONNECT,
        "POP3 port 110 without STLS",
        "Clients connecting on 110 cannot encrypt, so passwords and mail travel in the clear.",
        "Enable TLS on the POP3 server.",
    ),
    Entry(
        "pop3.starttls.failed",
        _ERR,
        Stage.CONNECT,
        "POP3 STLS refused",
        "The server advertises STLS and then refuses it.",
        "Read the POP3 server's log for the TLS error; check certificate and key.",
    ),
    Entry(
        "pop3.auth.before_tls",
        _ERR,
        Stage.CONNECT,
        "POP3 accepts passwords before TLS",
        "Port 110 offers USER/PASS (or SASL PLAIN) before STLS, so passwords can travel in "
        "the clear.",
        "Refuse plaintext logins without TLS (Dovecot: disable_plaintext_auth = yes).",
    ),
    # -- connect: any conversation ----------------------------------------------------------
    Entry(
        "session.dropped",
        _INC,
        Stage.CONNECT,
        "Server hung up",
        "The server closed the connection in the middle of the conversation: often rate "
        "limiting, a connection limit or a blocklist, so this is inconclusive.",
        "Repeat later or from another address; read the server's log.",
    ),
    Entry(
        "session.reply.timeout",
        _WARN,
        Stage.CONNECT,
        "Server stopped answering",
        "The server went quiet in the middle of the conversation. Clients and senders "
        "time out the same way.",
        "Look for an overloaded server or a stuck filter.",
    ),
    Entry(
        "session.protocol.invalid",
        _ERR,
        Stage.CONNECT,
        "Server does not speak the protocol",
        "What came back is not the protocol expected on this port (garbage, an endless "
        "line, a flood, or an unexpected refusal). Another service may be listening here, "
        "or something in between mangles the traffic.",
        "Check which program listens on the port, and for middleboxes (antivirus, "
        '"SMTP fixup") that rewrite the conversation.',
    ),
    Entry(
        "connect.target.refused",
        _ERR,
        Stage.CONNECT,
        "Server address is not public",
        "An advertised server resolves to a private, loopback or otherwise non-public "
        "address, so clients outside your network cannot reach it (and mailcheck will not "
        "connect there).",
        "Publish the server's public address; keep internal addresses in internal DNS.",
    ),
    # -- policy: SPF -------------------------------------------------------------------
    Entry(
        "spf.ok",
        _OK,
        Stage.POLICY,
        "SPF record",
        "The domain says which hosts may send its mail, within the lookup limits.",
        "",
    ),
    Entry(
        "spf.missing",
        _WARN,
        Stage.POLICY,
        "No SPF record",
        "Receivers cannot tell which servers may send as this domain: spoofed mail is "
        "harder to reject, and Gmail and Microsoft junk or refuse bulk mail without SPF "
        "or DKIM.",
        "Publish one TXT record at the domain, e.g. `v=spf1 mx include:<provider> -all`.",
    ),
    Entry(
        "spf.multiple",
        _ERR,
        Stage.POLICY,
        "More than one SPF record",
        "RFC 7208 allows exactly one record starting with v=spf1; with two, receivers "
        "return permerror and SPF fails for all mail.",
        "Merge the records into one TXT record.",
    ),
    Entry(
        "spf.syntax",
        _ERR,
        Stage.POLICY,
        "SPF record has a syntax error",
        "Receivers return permerror for a record they cannot parse, so SPF fails for "
        "every message, including legitimate ones.",
        "Fix the term named in the summary; check the record with the reproduce command.",
    ),
    Entry(
        "spf.lookups.exceeded",
        _ERR,
        Stage.POLICY,
        "SPF needs more than 10 DNS lookups",
        "Receivers stop after 10 DNS-querying terms (include, a, mx, ptr, exists, "
        "redirect) and return permerror: SPF fails, often only for some senders.",
        "Remove unused includes, replace a/mx with ip4/ip6 ranges, or flatten the "
        "includes that cost most (see the lookup tree in the evidence).",
    ),
    Entry(
        "spf.void_lookups.exceeded",
        _ERR,
        Stage.POLICY,
        "SPF meets more than 2 empty lookups",
        "Receivers stop after two DNS lookups that return nothing and answer permerror.",
        "Remove terms that point at names without records (old includes, typos).",
    ),
    Entry(
        "spf.all.permissive",
        _WARN,
        Stage.POLICY,
        "SPF does not reject unlisted senders",
        "With +all anyone may send as the domain (error); with ?all or no all at all, "
        "unlisted hosts get 'neutral', which protects nothing.",
        "End the record with ~all (soft fail) or -all (fail).",
    ),
    Entry(
        "spf.include.missing",
        _ERR,
        Stage.POLICY,
        "SPF includes a domain without SPF",
        "An include: whose target has no SPF record makes receivers return permerror.",
        "Fix the include's domain name, or remove the include if the provider is gone.",
    ),
    Entry(
        "spf.mx.not_permitted",
        _INFO,
        Stage.POLICY,
        "The domain's own MX may not send",
        "The domain's SPF does not permit its own MX hosts. Fine if they never send mail "
        "(inbound-only or a filtering service); otherwise their mail fails SPF.",
        "Add `mx` (or the hosts' addresses) to the record if the MX hosts send mail.",
    ),
    Entry(
        "spf.sender.permitted",
        _OK,
        Stage.POLICY,
        "The given sender is permitted",
        "Mail from this address (given with --sender-ip) passes SPF for the domain.",
        "",
    ),
    Entry(
        "spf.sender.not_permitted",
        _ERR,
        Stage.POLICY,
        "The given sender is not permitted",
        "Mail from this address (given with --sender-ip) does not pass SPF for the domain: "
        "receivers junk or reject it (fail, permerror), or treat it as unverified "
        "(softfail, neutral, none), and DMARC fails unless DKIM aligns.",
        "Add the address to the SPF record (`ip4:`/`ip6:`, or `include:` of the sending "
        "service's record), keeping under 10 DNS lookups.",
    ),
    # -- policy: DMARC -----------------------------------------------------------------
    Entry(
        "dmarc.ok",
        _OK,
        Stage.POLICY,
        "DMARC record",
        "Receivers know what to do with mail that fails SPF and DKIM alignment.",
        "",
    ),
    Entry(
        "dmarc.missing",
        _WARN,
        Stage.POLICY,
        "No DMARC record",
        "Without DMARC, receivers have no policy for mail that spoofs the domain, and "
        "Gmail and Yahoo require one from bulk senders.",
        'Publish `_dmarc.example.com TXT "v=DMARC1; p=none; rua=mailto:dmarc@example.com"`, '
        "read the reports, then move to p=quarantine or p=reject.",
    ),
    Entry(
        "dmarc.multiple",
        _ERR,
        Stage.POLICY,
        "More than one DMARC record",
        "With more than one v=DMARC1 record receivers apply none of them.",
        "Keep exactly one TXT record at _dmarc.",
    ),
    Entry(
        "dmarc.syntax",
        _ERR,
        Stage.POLICY,
        "DMARC record has errors",
        "Receivers ignore or misread a DMARC record with invalid tags.",
        "Fix the tag named in the summary.",
    ),
    Entry(
        "dmarc.policy.none",
        _WARN,
        Stage.POLICY,
        "DMARC policy is none",
        "p=none only asks for reports; spoofed mail is delivered as usual.",
        "Once the reports show all legitimate mail passing, move to p=quarantine, then p=reject.",
    ),
    Entry(
        "dmarc.pct.partial",
        _WARN,
        Stage.POLICY,
        "DMARC policy covers only part of the mail",
        "With pct below 100, receivers apply the policy to only that share of the mail that "
        "fails DMARC and the next weaker policy to the rest (quarantine instead of reject, "
        "none instead of quarantine): some spoofed mail still gets through.",
        "Once the reports show all legitimate mail passing, raise pct to 100 or remove the tag.",
    ),
    Entry(
        "dmarc.testing",
        _WARN,
        Stage.POLICY,
        "DMARC policy in testing mode",
        "t=y (DMARCbis) asks receivers to apply the next weaker policy than p=: a p=reject "
        "record acts as p=quarantine, a p=quarantine one as p=none.",
        "Remove t=y once the reports show all legitimate mail passing.",
    ),
    Entry(
        "dmarc.subdomain.weaker",
        _WARN,
        Stage.POLICY,
        "DMARC policy is weaker for subdomains",
        "sp= (or np=, for names that do not exist) sets a weaker policy than p=: a spoofer "
        "writes From: anything.example.com, a name nobody checks, and gets the lenient one.",
        "Remove sp= and np= so that subdomains inherit p= (or set them to the same value); a "
        "subdomain that still sends unaligned mail can get its own _dmarc record.",
    ),
    Entry(
        "dmarc.rua.missing",
        _INFO,
        Stage.POLICY,
        "DMARC record asks for no reports",
        "Without rua= receivers send no aggregate reports: nobody learns which servers send "
        "mail as the domain, whether legitimate mail passes, or when spoofing starts.",
        "Add `rua=mailto:dmarc-reports@example.com` (an address in the domain, or a "
        "report service's that publishes an authorisation record).",
    ),
    Entry(
        "dmarc.reporting.odd",
        _INFO,
        Stage.POLICY,
        "DMARC reporting tags do not do what they seem to",
        "fo= only shapes failure reports, which need a ruf= address; and receivers need only "
        "send aggregate reports daily (RFC 7489 6.3), so ri= other than 86400 is mostly ignored.",
        "Add ruf= (few receivers send failure reports at all) or drop fo=; drop ri=.",
    ),
    Entry(
        "dmarc.rua.unauthorized",
        _WARN,
        Stage.POLICY,
        "DMARC reports go to a domain that has not agreed",
        "Reports to an address in another domain are only sent if that domain publishes "
        "an authorisation record (RFC 7489 7.1); without it the reports are dropped.",
        "Ask the report receiver to publish `<yourdomain>._report._dmarc.<theirdomain> TXT "
        '"v=DMARC1"`, or send reports to your own domain.',
    ),
    # -- policy: DKIM and TLS-RPT -----------------------------------------------------------
    Entry(
        "dkim.ok",
        _OK,
        Stage.POLICY,
        "DKIM key",
        "A DKIM public key is published; receivers can verify signatures made with it.",
        "",
    ),
    Entry(
        "dkim.none_found",
        _INFO,
        Stage.POLICY,
        "No DKIM key at the usual selectors",
        "No key answered at the selectors tried. Selectors cannot be listed from DNS, so "
        "this is not proof there is none; but without DKIM, DMARC rests on SPF alone and "
        "forwarded mail fails it.",
        "Give your selector with --dkim-selector, or have your mail service sign with DKIM "
        "and publish its key.",
    ),
    Entry(
        "dkim.key.invalid",
        _ERR,
        Stage.POLICY,
        "DKIM key record is broken",
        "Verifiers cannot use this key record, so signatures made with it fail and DMARC "
        "falls back on SPF.",
        "Republish the key record exactly as your signer gives it (watch for quotes split "
        "in the wrong place and stray characters in p=).",
    ),
    Entry(
        "dkim.key.weak",
        _WARN,
        Stage.POLICY,
        "DKIM key is short",
        "RSA keys under 2048 bits are weak (under 1024, RFC 8301 says verifiers must not "
        "accept them: an error).",
        "Generate a 2048-bit key under a new selector, publish it, switch the signer, then "
        "revoke the old one (empty p=).",
    ),
    Entry(
        "dkim.key.revoked",
        _INFO,
        Stage.POLICY,
        "DKIM selector revoked",
        "The selector publishes an empty key (p=): signatures with it are rejected. Right "
        "for a retired key; wrong if a signer still uses it.",
        "Nothing if the selector is retired; otherwise publish the current key.",
    ),
    Entry(
        "tlsrpt.ok",
        _OK,
        Stage.POLICY,
        "TLS-RPT record",
        "Sending servers report TLS failures with your MX to this address.",
        "",
    ),
    Entry(
        "tlsrpt.invalid",
        _WARN,
        Stage.POLICY,
        "TLS-RPT record is invalid",
        "Senders ignore an invalid _smtp._tls record, so you get no reports of TLS "
        "failures on your MX.",
        'Publish `_smtp._tls.example.com TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"`.',
    ),
    # -- policy: MTA-STS ---------------------------------------------------------------------
    Entry(
        "mtasts.ok",
        _OK,
        Stage.POLICY,
        "MTA-STS policy",
        "Senders that support MTA-STS (Gmail, Microsoft 365, Yahoo) deliver to your MX "
        "only over TLS with a valid certificate, so nobody on the path can downgrade or "
        "intercept the connection.",
        "",
    ),
    Entry(
        "mtasts.missing",
        _INFO,
        Stage.POLICY,
        "No MTA-STS policy",
        "Without MTA-STS (or DANE), sending servers fall back to plaintext or accept any "
        "certificate, so an attacker on the path can strip STARTTLS and read the mail.",
        "Serve a policy at `https://mta-sts.example.com/.well-known/mta-sts.txt` (start "
        "with `mode: testing`) and publish `_mta-sts.example.com TXT "
        '"v=STSv1; id=20260101"`; add a TLS-RPT record to see failures.',
    ),
    Entry(
        "mtasts.record.invalid",
        _ERR,
        Stage.POLICY,
        "MTA-STS record is invalid",
        "Senders read `_mta-sts` first; when it is invalid (bad version tag, missing or "
        "malformed id, two records) they act as if the domain had no policy and never "
        "fetch it.",
        'Publish exactly one `_mta-sts.example.com TXT "v=STSv1; id=YYYYMMDDN"` record; '
        "the id is 1 to 32 letters and digits, changed whenever the policy changes.",
    ),
    Entry(
        "mtasts.policy.unreachable",
        _ERR,
        Stage.POLICY,
        "MTA-STS policy cannot be fetched",
        "The `_mta-sts` record announces a policy, but the HTTPS fetch failed (no "
        "address, refused, timeout, certificate not valid for mta-sts.<domain>, or not "
        "HTTP 200). New senders treat the domain as having no policy; senders holding a "
        "cached one keep enforcing it and cannot pick up changes.",
        "Serve `/.well-known/mta-sts.txt` on `mta-sts.example.com` over HTTPS with a "
        "publicly trusted certificate for that name, answering 200 without redirects.",
    ),
    Entry(
        "mtasts.policy.invalid",
        _ERR,
        Stage.POLICY,
        "MTA-STS policy is invalid",
        "Senders discard a policy file they cannot parse (wrong version, unknown mode, "
        "missing max_age or mx), so the domain has no MTA-STS protection.",
        "Fix the file to the RFC 8461 format: `version: STSv1`, `mode: enforce|testing|"
        "none`, one `mx:` line per MX pattern, `max_age:` in seconds (a week or more), "
        "served as text/plain.",
    ),
    Entry(
        "mtasts.mx.not_covered",
        _ERR,
        Stage.POLICY,
        "MX host not in the MTA-STS policy",
        "Under `mode: enforce`, senders refuse to deliver to an MX host that matches no "
        "`mx:` pattern: mail routed to it is delayed and then bounces. Under testing "
        "they only report it.",
        "Add an `mx:` line for every MX host (wildcards like `*.example.com` cover one "
        "label), then change the id in the `_mta-sts` record so senders refetch.",
    ),
    Entry(
        "mtasts.mode.testing",
        _INFO,
        Stage.POLICY,
        "MTA-STS in testing mode",
        "Senders fetch the policy and report failures (with TLS-RPT) but still deliver "
        "when TLS fails, so it protects nothing yet.",
        "Once TLS-RPT reports are clean, switch the policy to `mode: enforce` and change "
        "the id in the `_mta-sts` record.",
    ),
    Entry(
        "mtasts.tls.unavailable",
        _ERR,
        Stage.TLS,
        "MTA-STS enforced but the MX has no working TLS",
        "The policy is in enforce mode, so senders that honour it deliver only over TLS "
        "with a valid certificate; this MX offers no STARTTLS or fails the handshake, so "
        "their mail to it is refused.",
        "Fix STARTTLS on the MX (certificate, key, protocol settings), or set the policy "
        "to `mode: testing` until it works.",
    ),
    # -- policy: DNSSEC and DANE -------------------------------------------------------------
    Entry(
        "dnssec.ok",
        _OK,
        Stage.POLICY,
        "DNSSEC validates",
        "The chain of trust from the root to this zone holds, so validating resolvers "
        "can prove its records, and DANE can work.",
        "",
    ),
    Entry(
        "dnssec.unsigned",
        _INFO,
        Stage.POLICY,
        "Zone not signed with DNSSEC",
        "Resolvers cannot prove the zone's records are genuine, and DANE TLSA records "
        "for its MX hosts are ignored by senders.",
        "Sign the zone at your DNS host and publish its DS record at the registrar.",
    ),
    Entry(
        "dnssec.bogus",
        _ERR,
        Stage.POLICY,
        "DNSSEC validation fails",
        "Validating resolvers (Google 8.8.8.8, Cloudflare 1.1.1.1, most ISPs) answer "
        "SERVFAIL for this zone: to them the domain has no MX, no A, nothing, and mail "
        "to it is delayed and bounces.",
        "Re-sign the zone (expired signatures), or make the DS at the registrar match a "
        "published DNSKEY (a botched key rollover), or remove the DS to go unsigned. "
        "Check with `delv` or dnsviz.net.",
    ),
    Entry(
        "dnssec.inconclusive",
        _INC,
        Stage.POLICY,
        "DNSSEC could not be checked",
        "A lookup on the chain of trust failed, or no trust anchor covers the name; this "
        "says nothing about whether the zone validates.",
        "Re-run, or check through another resolver (one that passes DNSSEC records); "
        "give `--trust-anchor` for a private root.",
    ),
    Entry(
        "dane.ok",
        _OK,
        Stage.TLS,
        "DANE TLSA matches",
        "Senders that use DANE (Postfix, Exim, Microsoft 365 outbound) authenticate "
        "this MX by its TLSA record.",
        "",
    ),
    Entry(
        "dane.tlsa.mismatch",
        _ERR,
        Stage.TLS,
        "DANE TLSA does not match the certificate",
        "DANE senders deliver only when a TLSA record matches the certificate the MX "
        "presents; none does, so they defer the mail and it bounces after days. Usually "
        "a certificate or key was renewed without updating the TLSA record.",
        "Publish a TLSA record for the current key (`3 1 1` plus the SHA-256 of its "
        "public key) next to the old one, wait for the TTL, then remove the old one.",
    ),
    Entry(
        "dane.tlsa.unsigned",
        _WARN,
        Stage.POLICY,
        "TLSA record in an unsigned zone",
        "DANE needs DNSSEC: senders ignore TLSA records they cannot validate, so these "
        "protect nothing.",
        "Sign the zone that holds the MX host (and publish its DS), or remove the TLSA records.",
    ),
    Entry(
        "dane.tlsa.unusable",
        _WARN,
        Stage.POLICY,
        "TLSA records unusable for SMTP",
        "RFC 7672 has SMTP senders ignore PKIX-TA(0) and PKIX-EE(1) records and records "
        "with unknown parameters, so the MX is not DANE-authenticated.",
        "Publish DANE-EE `3 1 1` (SHA-256 of the server's public key) or DANE-TA `2 1 1` "
        "records instead.",
    ),
    Entry(
        "dane.tls.unavailable",
        _ERR,
        Stage.TLS,
        "DANE published but the MX has no working TLS",
        "With valid TLSA records, DANE senders insist on TLS; this MX offers no "
        "STARTTLS or fails the handshake, so they defer and then bounce the mail.",
        "Fix STARTTLS on the MX, or withdraw the TLSA records (wait for their TTL) until it works.",
    ),
    # -- policy: blocklists ----------------------------------------------------------------
    Entry(
        "dnsbl.ok",
        _OK,
        Stage.POLICY,
        "MX addresses not on blocklists",
        "None of the domain's MX addresses is on the blocklists checked.",
        "",
    ),
    Entry(
        "dnsbl.listed",
        _ERR,
        Stage.POLICY,
        "MX address on a blocklist",
        "Receivers that use this list reject or junk mail from the address: if the MX "
        "also sends, the domain's mail bounces.",
        "Find out why (the list's lookup page gives the reason: spam, open relay, a "
        "compromised account), fix it, then request delisting.",
    ),
    Entry(
        "dnsbl.inconclusive",
        _INC,
        Stage.POLICY,
        "Blocklist gave no usable answer",
        "The list answered with an error code (for Spamhaus: queries through a public "
        "resolver or too many queries) or not at all; this says nothing about listing.",
        "Query through your own resolver (not 8.8.8.8 or 1.1.1.1), or with a list "
        "subscription key; set MAILCHECK_DNSBL_ZONES to the lists you can use.",
    ),
    # -- auth: logging in with a test account -----------------------------------------------
    Entry(
        "auth.mechanisms",
        _OK,
        Stage.AUTH,
        "Login methods offered",
        "The server offers these login methods once TLS is on.",
        "",
    ),
    Entry(
        "auth.ok",
        _OK,
        Stage.AUTH,
        "The test account logs in",
        "The account's login works by the methods listed, with the time each took.",
        "",
    ),
    Entry(
        "auth.failed",
        _ERR,
        Stage.AUTH,
        "The test account cannot log in",
        "Every login method the server offers refused the account: users with the same "
        "setup get 'authentication failed' (wrong password, locked account, a broken "
        "SASL backend, or a username format the server does not expect).",
        "Check the password and the username form (full address or local part), then the "
        "server's auth log (Dovecot: auth_verbose = yes) for the reason.",
    ),
    Entry(
        "auth.mechanisms.none",
        _ERR,
        Stage.AUTH,
        "No login method after TLS",
        "After TLS the server advertises no login method a client can use, so nobody can "
        "log in there (SMTP without AUTH, IMAP with LOGINDISABLED and no AUTH=, POP3 "
        "without USER).",
        "Enable SASL for this listener (Postfix: smtpd_sasl_auth_enable = yes on the "
        "submission service) and advertise it once TLS is on.",
    ),
    Entry(
        "auth.mechanisms.unavailable",
        _INC,
        Stage.AUTH,
        "Login methods not listed for now",
        "After TLS the server lists the SASL keyword with no mechanism after it: Dovecot "
        "does that while its login process waits for the auth service (busy or "
        "starting), so this says nothing about which logins it offers.",
        "Repeat later; if it persists, check that the auth service runs (Dovecot: "
        "doveadm log errors; the auth process limits).",
    ),
    Entry(
        "auth.cleartext.refused",
        _ERR,
        Stage.AUTH,
        "Logins offered only without TLS",
        "The server takes passwords only on an unencrypted connection. mailcheck refused "
        "to send the test account's password; users' clients send theirs in the clear.",
        "Offer STARTTLS (or implicit TLS) and allow AUTH only after it (Postfix: "
        "smtpd_tls_auth_only = yes; Dovecot: disable_plaintext_auth = yes).",
    ),
    Entry(
        "auth.withheld",
        _ERR,
        Stage.AUTH,
        "Password withheld: the server's certificate does not verify",
        "The server's TLS certificate does not lead to a trusted root, does not name the "
        "host the client connects to, or is out of date (or the server cannot do TLS 1.2). "
        "A mail client refuses such a server, or warns and teaches users to click through; "
        "an attacker in the path, or a hostile DNS record, can present exactly this. "
        "mailcheck hung up without sending the test account's password.",
        "Serve a certificate from a public CA (or your internal CA, given to mailcheck with "
        "MAILCHECK_CA_FILE) that names the host clients use, with its intermediates. A lab "
        "account may opt out with tls_verify = false in its profile.",
    ),
    Entry(
        "auth.unverified",
        _WARN,
        Stage.AUTH,
        "Password sent over TLS that does not verify",
        "The test account's profile sets tls_verify = false, so its password was sent "
        "although the certificate would make a mail client refuse the server. Anyone who "
        "can answer for that host could have taken it.",
        "Fix the certificate, then remove tls_verify = false from the profile.",
    ),
    Entry(
        "auth.account.refused",
        _ERR,
        Stage.AUTH,
        "Test account not used for a domain that is not its own",
        "A test account is used only for checks of its own domains (its address's domain "
        "and the domains its profile lists): any other domain's servers would receive its "
        "password.",
        "Check the account's own domain, or list this domain in the profile's domains if "
        "it is yours too.",
    ),
    # -- delivery: a message sent now, and when it arrives -----------------------------------
    Entry(
        "delivery.ok",
        _OK,
        Stage.DELIVERY,
        "Round trip delivered",
        "The tagged test message arrived; the finding carries the latency and the hops.",
        "",
    ),
    Entry(
        "delivery.slow",
        _WARN,
        Stage.DELIVERY,
        "Delivery is slow",
        "The test message arrived, but later than the slow threshold: users notice, and "
        "time-limited codes sent by mail expire. Usually greylisting, a content filter "
        "backlog, or a queue waiting on a slow next hop.",
        "Read the Received hops in the evidence: the long gap between two of them is "
        "where the time goes (then that host's queue and logs).",
    ),
    Entry(
        "delivery.timeout",
        _ERR,
        Stage.DELIVERY,
        "The test message did not arrive",
        "The server accepted the message but it did not reach the mailbox in time: it sits "
        "in a queue (deferred), was filtered to elsewhere, or was dropped.",
        "Look for the message's tag (in the finding's data) in the mail log; `postqueue -p` "
        "shows deferred mail with the reason.",
    ),
    Entry(
        "delivery.skipped",
        _INC,
        Stage.DELIVERY,
        "No round trip was possible",
        "The test account logged in nowhere it could submit, or has no IMAP server with "
        "implicit TLS (993) to watch: the round trip could not run.",
        "Fix the logins first (see the auth stage), or give the account's servers in its "
        "profile (smtp = host:port, imap = host:port).",
    ),
    Entry(
        "delivery.submit.rejected",
        _ERR,
        Stage.DELIVERY,
        "The test message was refused",
        "The server refused the test message (at MAIL FROM, RCPT TO or after DATA): mail "
        "sent the same way bounces at once.",
        "The refusal text in the summary names the rule; fix the sender, recipient or "
        "restriction it quotes.",
    ),
    # -- autoconfig: what mail clients would configure, and whether it works -----------------
    Entry(
        "autoconfig.found",
        _OK,
        Stage.AUTOCONFIG,
        "Thunderbird finds a configuration",
        "Thunderbird (and clients that share its format: K-9/Thunderbird for Android, "
        "Evolution, KMail) sets the account up from this file without asking.",
        "",
    ),
    Entry(
        "autoconfig.missing",
        _INFO,
        Stage.AUTOCONFIG,
        "No autoconfig file",
        "Thunderbird finds no config-v1.1.xml (at autoconfig.<domain>, the domain's "
        ".well-known path, the ISPDB, or the MX's domain), so it guesses host names and "
        "ports, and users type settings by hand when the guess fails.",
        "Serve `https://autoconfig.example.com/mail/config-v1.1.xml` with your IMAP/POP3 "
        "and SMTP servers (see the Mozilla autoconfig documentation).",
    ),
    Entry(
        "autoconfig.invalid",
        _ERR,
        Stage.AUTOCONFIG,
        "Autoconfig file is invalid",
        "The server answers with a file Thunderbird cannot use (not XML, missing "
        "servers, bad ports or socket types): it skips it and falls back to guessing.",
        "Fix the file to the config-v1.1.xml format: one emailProvider with "
        "incomingServer (imap or pop3) and outgoingServer (smtp) entries, each with "
        "hostname, port, socketType and authentication.",
    ),
    Entry(
        "autoconfig.insecure",
        _WARN,
        Stage.AUTOCONFIG,
        "Clients would be configured insecurely",
        "The configuration has users send their password or read their mail without "
        "TLS (socketType plain, cleartext password on a plain socket), or it is only "
        "served over http, where anyone on the path can rewrite it.",
        "Publish SSL (993/995/465) or STARTTLS (143/110/587) servers only, and serve the "
        "file over https.",
    ),
    Entry(
        "autoconfig.server.ok",
        _OK,
        Stage.AUTOCONFIG,
        "Configured server works",
        "mailcheck connected exactly as a client would (host, port, TLS mode) and the "
        "server answered as advertised.",
        "",
    ),
    Entry(
        "autoconfig.server.unreachable",
        _ERR,
        Stage.AUTOCONFIG,
        "Configured server does not answer",
        "Clients set up from this configuration cannot connect: the host does not "
        "resolve, or nothing answers on the advertised port. Users see a connection "
        "error right after setup.",
        "Point the configuration at the host and port that work (the summary says which "
        "does, when one does), or open the advertised port.",
    ),
    Entry(
        "autoconfig.server.mismatch",
        _ERR,
        Stage.AUTOCONFIG,
        "Configured server answers, but not as advertised",
        "The port answers, but not in the way the configuration says: SSL on a port "
        "that expects STARTTLS (or the reverse), STARTTLS that is not offered, another "
        "protocol. Clients fail with a TLS or protocol error.",
        "Correct the socket type or port in the configuration (SSL goes with 993/995/"
        "465, STARTTLS with 143/110/587).",
    ),
    Entry(
        "autoconfig.server.busy",
        _INC,
        Stage.AUTOCONFIG,
        "Configured server was too busy to check",
        "The server a configuration names turned us away (a 421, a full connection "
        "queue) or hung up before it could be checked, as busy servers do; this says "
        "nothing about the configuration.",
        "Repeat later; if it persists, raise the server's connection limits "
        "(Postfix: smtpd_client_connection_count_limit; Dovecot: process_limit).",
    ),
    Entry(
        "autoconfig.fetch.failed",
        _INC,
        Stage.AUTOCONFIG,
        "Configuration could not be fetched",
        "The connection to the configuration's URL was reset, closed or timed out "
        "midway, as a busy or rate-limiting web server does; this says nothing about "
        "the file.",
        "Repeat later; if it persists, check the web server's connection limits and logs.",
    ),
    Entry(
        "autodiscover.found",
        _OK,
        Stage.AUTOCONFIG,
        "Outlook autodiscover answers",
        "Outlook sets IMAP/POP3/SMTP accounts up from this autodiscover response.",
        "",
    ),
    Entry(
        "autodiscover.missing",
        _INFO,
        Stage.AUTOCONFIG,
        "No autodiscover",
        "Outlook finds no POX autodiscover response (on the domain, on autodiscover.<domain>,"
        " by http redirect or by SRV), so users enter IMAP/SMTP settings by hand.",
        "Serve `https://autodiscover.example.com/autodiscover/autodiscover.xml` answering "
        "POSTs with your IMAP and SMTP settings, or skip it if nobody uses Outlook.",
    ),
    Entry(
        "autodiscover.invalid",
        _ERR,
        Stage.AUTOCONFIG,
        "Autodiscover response is invalid",
        "Outlook cannot use the response (not XML, an error response, no IMAP/POP3/SMTP "
        "protocol, bad ports) and falls back to asking the user.",
        "Return a POX response (responseschema/2006a) with Account/Action settings and "
        "Protocol entries of Type IMAP and SMTP.",
    ),
    Entry(
        "autodiscover.redirect.refused",
        _WARN,
        Stage.AUTOCONFIG,
        "Autodiscover redirect not followed",
        "The response redirects to a place a client will not or should not go: a "
        "non-public address, plain http, a loop, or more than two hops. Outlook stops "
        "(or warns the user) there.",
        "Redirect (if at all) once, over https, to the public autodiscover host.",
    ),
    Entry(
        "autodiscover.server.unreachable",
        _ERR,
        Stage.AUTOCONFIG,
        "Autodiscover server does not answer",
        "Outlook configured from this response cannot connect: the host does not "
        "resolve, or nothing answers on the advertised port.",
        "Point the Protocol entries at the host and port that work.",
    ),
    Entry(
        "autodiscover.server.mismatch",
        _ERR,
        Stage.AUTOCONFIG,
        "Autodiscover server answers, but not as advertised",
        "The port answers, but not with the encryption or protocol the response names, "
        "so Outlook fails with a TLS or protocol error.",
        "Correct the Port, SSL or Encryption element of the Protocol entry.",
    ),
    Entry(
        "srv.server.unreachable",
        _ERR,
        Stage.AUTOCONFIG,
        "SRV target does not answer",
        "Clients that read RFC 6186 SRV records (Apple Mail, Evolution, KMail, "
        "Thunderbird add-ons) connect where the record points, and nothing answers there.",
        "Fix the SRV record's target or port (the summary says what works), or open the port.",
    ),
    Entry(
        "srv.server.mismatch",
        _ERR,
        Stage.AUTOCONFIG,
        "SRV target answers, but not as its service name says",
        "`_imaps`, `_pop3s` and `_submissions` mean implicit TLS; `_imap`, `_pop3` and "
        "`_submission` mean STARTTLS. The server at the target answers differently.",
        "Publish the record under the service name that matches the port's TLS mode.",
    ),
    Entry(
        "mobileconfig.ok",
        _OK,
        Stage.AUTOCONFIG,
        "Apple configuration profile",
        "iPhones, iPads and Macs install this profile and get a working mail account.",
        "",
    ),
    Entry(
        "mobileconfig.invalid",
        _ERR,
        Stage.AUTOCONFIG,
        "Apple configuration profile is invalid",
        "The profile cannot be fetched, is not a plist, or has no usable "
        "com.apple.mail.managed payload: iOS refuses to install it or creates a broken "
        "account.",
        "Regenerate the profile with Apple Configurator (or fix the keys named in the "
        "summary) and serve it as application/x-apple-aspen-config over https.",
    ),
    Entry(
        "mobileconfig.signature.unverified",
        _WARN,
        Stage.AUTOCONFIG,
        "Apple configuration profile is signed, but the signature does not verify",
        "A signature only says who made a profile when it matches the profile and the "
        "signer's certificate leads to a trusted root. This one does not (the summary says "
        "why: changed after signing, signed with another key than the certificate's, "
        "self-signed, unknown CA, missing intermediate or expired), so anyone could have "
        "made it, and iOS shows it as Not Verified.",
        "Sign the profile as served with a certificate from a CA devices trust, include its "
        "intermediate certificates, and change nothing after signing; the reproduce "
        "command shows OpenSSL's verdict.",
    ),
    # -- TLS ---------------------------------------------------------------------------------
    Entry(
        "tls.ok",
        _OK,
        Stage.TLS,
        "TLS and certificate in order",
        "The certificate is trusted, names this host, is in date, and the connection uses "
        "a modern protocol and cipher.",
        "",
    ),
    Entry(
        "tls.cert.expired",
        _ERR,
        Stage.TLS,
        "Certificate expired",
        "Clients refuse the connection (users see a certificate warning or cannot connect); "
        "on an MX, senders that verify (MTA-STS, DANE) stop delivering.",
        "Renew the certificate and reload the server (and check why automatic renewal "
        "did not run).",
    ),
    Entry(
        "tls.cert.not_yet_valid",
        _ERR,
        Stage.TLS,
        "Certificate not yet valid",
        "The certificate's start date is in the future (or the server's clock is wrong); "
        "clients refuse it.",
        "Check the server's clock; install a currently valid certificate.",
    ),
    Entry(
        "tls.cert.expiring",
        _WARN,
        Stage.TLS,
        "Certificate expires soon",
        "The certificate expires within 14 days (error within 3); renewal must happen now.",
        "Renew the certificate and reload the server; check that automatic renewal works.",
    ),
    Entry(
        "tls.cert.hostname_mismatch",
        _ERR,
        Stage.TLS,
        "Certificate does not name this host",
        "The host name clients connect to is not among the certificate's names, so they "
        "reject it (users see a warning).",
        "Get a certificate that includes this host name (as a SAN), or point clients and "
        "DNS at a name the certificate covers.",
    ),
    Entry(
        "tls.cert.untrusted",
        _ERR,
        Stage.TLS,
        "Certificate not trusted",
        "The certificate is self-signed or issued by a CA that clients do not trust, so "
        "they refuse it or show a warning.",
        "Use a certificate from a public CA (e.g. Let's Encrypt).",
    ),
    Entry(
        "tls.cert.chain_incomplete",
        _ERR,
        Stage.TLS,
        "Intermediate certificate missing",
        "The server sends its certificate without the intermediate CA certificate, so "
        "clients that do not already have it cannot build a chain to a trusted root; "
        "typically desktop clients work and phones fail.",
        "Configure the full chain file (Let's Encrypt: fullchain.pem, not cert.pem; "
        "Postfix smtpd_tls_chain_files, Dovecot ssl_cert with the chain appended).",
    ),
    Entry(
        "tls.handshake.failed",
        _ERR,
        Stage.TLS,
        "TLS handshake failed",
        "The TLS handshake did not complete: no common protocol or cipher, a broken "
        "certificate setup, or plain text on a port that should speak TLS.",
        "Reproduce with the openssl command; check the server's TLS settings and log.",
    ),
    Entry(
        "tls.protocol.legacy",
        _WARN,
        Stage.TLS,
        "TLS 1.0/1.1 still accepted",
        "TLS 1.0 and 1.1 are deprecated (RFC 8996) and weak; accepting them invites "
        "downgrade attacks and fails compliance scans.",
        "Require TLS 1.2 or later (Postfix: smtpd_tls_protocols = >=TLSv1.2; Dovecot: "
        "ssl_min_protocol = TLSv1.2).",
    ),
    Entry(
        "tls.cipher.weak",
        _ERR,
        Stage.TLS,
        "Weak cipher negotiated",
        "The connection was encrypted with a broken or weak cipher (RC4, 3DES, NULL, "
        "export grade, or under 128 bits), which does not protect the traffic.",
        "Restrict the cipher list to modern AEAD ciphers and let the server choose.",
    ),
    Entry(
        "tls.key.weak",
        _ERR,
        Stage.TLS,
        "Weak certificate key",
        "The certificate's key is too small (RSA under 2048 bits, EC under 224) to be "
        "safe; modern clients reject it.",
        "Issue a new certificate with an RSA 2048+ or EC P-256 key.",
    ),
    # -- send test: a message the domain's server sent to our receiver ---------------------
    Entry(
        "sendtest.ok",
        _OK,
        Stage.SENDTEST,
        "Test message received",
        "The domain's server delivered the test message; the summary lists what passed "
        "(source, TLS, SPF, DKIM, DMARC).",
        "",
    ),
    Entry(
        "sendtest.submitted",
        _INFO,
        Stage.SENDTEST,
        "Test message submitted",
        "mailcheck logged in with the test account and submitted the test message; the "
        "verdict follows when it arrives.",
        "Nothing to do: wait for the verdict in the same thread (or terminal).",
    ),
    Entry(
        "sendtest.submit.failed",
        _ERR,
        Stage.SENDTEST,
        "The test message could not be submitted",
        "mailcheck could not hand the test message to the domain's submission server with "
        "the test account (no login worked, or the server refused the message), so the "
        "send test has nothing to judge.",
        "The summary quotes the refusal; the auth stage (`mailcheck check --account NAME`) "
        "shows which logins work.",
    ),
    Entry(
        "sendtest.timeout",
        _ERR,
        Stage.SENDTEST,
        "No test message arrived",
        "Nothing reached the test address before the deadline: the message was never sent, "
        "sits in the sender's queue (deferred), or was sent somewhere else.",
        "Check the sender's mail log and queue (`postqueue -p`, `mailq`) for the test "
        "address; a deferral reason there names the problem (DNS, TLS, a refusal).",
    ),
    Entry(
        "sendtest.ptr.missing",
        _ERR,
        Stage.SENDTEST,
        "The sending address has no reverse DNS",
        "The address the message came from has no PTR record. Gmail, Microsoft and many "
        "others refuse or junk mail from such addresses (Gmail: 550 5.7.25).",
        "Ask whoever owns the address (your hosting provider or ISP) to set a PTR record "
        "naming the server, and give that name an A/AAAA record pointing back.",
    ),
    Entry(
        "sendtest.ptr.mismatch",
        _WARN,
        Stage.SENDTEST,
        "The sending address's reverse DNS is not forward-confirmed",
        "The PTR name of the sending address does not resolve back to that address. "
        "Receivers that check forward-confirmed reverse DNS (FCrDNS) treat it as unnamed.",
        "Give the PTR name an A/AAAA record with the sending address, or change the PTR "
        "to a name that has one.",
    ),
    Entry(
        "sendtest.helo.invalid",
        _WARN,
        Stage.SENDTEST,
        "The sender's HELO name is invalid",
        "The sending server introduced itself (HELO/EHLO) with something that is not a "
        "fully qualified host name or a matching address literal. Many receivers refuse "
        "it outright (Postfix: reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname).",
        "Set the server's outgoing name to its public host name (Postfix: smtp_helo_name or "
        "myhostname; Exim: primary_hostname; Exchange: the send connector's FQDN).",
    ),
    Entry(
        "sendtest.helo.unresolvable",
        _WARN,
        Stage.SENDTEST,
        "The sender's HELO name does not exist",
        "The host name the server gave in HELO/EHLO has no address in DNS; receivers with "
        "reject_unknown_helo_hostname refuse the mail.",
        "Publish an A/AAAA record for the HELO name, or make the server use a name that has one.",
    ),
    Entry(
        "sendtest.helo.mismatch",
        _INFO,
        Stage.SENDTEST,
        "The HELO name points elsewhere",
        "The HELO name resolves, but not to the address the message came from. Most "
        "receivers accept this; some spam filters score it.",
        "Use the sending server's own name (the one its PTR record gives) in HELO.",
    ),
    Entry(
        "sendtest.tls.none",
        _WARN,
        Stage.SENDTEST,
        "The message was sent without TLS",
        "Our receiver offered STARTTLS but the sender delivered in cleartext: anyone on the "
        "path can read the mail, and Gmail shows such messages with a red open lock.",
        "Enable opportunistic TLS for outgoing mail (Postfix: smtp_tls_security_level = may; "
        "Exim: it is the default unless hosts_avoid_tls is set).",
    ),
    Entry(
        "sendtest.tls.old",
        _WARN,
        Stage.SENDTEST,
        "The sender used an old TLS version",
        "TLS 1.0 and 1.1 are deprecated (RFC 8996); receivers are turning them off, and the "
        "sender would then fall back to cleartext or fail.",
        "Allow TLS 1.2 and 1.3 in the sending server's client settings (Postfix: "
        "smtp_tls_protocols) and update its OpenSSL.",
    ),
    Entry(
        "sendtest.spf.fail",
        _ERR,
        Stage.SENDTEST,
        "SPF fails for the sender",
        "The MAIL FROM domain's SPF record says this address may not send its mail (-all "
        "matched). Receivers reject it or, with DMARC, count it as failing.",
        "Add the sending address (or its network, or an include: of your provider) to the "
        "MAIL FROM domain's SPF record before -all.",
    ),
    Entry(
        "sendtest.spf.softfail",
        _WARN,
        Stage.SENDTEST,
        "SPF softfails for the sender",
        "The MAIL FROM domain's SPF record does not list this address (~all matched): "
        "receivers accept it but mark it suspicious, and it does not count for DMARC.",
        "Add the sending address (or an include: of your provider) to the SPF record.",
    ),
    Entry(
        "sendtest.spf.none",
        _WARN,
        Stage.SENDTEST,
        "SPF says nothing about the sender",
        "The MAIL FROM domain has no SPF record, or its record neither allows nor refuses "
        "this address (neutral): SPF cannot vouch for the mail, so DMARC rests on DKIM alone.",
        "Publish an SPF record for the MAIL FROM domain that lists its sending addresses "
        "and ends in -all or ~all.",
    ),
    Entry(
        "sendtest.spf.error",
        _ERR,
        Stage.SENDTEST,
        "SPF evaluation of the sender fails",
        "Evaluating the MAIL FROM domain's SPF record ended in permerror (a syntax error, "
        "too many lookups) or temperror (DNS failed): receivers treat permerror as a fail.",
        "The summary names the record or term at fault; `mailcheck check` on the domain "
        "shows the whole SPF lookup tree.",
    ),
    Entry(
        "sendtest.spf.helo_fail",
        _WARN,
        Stage.SENDTEST,
        "SPF fails for the HELO name",
        "The HELO name's domain has an SPF record that refuses this address; receivers that "
        "check the HELO identity (RFC 7208 2.3) may reject before MAIL FROM.",
        "List the server's address in the SPF record of its HELO name (a:host or ip4:), or "
        "publish `v=spf1 a -all` at the host name itself.",
    ),
    Entry(
        "sendtest.dkim.none",
        _WARN,
        Stage.SENDTEST,
        "The message is not DKIM-signed",
        "Without a DKIM signature the mail's DMARC result rests on SPF alone, which breaks "
        "on every forward. Gmail and Yahoo require DKIM from bulk senders.",
        "Sign outgoing mail (OpenDKIM or rspamd with Postfix; your provider's DKIM setting) "
        "and publish the key at <selector>._domainkey.<domain>.",
    ),
    Entry(
        "sendtest.dkim.fail",
        _ERR,
        Stage.SENDTEST,
        "The DKIM signature does not verify",
        "The message is signed, but the signature fails: the key in DNS is not the signing "
        "key, the key is missing or too short, or the message changed after signing.",
        "Compare the public key at the selector with the signer's private key; check that "
        "nothing (a footer, a filter) rewrites mail after signing.",
    ),
    Entry(
        "sendtest.dkim.temperror",
        _INC,
        Stage.SENDTEST,
        "The DKIM key could not be looked up",
        "DNS gave no answer for the signature's key, so the signature could not be checked.",
        "Repeat the lookup with the reproduce command; check the domain's nameservers.",
    ),
    Entry(
        "sendtest.dkim.skipped",
        _INC,
        Stage.SENDTEST,
        "Some DKIM or ARC signatures were not verified",
        "Every signature hashes the whole body again, so mailcheck bounds the work per "
        "message: the first few DKIM signatures, a short ARC chain, a cap on bytes hashed, "
        "and a deadline. Signatures past a bound are not judged, and neither is DMARC "
        "alignment that rests on them; receivers bound their work too, and may ignore them.",
        "Sign each message once or twice (your domain, perhaps your provider), keep ARC "
        "chains short, and find out what adds extra signatures. A huge body is verified "
        "only within the bounds: test with a normal-sized message.",
    ),
    Entry(
        "sendtest.arc.fail",
        _WARN,
        Stage.SENDTEST,
        "The ARC chain does not validate",
        "The message carries ARC headers (from a forwarder or list) that do not verify, so "
        "receivers will not trust the authentication results it claims.",
        "Check the ARC signer's key and that nothing modifies the message after sealing.",
    ),
    Entry(
        "sendtest.dmarc.none",
        _WARN,
        Stage.SENDTEST,
        "No DMARC policy for the From: domain",
        "The From: domain (and its organisational domain) publishes no usable DMARC record: "
        "anyone can send as it, and Gmail and Yahoo require one from bulk senders.",
        "Publish `v=DMARC1; p=none; rua=mailto:...` at _dmarc.<domain>, read the reports, "
        "then move to quarantine or reject.",
    ),
    Entry(
        "sendtest.dmarc.fail",
        _ERR,
        Stage.SENDTEST,
        "The message fails DMARC",
        "Neither SPF nor DKIM passed for a domain aligned with the From: domain, so "
        "receivers apply the domain's DMARC policy to it: reject, quarantine, or (p=none) "
        "deliver and report.",
        "Make one pass aligned: sign with d= the From: domain (or its parent), or send with "
        "a MAIL FROM in that domain from an address its SPF allows.",
    ),
    Entry(
        "sendtest.header.from",
        _ERR,
        Stage.SENDTEST,
        "The From: header is missing or malformed",
        "RFC 5322 requires exactly one From: header; DMARC needs one address in it. Gmail "
        "and Microsoft reject messages without it.",
        "Fix the program that composes the mail so it writes one From: with one address.",
    ),
    Entry(
        "sendtest.header.date",
        _WARN,
        Stage.SENDTEST,
        "The Date: header is missing or wrong",
        "A message needs one Date: header (RFC 5322 3.6). Missing, unreadable or far off "
        "it hurts spam scores and sorts the mail wrongly in clients.",
        "Let the MTA add Date: (Postfix does for local submissions), and keep the sender's "
        "clock in sync (NTP).",
    ),
    Entry(
        "sendtest.header.message_id",
        _WARN,
        Stage.SENDTEST,
        "The Message-ID: header is missing or malformed",
        "Gmail requires a Message-ID and others score its absence as spam; threading in "
        "clients relies on it.",
        "Let the MTA add Message-ID: (Postfix: always_add_missing_headers = yes) or fix the "
        "sending application.",
    ),
    Entry(
        "sendtest.domain.other",
        _WARN,
        Stage.SENDTEST,
        "The message came from another domain",
        "Neither the From: nor the MAIL FROM domain is the domain under test, so this "
        "verdict describes another domain's setup.",
        "Send the test message from an address of the domain under test.",
    ),
    Entry(
        "sendtest.dnsbl.listed",
        _ERR,
        Stage.SENDTEST,
        "The sending address is on a blocklist",
        "Receivers that use this blocklist refuse or junk mail from the address.",
        "Find and stop the cause (an open relay, a compromised account, a spamming "
        "customer), then request delisting at the list's website.",
    ),
    Entry(
        "sendtest.dnsbl.inconclusive",
        _INC,
        Stage.SENDTEST,
        "A blocklist gave no usable answer for the sending address",
        "The blocklist refused the query or answered with an error code, so whether the "
        "address is listed is unknown.",
        "Query the list from a resolver of your own (public resolvers are often refused).",
    ),
)

CATALOG: Mapping[str, Entry] = {e.code: e for e in _ENTRIES}
if len(CATALOG) != len(_ENTRIES):  # pragma: no cover - guards edits to the table
    raise RuntimeError("duplicate finding code in catalog")


def entry(code: str) -> Entry:
    try:
        return CATALOG[code]
    except KeyError:
        raise KeyError(f"finding code {code!r} is not in the catalog") from None


def finding(
    code: str,
    *,
    target: Target,
    summary: str,
    detail: str | None = None,
    evidence: Iterable[str] = (),
    fix: str | None = None,
    reproduce: str | None = None,
    severity: Severity | None = None,
    data: Mapping[str, Any] | None = None,
    stage: Stage | None = None,
) -> Finding:
    """Build a Finding for a catalogued code, defaulting severity, detail, fix
    and stage (engine.* codes take the stage of the probe they concern)."""
    e = entry(code)
    return Finding(
        code=code,
        severity=severity if severity is not None else e.severity,
        stage=stage if stage is not None else e.stage,
        target=target,
        summary=summary,
        detail=detail if detail is not None else e.why,
        evidence=tuple(evidence),
        fix=fix if fix is not None else e.fix,
        reproduce=reproduce,
        data=dict(data or {}),
    )


def markdown() -> str:
    """The catalog as the Markdown page docs/findings.md."""
    lines = [
        "# Finding codes",
        "",
        "Generated from `checks/core/catalog.py` by `mailcheck codes --markdown`; do not edit.",
        "",
    ]
    for stage in Stage:
        entries = [e for e in _ENTRIES if e.stage is stage]
        if not entries:
            continue
        lines += [f"## {stage.value}", ""]
        for e in entries:
            lines += [f"### `{e.code}` ({e.severity.value})", "", f"**{e.title}.** {e.why}", ""]
            if e.fix:
                lines += [f"*Fix:* {e.fix}", ""]
    return "\n".join(lines)
