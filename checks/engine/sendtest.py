"""The send test's judgement: a message the domain's server sent us, read as a
careful receiver reads it.

The receiver (bot/receiver.py) keeps what it saw of one SMTP transaction as a
`Received`: the connecting address, the HELO name, TLS, the envelope, the SMTP
commands and the message. `judge_message()` runs the probes below on it through the
network door (our resolver, the target policy) and returns an ordinary
`Report` of the `sendtest` stage, so every renderer shows it like a check:

- the source: reverse DNS of the connecting address, forward-confirmed;
- the HELO/EHLO name: its syntax, and whether it names the sender;
- TLS: whether the sender used it, and which version and cipher;
- SPF for MAIL FROM and for the HELO name (our RFC 7208 evaluator);
- DKIM signatures verified (dkimpy, fed keys we looked up), ARC when present;
- DMARC alignment of SPF and DKIM with the From: domain, and the policy outcome;
- header sanity (From, Date, Message-ID) and the source on DNS blocklists.

Everything in a `Received` came from the sender: untrusted, bounded (`untrusted()`)
before it reaches a finding.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from checks.core import catalog
from checks.core.config import EngineConfig
from checks.core.errors import (
    DNSError,
    InputError,
    NetError,
    NXDomain,
    ResolverFailure,
    TargetRefused,
)
from checks.core.model import CheckRequest, Report, Severity, Stage, Target
from checks.core.names import within
from checks.core.text import untrusted
from checks.engine import runner
from checks.rules import dkimverify, dmarc
from checks.rules.dkimverify import Signature
from checks.rules.spf import Result, Verdict, check_host
from checks.stages import default_probes
from checks.stages.auth import Logins, account_of
from checks.stages.delivery import profile_endpoint, send_message
from checks.stages.dns import reverse_dns
from checks.stages.keys import LOGIN
from checks.stages.policy import NetworkLookup, blocklists, find_dmarc
from checks.stages.probe import Key, Probe, ProbeContext, ProbeFunc

TOKEN_PREFIX = "st-"
OLD_TLS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})
# A Date more than this far from when the message arrived is a wrong clock.
DATE_FUTURE = 2 * 3600
DATE_PAST = 24 * 3600
_MESSAGE_ID = re.compile(r"^\s*<[^<>@\s]+@[^<>\s]+>\s*$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)


# -- what the receiver saw -----------------------------------------------------------


@dataclass(frozen=True)
class TLSInfo:
    version: str  # "TLSv1.3"
    cipher: str  # "TLS_AES_256_GCM_SHA384"
    bits: int | None = None


@dataclass(frozen=True)
class Received:
    """One SMTP transaction as the receiver saw it. Nothing here is trusted."""

    token: str  # the test's token (from the recipient address)
    peer: str  # the connecting address
    helo: str  # the HELO/EHLO argument as given; "" if none
    esmtp: bool  # EHLO rather than HELO
    mail_from: str  # the reverse path; "" for the null sender
    recipients: tuple[str, ...]
    tls: TLSInfo | None
    received_at: float  # Unix time the message was accepted
    message: bytes
    receiver: str  # the name our receiver greets with (SPF's %{r})
    session: tuple[str, ...] = ()  # the SMTP commands and our replies, no message text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["message"] = base64.b64encode(self.message).decode()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Received:
        fields = dict(data)
        fields["message"] = base64.b64decode(fields["message"])
        fields["recipients"] = tuple(fields["recipients"])
        fields["session"] = tuple(fields.get("session", ()))
        tls = fields.get("tls")
        fields["tls"] = TLSInfo(**tls) if tls else None
        return cls(**fields)


def token_address(token: str, domain: str) -> str:
    return f"{TOKEN_PREFIX}{token}@{domain}"


def token_of(address: str, domain: str) -> str | None:
    """The token in a recipient address of our receiving domain, or None."""
    local, at, rcpt_domain = address.strip().strip("<>").rpartition("@")
    if not at or rcpt_domain.lower().rstrip(".") != domain.lower().rstrip("."):
        return None
    local = local.lower()
    if not local.startswith(TOKEN_PREFIX) or len(local) <= len(TOKEN_PREFIX):
        return None
    return local[len(TOKEN_PREFIX) :]


# -- pure rules --------------------------------------------------------------------------


def helo_problem(helo: str, peer: str) -> str | None:
    """Why receivers refuse this HELO/EHLO name, or None when its syntax is fine.

    RFC 5321 4.1.1.1 asks for the client's fully qualified domain name or an
    address literal; Postfix's reject_invalid_helo_hostname and
    reject_non_fqdn_helo_hostname are the common enforcement.
    """
    name = helo.strip()
    shown = untrusted(name, 100)
    if not name:
        return "no name given"
    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1].removeprefix("IPv6:").removeprefix("ipv6:")
        try:
            address = ipaddress.ip_address(literal)
        except ValueError:
            return f"{shown} is not a valid address literal"
        if address != ipaddress.ip_address(peer):
            return f"the address literal {shown} is not the connecting address {peer}"
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f"{shown} is a bare IP address (an address literal needs brackets: [{shown}])"
    labels = name.rstrip(".").split(".")
    if len(labels) < 2:
        return f"{shown} is not a fully qualified domain name"
    lowered = name.lower().rstrip(".")
    if lowered in ("localhost.localdomain",) or lowered.endswith((".localdomain", ".local")):
        return f"{shown} is a local name, not one in public DNS"
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return f"{shown} is not a valid host name (letters, digits and hyphens in labels)"
    if labels[-1].isdigit():
        return f"{shown} ends in a numeric label"
    return None


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """DMARC identifier alignment (RFC 7489 3.1): strict is equality; relaxed
    is the same organisational domain."""
    a, b = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return a == b
    return dmarc.organizational_domain(a) == dmarc.organizational_domain(b)


def date_problem(value: str | None, received_at: float) -> str | None:
    if value is None:
        return "no Date: header"
    try:
        sent = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return f"Date: {untrusted(value, 100)} cannot be read (RFC 5322 3.3)"
    if sent.tzinfo is None:  # "-0000": UTC, the sender's zone unknown (RFC 5322 3.3)
        sent = sent.replace(tzinfo=UTC)
    skew = sent.timestamp() - received_at
    if skew > DATE_FUTURE:
        return f"Date: {untrusted(value, 100)} is {_hours(skew)} in the future: a wrong clock"
    if -skew > DATE_PAST:
        return (
            f"Date: {untrusted(value, 100)} is {_hours(-skew)} old: a wrong clock or a stale queue"
        )
    return None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def parse_headers(message: bytes) -> Message:
    """The header section only, leniently (compat32: a malformed header is kept
    as text, never an exception). The body is not read: it can be 10 MB."""
    end = len(message) - dkimverify.body_size(message)
    return BytesHeaderParser(policy=compat32).parsebytes(message[:end])


def from_domain(headers: Message) -> tuple[str | None, str | None]:
    """(the single From: address's domain, or None; why there is none)."""
    values = headers.get_all("From") or []
    if not values:
        return None, "no From: header"
    if len(values) > 1:
        return None, f"{len(values)} From: headers (RFC 5322 allows one)"
    addresses = [a for _, a in email.utils.getaddresses([str(values[0])]) if a]
    if len(addresses) != 1:
        return None, f"From: {untrusted(str(values[0]), 100)} does not hold exactly one address"
    domain = addresses[0].rpartition("@")[2].lower().rstrip(".")
    if "@" not in addresses[0] or not domain:
        return None, f"From: {untrusted(addresses[0], 100)} has no domain"
    return domain, None


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


# -- DKIM and ARC through our resolver -----------------------------------------------


def _signing_names(headers: Message, header: str) -> list[tuple[str, str]]:
    """(d, s) of every `header` (DKIM-Signature, ARC-Seal...) in the message, in
    order, "" where a tag is missing: dkimpy counts every header, so the
    positions must stay its positions."""
    found = []
    for line in headers.get_all(header) or []:
        tags: dict[str, str] = {}
        for part in re.sub(r"\s+", "", str(line)).split(";"):
            key, eq, value = part.partition("=")
            if eq:
                tags.setdefault(key.lower(), value)
        found.append((tags.get("d", "").lower(), tags.get("s", "")))
    return found


async def _keys(ctx: ProbeContext, names: list[str]) -> dict[str, dkimverify.Key]:
    """The TXT record at each `<s>._domainkey.<d>` name, as dkimpy wants it
    (None: no record; text: why the lookup failed)."""

    async def one(name: str) -> dkimverify.Key:
        try:
            answer = await ctx.net.query(name, "TXT")
        except NXDomain:
            return None
        except ResolverFailure as exc:
            return str(exc)
        for record in answer.records:
            return b"".join(record.strings)
        return None

    values = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, values, strict=True))


