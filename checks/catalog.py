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

from checks.model import Finding, Severity, Stage, Target


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
) -> Finding:
    """Build a Finding for a catalogued code, defaulting severity, detail and fix."""
    e = entry(code)
    return Finding(
        code=code,
        severity=severity if severity is not None else e.severity,
        stage=e.stage,
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
        "Generated from `checks/catalog.py` by `mailcheck codes --markdown`; do not edit.",
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