# -- probes ---------------------------------------------------------------------------


def _target(received: Received, host: str | None = None) -> Target:
    return Target(host=host, address=received.peer, protocol="smtp")


def _session_lines(received: Received, *starts: str) -> list[str]:
    """The SMTP session lines that begin with one of `starts` (case-blind)."""
    wanted = tuple(s.upper() for s in starts)
    return [line for line in received.session if line.upper().lstrip("<> ").startswith(wanted)]


async def probe_source(received: Received, parsed: Message, ctx: ProbeContext) -> tuple[str, ...]:
    address = received.peer
    target = _target(received)
    reproduce = ctx.net.dig(address, "PTR")
    try:
        found = await reverse_dns(ctx.net, address)
    except ResolverFailure as exc:
        ctx.add(
            "dns.resolver.failure",
            target=target,
            summary=f"PTR lookup for {address} failed: {exc}",
            reproduce=reproduce,
            stage=Stage.SENDTEST,
        )
        return ()
    ctx.fact("sendtest.ptr", list(found.names))
    if not found.names:
        ctx.add(
            "sendtest.ptr.missing",
            target=target,
            summary=f"the sending address {address} has no PTR record",
            reproduce=reproduce,
        )
    elif found.failure is None and not found.confirmed:
        ctx.add(
            "sendtest.ptr.mismatch",
            target=Target(host=found.names[0], address=address, protocol="smtp"),
            summary=(
                f"{address} has PTR {', '.join(found.names)}, which does not resolve "
                f"back to {address}"
            ),
            evidence=found.lines,
            reproduce=f"{reproduce}; {ctx.net.dig(found.names[0], 'A')}",
        )
    return found.confirmed


async def probe_helo(received: Received, parsed: Message, ctx: ProbeContext) -> str | None:
    """The HELO name when it is a proper host name, else None."""
    name = untrusted(received.helo, 255)
    target = _target(received, name or None)
    evidence = _session_lines(received, "EHLO", "HELO")
    problem = helo_problem(received.helo, received.peer)
    if problem is not None:
        ctx.add(
            "sendtest.helo.invalid",
            target=target,
            summary=f"the sender introduced itself as {name or '(nothing)'}: {problem}",
            evidence=evidence,
        )
        return None
    if name.startswith("["):
        return None
    rdtype = "AAAA" if ":" in received.peer else "A"
    try:
        answer = await ctx.net.query(name, rdtype)
    except NXDomain:
        ctx.add(
            "sendtest.helo.unresolvable",
            target=target,
            summary=f"the HELO name {name} does not exist in DNS",
            evidence=evidence,
            reproduce=ctx.net.dig(name, rdtype),
        )
        return name
    except ResolverFailure:
        return name
    found = {str(ipaddress.ip_address(t)) for t in answer.texts()}
    if str(ipaddress.ip_address(received.peer)) not in found:
        ctx.add(
            "sendtest.helo.mismatch",
            target=target,
            summary=(
                f"the HELO name {name} resolves to {', '.join(sorted(found)) or 'nothing'}, "
                f"not to the sending address {received.peer}"
            ),
            evidence=evidence,
            reproduce=ctx.net.dig(name, rdtype),
        )
    return name


async def probe_tls(received: Received, parsed: Message, ctx: ProbeContext) -> None:
    target = _target(received)
    if received.tls is None:
        ctx.add(
            "sendtest.tls.none",
            target=target,
            summary=f"{received.peer} sent the message without TLS (no STARTTLS)",
            evidence=_session_lines(received, "EHLO", "HELO", "MAIL", "250-STARTTLS"),
        )
        return
    ctx.fact("sendtest.tls", asdict(received.tls))
    if received.tls.version in OLD_TLS:
        ctx.add(
            "sendtest.tls.old",
            target=target,
            summary=(
                f"the sender used {received.tls.version} ({received.tls.cipher}); "
                "TLS 1.2 is the oldest version receivers should accept"
            ),
        )


async def probe_spf(received: Received, parsed: Message, ctx: ProbeContext) -> dict[str, Result]:
    """SPF for MAIL FROM (postmaster@HELO for the null sender) and for HELO."""
    lookup = NetworkLookup(ctx.net)
    helo_name = received.helo.strip()
    results: dict[str, Result] = {}
    sender = received.mail_from or f"postmaster@{helo_name}"
    checks = {"mailfrom": (_domain_of(sender), sender)}
    if helo_problem(helo_name, received.peer) is None and not helo_name.startswith("["):
        checks["helo"] = (helo_name.lower().rstrip("."), f"postmaster@{helo_name}")
    done = await asyncio.gather(
        *(
            check_host(received.peer, domain, who, lookup, helo_name, receiver=received.receiver)
            for domain, who in checks.values()
        )
    )
    results = dict(zip(checks, done, strict=True))
    mail = results["mailfrom"]
    ctx.fact("sendtest.spf", {k: r.result.value for k, r in results.items()})
    target = Target(host=mail.domain, address=received.peer, protocol="smtp")
    dig = ctx.net.dig(mail.domain, "TXT")
    evidence = [*_session_lines(received, "MAIL"), *_tree(mail)]
    about = f"SPF for MAIL FROM <{untrusted(received.mail_from, 200)}> from {received.peer}"
    code = _SPF_CODES.get(mail.result)
    if code is not None:
        if mail.result in (Verdict.PERMERROR, Verdict.TEMPERROR):
            why = mail.problem or "no detail"
        elif mail.mechanism:
            why = mail.mechanism
        else:
            why = "default" if mail.result is not Verdict.NONE else f"no record at {mail.domain}"
        ctx.add(
            code,
            target=target,
            summary=f"{about}: {mail.result.value} ({why})",
            evidence=evidence,
            reproduce=dig,
            severity=Severity.INCONCLUSIVE if mail.result is Verdict.TEMPERROR else None,
        )
    helo_result = results.get("helo")
    if helo_result is not None and helo_result.result is Verdict.FAIL:
        ctx.add(
            "sendtest.spf.helo_fail",
            target=Target(host=helo_result.domain, address=received.peer, protocol="smtp"),
            summary=(
                f"SPF for the HELO name {helo_result.domain} fails for {received.peer} "
                f"({helo_result.mechanism or 'default'})"
            ),
            evidence=_tree(helo_result),
            reproduce=ctx.net.dig(helo_result.domain, "TXT"),
        )
    return results


async def probe_dkim(received: Received, parsed: Message, ctx: ProbeContext) -> list[Signature]:
    message = received.message
    dkim_names = _signing_names(parsed, "DKIM-Signature")
    seals = _signing_names(parsed, "ARC-Seal")
    arc_names = [*seals, *_signing_names(parsed, "ARC-Message-Signature")]
    limits = ctx.net.config.cpu
    arc_sets = max(len(seals), len(arc_names) - len(seals))
    planned = dkimverify.plan(message, dkim_names, arc_sets, limits)
    # Keys only for the signatures verified: a message can name thousands.
    wanted = [*planned.dkim, *(arc_names if planned.arc else ())]
    names = {f"{s}._domainkey.{d}".lower() for d, s in wanted if d and s}
    keys = await _keys(ctx, sorted(names))
    verified = await dkimverify.verify(message, planned, keys, limits)
    found = list(verified.signatures)
    ctx.fact("sendtest.dkim", [asdict(s) for s in found])
    ctx.fact(
        "sendtest.dkim.work",
        {
            "verified": sum(s.result != "skipped" for s in found),
            "skipped": sum(s.result == "skipped" for s in found),
            "body_bytes_hashed": verified.hashed,
        },
    )
    target = _target(received)
    if verified.skipped:
        ctx.add(
            "sendtest.dkim.skipped",
            target=target,
            summary="; ".join(verified.skipped),
            evidence=[
                f"{s.result}: d={untrusted(s.domain, 100)} s={untrusted(s.selector, 100)}"
                for s in found[:20]
            ],
        )
    if not found:
        ctx.add(
            "sendtest.dkim.none",
            target=target,
            summary="the message carries no DKIM-Signature",
        )
    elif not any(s.result == "pass" for s in found):
        for sig in found:
            if sig.result == "skipped":
                continue  # sendtest.dkim.skipped says why
            name = f"{sig.selector}._domainkey.{sig.domain}"
            ctx.add(
                "sendtest.dkim.fail" if sig.result == "fail" else "sendtest.dkim.temperror",
                target=Target(host=name, address=received.peer, protocol="smtp"),
                summary=f"DKIM signature d={sig.domain} s={sig.selector}: {sig.reason}",
                evidence=[untrusted(h, 300) for h in _headers(parsed, "DKIM-Signature")[:5]],
                reproduce=ctx.net.dig(name, "TXT"),
            )
    if verified.arc:
        ctx.fact("sendtest.arc", verified.arc)
        if verified.arc not in ("pass", "skipped"):
            ctx.add(
                "sendtest.arc.fail",
                target=target,
                summary=f"the ARC chain does not validate: {verified.arc_reason}",
                evidence=[untrusted(h, 300) for h in _headers(parsed, "ARC-Seal")[:5]],
            )
    return found


async def probe_dmarc(received: Received, parsed: Message, ctx: ProbeContext) -> str | None:
    """DMARC: SPF or DKIM aligned with the From: domain. Returns the verdict."""
    spf_results: dict[str, Result] = ctx.result(SPF)
    sigs: list[Signature] = ctx.result(DKIM)
    author, _problem = from_domain(parsed)
    if author is None:
        return None  # sendtest.headers says why
    found = await find_dmarc(ctx, author)
    if found is None:
        return None
    target = Target(host=found.where, address=received.peer, protocol="smtp")
    dig = ctx.net.dig(found.name, "TXT")
    if found.text is None:
        ctx.add(
            "sendtest.dmarc.none",
            target=Target(host=author),
            summary=f"no DMARC record for {author}"
            + (f": {found.problems[0]}" if found.problems else ""),
            reproduce=dig,
        )
        return "none"
    try:
        record = dmarc.parse_record(found.text)
    except dmarc.DMARCError as exc:
        ctx.add(
            "sendtest.dmarc.none",
            target=target,
            summary=f"the DMARC record for {author} is ignored: {exc}",
            evidence=[untrusted(found.text, 300)],
            reproduce=dig,
        )
        return "none"
    mail = spf_results["mailfrom"]
    spf_ok = mail.result is Verdict.PASS and aligned(mail.domain, author, record.aspf)
    dkim_ok = [s for s in sigs if s.result == "pass" and aligned(s.domain, author, record.adkim)]
    policy = record.p if found.where == author else record.subdomain_policy
    ctx.fact(
        "sendtest.dmarc",
        {"from": author, "spf_aligned": spf_ok, "dkim_aligned": bool(dkim_ok), "p": policy},
    )
    if spf_ok or dkim_ok:
        return "pass"
    if any(s.result == "skipped" and aligned(s.domain, author, record.adkim) for s in sigs):
        return None  # an aligned signature was not verified: sendtest.dkim.skipped says so
    why = [
        f"SPF: {mail.result.value} for {mail.domain}"
        + ("" if mail.result is not Verdict.PASS else f", not aligned with {author}"),
        "DKIM: "
        + (", ".join(f"{s.result} for d={s.domain}" for s in sigs) if sigs else "no signature"),
    ]
    outcome = {"reject": "rejected", "quarantine": "put in spam", "none": "delivered"}[policy]
    ctx.add(
        "sendtest.dmarc.fail",
        target=target,
        summary=(
            f"DMARC fails for From: {author}: neither SPF nor DKIM passes aligned; "
            f"p={policy}, so receivers that enforce DMARC see it {outcome}"
        ),
        evidence=[*why, untrusted(found.text, 300)],
        reproduce=dig,
        severity=Severity.WARNING if policy == "none" else None,
    )
    return "fail"


async def probe_headers(received: Received, parsed: Message, ctx: ProbeContext) -> None:
    target = _target(received)
    author, problem = from_domain(parsed)
    if problem is not None:
        ctx.add("sendtest.header.from", target=target, summary=problem)
    dates = parsed.get_all("Date") or []
    date_issue = (
        f"{len(dates)} Date: headers"
        if len(dates) > 1
        else date_problem(str(dates[0]) if dates else None, received.received_at)
    )
    if date_issue is not None:
        ctx.add("sendtest.header.date", target=target, summary=date_issue)
    ids = parsed.get_all("Message-ID") or []
    if not ids:
        ctx.add("sendtest.header.message_id", target=target, summary="no Message-ID: header")
    elif len(ids) > 1 or not _MESSAGE_ID.match(str(ids[0])):
        ctx.add(
            "sendtest.header.message_id",
            target=target,
            summary=f"Message-ID: {untrusted(str(ids[0]), 100)} is not <unique@domain>"
            if len(ids) == 1
            else f"{len(ids)} Message-ID: headers",
        )
    domain = ctx.domain
    envelope = _domain_of(received.mail_from) if received.mail_from else ""
    if not any(d and within(d, domain) for d in (author, envelope)):
        ctx.add(
            "sendtest.domain.other",
            target=Target(host=domain),
            summary=(
                f"the message came from From: {author or '?'} / MAIL FROM "
                f"{envelope or '<>'}, not from {domain}: the verdict is about that domain"
            ),
        )


async def probe_dnsbl(received: Received, parsed: Message, ctx: ProbeContext) -> int:
    return await blocklists(
        ctx,
        [received.peer],
        listed="sendtest.dnsbl.listed",
        inconclusive="sendtest.dnsbl.inconclusive",
    )


async def probe_summary(received: Received, parsed: Message, ctx: ProbeContext) -> None:
    ctx.transcript.extend(received.session)
    confirmed: tuple[str, ...] = ctx.result(SOURCE)
    spf_results: dict[str, Result] = ctx.result(SPF)
    sigs: list[Signature] = ctx.result(DKIM)
    dmarc_verdict: str | None = ctx.result(DMARC)
    passes = [f"from {received.peer}" + (f" ({confirmed[0]})" if confirmed else "")]
    if received.tls is not None:
        passes.append(f"{received.tls.version} {received.tls.cipher}")
    mail = spf_results["mailfrom"]
    if mail.result is Verdict.PASS:
        passes.append(f"SPF pass ({mail.domain})")
    good = [s for s in sigs if s.result == "pass"]
    if good:
        passes.append("DKIM pass (" + ", ".join(f"d={s.domain}" for s in good) + ")")
    if dmarc_verdict == "pass":
        passes.append("DMARC pass")
    ctx.fact(
        "sendtest",
        {
            "peer": received.peer,
            "helo": untrusted(received.helo, 255),
            "mail_from": untrusted(received.mail_from, 320),
            "size": len(received.message),
            "received_at": received.received_at,
        },
    )
    ctx.add(
        "sendtest.ok",
        target=Target(host=ctx.domain, address=received.peer, protocol="smtp"),
        summary=" · ".join(passes),
    )


# What this module's probes return, by name (checks.stages.probe.Key).
SOURCE: Key[tuple[str, ...]] = Key("sendtest.source")
SPF: Key[dict[str, Result]] = Key("sendtest.spf")
DKIM: Key[list[Signature]] = Key("sendtest.dkim")
DMARC: Key[str | None] = Key("sendtest.dmarc")


def probes(received: Received, parsed: Message | None = None) -> tuple[Probe, ...]:
    """The send test's probes, bound to one received message (and its header
    section, `parse_headers(received.message)`, when already parsed)."""
    if parsed is None:
        parsed = parse_headers(received.message)  # read once, by every probe

    def bound(probe: Callable[[Received, Message, ProbeContext], Awaitable[Any]]) -> ProbeFunc:
        return functools.partial(probe, received, parsed)

    stage = Stage.SENDTEST
    return (
        Probe(SOURCE.name, stage, bound(probe_source)),
        Probe("sendtest.helo", stage, bound(probe_helo)),
        Probe("sendtest.tls", stage, bound(probe_tls)),
        Probe(SPF.name, stage, bound(probe_spf)),
        Probe(DKIM.name, stage, bound(probe_dkim)),
        Probe(DMARC.name, stage, bound(probe_dmarc), needs=("sendtest.spf", "sendtest.dkim")),
        Probe("sendtest.headers", stage, bound(probe_headers)),
        Probe("sendtest.dnsbl", stage, bound(probe_dnsbl)),
        Probe(
            "sendtest.summary",
            stage,
            bound(probe_summary),
            needs=("sendtest.source", "sendtest.spf", "sendtest.dkim", "sendtest.dmarc"),
        ),
    )


_SPF_CODES = {
    Verdict.FAIL: "sendtest.spf.fail",
    Verdict.SOFTFAIL: "sendtest.spf.softfail",
    Verdict.NONE: "sendtest.spf.none",
    Verdict.NEUTRAL: "sendtest.spf.none",
    Verdict.PERMERROR: "sendtest.spf.error",
    Verdict.TEMPERROR: "sendtest.spf.error",
}


def _tree(result: Result) -> list[str]:
    return result.tree.lines() if result.tree is not None else []


def _headers(parsed: Message, name: str) -> list[str]:
    return [str(v) for v in parsed.get_all(name) or []]


# -- entry points ------------------------------------------------------------------------


def request_for(
    domain: str, display: str | None = None, account: str | None = None
) -> CheckRequest:
    """A send test of `domain`; `account`: the test account that submits the message."""
    return CheckRequest(
        domain=domain,
        display=display or domain,
        stages=frozenset({Stage.SENDTEST}),
        account=account,
    )


async def judge_message(received: Received, request: CheckRequest, config: EngineConfig) -> Report:
    """The verdict on one received message, as a Report of the sendtest stage."""
    # Parsed in a thread: a sender can make the header section megabytes long.
    parsed = await asyncio.to_thread(parse_headers, received.message)
    return await runner.run(request, config, probes=probes(received, parsed))


def test_message(author: str, to: str, token: str, helo: str) -> EmailMessage:
    """The message the worker submits for a send test with a test account."""
    message = EmailMessage()
    message["From"] = author
    message["To"] = to
    message["Subject"] = f"mailcheck send test {token[:8]}"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = f"<sendtest-{token}@{helo}>"
    message.set_content(
        "A send test by mailcheck: this message checks how your server sends mail.\n"
    )
    return message


def submit_probe(address: str, token: str) -> Probe:
    """A probe that submits the test message to `address` with the request's
    test account, where the auth stage found it logs in (or its profile's server)."""

    async def submit(ctx: ProbeContext) -> str | None:
        account = account_of(ctx)
        if account is None:
            return None
        logins: Logins = ctx.result(LOGIN)
        via = logins.first("smtp")
        if account.smtp:
            via = await profile_endpoint(ctx, account.smtp, "smtp")
        target = Target(host=ctx.domain)
        if via is None:
            ctx.add(
                "sendtest.submit.failed",
                target=target,
                summary=f"{account.name} logs in at no submission server, so nothing was sent",
            )
            return None
        message = test_message(account.address, address, token, ctx.net.config.helo_name)
        try:
            refused, _ = await send_message(ctx.net, via, message, account)
        except (NetError, TargetRefused, DNSError, InputError) as exc:
            refused = str(exc)
        if refused is not None:
            ctx.add(
                "sendtest.submit.failed",
                target=via.target(),
                summary=f"{via.label()} did not take the test message to {address}: {refused}",
            )
            return None
        ctx.add(
            "sendtest.submitted",
            target=via.target(),
            summary=f"submitted as {account.address} through {via.label()} to {address}",
        )
        return via.label()

    return Probe("sendtest.submit", Stage.SENDTEST, submit, needs=("auth.login",))


async def submit(request: CheckRequest, config: EngineConfig, address: str, token: str) -> Report:
    """Send the test message with the request's account: a Report of the
    submission (`sendtest.submitted` or `sendtest.submit.failed`, and any
    login problem found on the way)."""
    wanted = replace(request, stages=frozenset({Stage.SENDTEST}))
    probes = (*default_probes(), submit_probe(address, token))
    return await runner.run(wanted, config, probes=probes)


def timed_out(request: CheckRequest, address: str, waited: float) -> Report:
    """The Report when no message came to `address` within `waited` seconds."""
    finding = catalog.finding(
        "sendtest.timeout",
        target=Target(host=request.domain),
        summary=f"no message reached {address} within {waited / 60:.0f} min",
    )
    return Report(
        request=request,
        started_at=datetime.now(UTC),
        duration=waited,
        findings=(finding,),
        facts={"sendtest": {"address": address}},
    )
