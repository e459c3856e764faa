"""The DNS stage: can the mail service be located?

The path an admin walks with `dig`: the MX set (null MX, implicit MX, CNAME
and IP-literal targets), the addresses of each mail host (and whether they are
public), reverse DNS with forward confirmation, the RFC 6186/8314 SRV records
clients use, and the `mailconf=` TXT record.

Pure helpers (`parse_mx`, `mx_literal`, `parse_mailconf`, ...) hold the rules
and are tested without a network; the `probe_*` drivers do the lookups.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from checks.core.answers import DNSAnswer, hostname, txt_strings
from checks.core.errors import BudgetExceeded, NXDomain, ResolverFailure
from checks.core.model import Stage, Target
from checks.net.door import Network
from checks.stages.keys import MAILCONF, MX_HOSTS, MX_SET, PTR, SRV
from checks.stages.probe import Probe, ProbeContext

# -- values passed between probes -----------------------------------------------


@dataclass(frozen=True)
class MX:
    preference: int
    host: str  # lower case, no root dot; "" for a null MX


@dataclass(frozen=True)
class MXSet:
    records: tuple[MX, ...]  # as published, in preference order
    implicit: bool = False  # no MX: senders use the domain's own address

    @property
    def null(self) -> bool:
        """Only a null MX (RFC 7505): the domain declares it takes no mail."""
        return bool(self.records) and not self.hosts

    @property
    def hosts(self) -> tuple[MX, ...]:
        """The hosts senders would try, in order (the domain itself when implicit)."""
        return tuple(mx for mx in self.records if mx.host)


@dataclass(frozen=True)
class MailHost:
    preference: int
    host: str
    addresses: tuple[str, ...]  # every address the name resolves to
    usable: tuple[str, ...]  # those the target policy lets us connect to


@dataclass(frozen=True)
class SRVTarget:
    service: str  # e.g. "_imaps._tcp"
    priority: int
    weight: int
    port: int
    host: str  # "" when the service is declared unavailable (target ".")


SRV_SERVICES: tuple[tuple[str, str], ...] = (
    ("_submission._tcp", "SMTP submission, STARTTLS (RFC 6186)"),
    ("_submissions._tcp", "SMTP submission, implicit TLS (RFC 8314)"),
    ("_imap._tcp", "IMAP, STARTTLS (RFC 6186)"),
    ("_imaps._tcp", "IMAP, implicit TLS (RFC 6186)"),
    ("_pop3._tcp", "POP3, STARTTLS (RFC 6186)"),
    ("_pop3s._tcp", "POP3, implicit TLS (RFC 6186)"),
)


# -- pure rules ---------------------------------------------------------------------


def parse_mx(records: Any) -> tuple[MX, ...]:
    """MX rdata to values, in the order senders try them (preference, then name)."""
    return tuple(
        sorted(
            (MX(int(r.preference), hostname(r.exchange)) for r in records),
            key=lambda m: (m.preference, m.host),
        )
    )


def mx_literal(host: str) -> str | None:
    """The IP address an MX target spells out instead of naming a host, if any."""
    candidate = host.removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def parse_srv(service: str, records: Any) -> tuple[SRVTarget, ...]:
    return tuple(
        sorted(
            (
                SRVTarget(service, int(r.priority), int(r.weight), int(r.port), hostname(r.target))
                for r in records
            ),
            key=lambda s: (s.priority, -s.weight, s.host),
        )
    )


def parse_mailconf(txts: list[str]) -> tuple[list[str], list[str]]:
    """(the mailconf URLs found, the problems with them)."""
    urls = [t.split("=", 1)[1].strip() for t in txts if t.lower().startswith("mailconf=")]
    problems = []
    if len(urls) > 1:
        problems.append(f"{len(urls)} mailconf records; clients need exactly one")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme.lower() != "https":
            scheme = parts.scheme or "no scheme"
            problems.append(f"{url!r} uses {scheme}; the URL must be https")
        elif not parts.hostname:
            problems.append(f"{url!r} has no host name")
    return urls, problems


# -- probes ----------------------------------------------------------------------------


def _failure(ctx: ProbeContext, exc: ResolverFailure) -> None:
    if isinstance(exc, BudgetExceeded):
        return  # not asked: the check reports its spent budget once
    ctx.add(
        "dns.resolver.failure",
        target=Target(host=exc.qname),
        summary=f"{exc.rdtype} lookup for {exc.qname} failed: {exc}",
        evidence=[f"resolver: {ctx.net.resolver_label()}"],
        reproduce=ctx.net.dig(exc.qname, exc.rdtype),
    )


def _about_mx(ctx: ProbeContext, code: str, summary: str, *, evidence: bool = True) -> None:
    """A finding about the domain's MX set, with the lookups so far as evidence."""
    ctx.add(
        code,
        target=Target(host=ctx.domain),
        summary=summary,
        evidence=ctx.transcript if evidence else (),
        reproduce=ctx.net.dig(ctx.domain, "MX"),
    )


def capped_addresses(net: Network, host: str, a: DNSAnswer, aaaa: DNSAnswer) -> list[str]:
    """The A then AAAA addresses of `host`, at most the budget of each family:
    its lowest ones, so that every check of a large set picks the same. The
    rest are recorded as skipped (checks.net.budget)."""
    kept: list[str] = []
    for answer in (a, aaaa):
        texts = answer.texts()
        if len(texts) > net.budget.budgets.addresses:
            texts = sorted(texts, key=ipaddress.ip_address)

        def label(address: str, rdtype: str = answer.rdtype) -> str:
            return f"{host} {rdtype} {address}"

        kept += net.budget.cap("addresses", texts, label)
    return kept


async def _addresses(ctx: ProbeContext, name: str) -> tuple[DNSAnswer, DNSAnswer]:
    """A and AAAA for `name`, asked concurrently. Raises NXDomain/ResolverFailure."""
    a, aaaa = await asyncio.gather(ctx.net.query(name, "A"), ctx.net.query(name, "AAAA"))
    return a, aaaa


async def probe_mx(ctx: ProbeContext) -> MXSet | None:
    """The MX set; None when the domain does not exist or DNS failed."""
    domain = ctx.domain
    try:
        answer = await ctx.net.query(domain, "MX")
    except NXDomain:
        _about_mx(ctx, "dns.domain.nxdomain", f"{ctx.request.display} does not exist (NXDOMAIN)")
        return None
    except ResolverFailure as exc:
        _failure(ctx, exc)
        return None

    records = parse_mx(answer.records)
    ctx.fact("mx", [[mx.preference, mx.host] for mx in records])
    if not records:
        return await _implicit_mx(ctx)

    null = [mx for mx in records if not mx.host]
    published = len(records)
    # Senders try the most preferred first: those are the ones worth checking.
    kept = ctx.net.budget.cap("mx_hosts", [mx for mx in records if mx.host], lambda mx: mx.host)
    records = tuple(mx for mx in records if not mx.host or mx in kept)
    # The hosts' addresses are the next step of the longest chain (MX, address,
    # connect...): asked now, before the probes this answer starts are scheduled.
    ctx.net.prefetch((mx.host, rdtype) for mx in kept for rdtype in ("A", "AAAA"))
    listing = ", ".join(f"{mx.preference} {mx.host or '.'}" for mx in records)
    if published > len(records):
        listing += f" (and {published - len(records)} more)"
    if null and len(records) == 1:
        _about_mx(ctx, "mx.null", f"{domain} publishes a null MX: it takes no mail")
        return MXSet(records)
    if null:
        _about_mx(
            ctx, "mx.null.mixed", f"null MX published together with other MX records: {listing}"
        )
    else:
        _about_mx(ctx, "mx.found", f"MX: {listing}", evidence=False)
    return MXSet(records)


async def _implicit_mx(ctx: ProbeContext) -> MXSet | None:
    domain = ctx.domain
    try:
        a, aaaa = await _addresses(ctx, domain)
    except NXDomain:  # MX said the name exists; a vanishing name is a broken zone
        a = aaaa = DNSAnswer(domain, "A", domain, (), None)
    except ResolverFailure as exc:
        _failure(ctx, exc)
        return None
    addresses = a.texts() + aaaa.texts()
    if not addresses:
        _about_mx(
            ctx,
            "mx.implicit.missing",
            f"{domain} has no MX record and no A/AAAA record: mail to it bounces",
        )
        return None
    _about_mx(
        ctx,
        "mx.none",
        (
            f"{domain} has no MX record; senders fall back to its address "
            f"{', '.join(addresses)} (implicit MX)"
        ),
    )
    return MXSet((MX(0, domain),), implicit=True)


async def probe_mx_hosts(ctx: ProbeContext) -> tuple[MailHost, ...]:
    """Addresses of every MX host, with CNAME, literal and private-address checks."""
    mxset: MXSet | None = ctx.result(MX_SET)
    if mxset is None:
        return ()
    hosts = await asyncio.gather(*(_mail_host(ctx, mx) for mx in mxset.hosts))
    found = tuple(h for h in hosts if h is not None)
    ctx.fact("mx_hosts", {h.host: list(h.addresses) for h in found})
    return found


async def _mail_host(ctx: ProbeContext, mx: MX) -> MailHost | None:
    target = Target(host=mx.host)
    literal = mx_literal(mx.host)
    if literal is not None:
        ctx.add(
            "mx.ip_literal",
            target=target,
            summary=f"MX {mx.preference} names the address {literal} instead of a host name",
            reproduce=ctx.net.dig(ctx.domain, "MX"),
        )
        return None
    try:
        a, aaaa = await _addresses(ctx, mx.host)
    except NXDomain:
        ctx.add(
            "mx.host.unresolvable",
            target=target,
            summary=f"MX host {mx.host} does not exist (NXDOMAIN)",
            reproduce=ctx.net.dig(mx.host, "A"),
        )
        return None
    except ResolverFailure as exc:
        _failure(ctx, exc)
        return None

    addresses = tuple(capped_addresses(ctx.net, mx.host, a, aaaa))
    alias = next((ans for ans in (a, aaaa) if ans.via_cname), None)
    if alias is not None:
        ctx.add(
            "mx.cname",
            target=target,
            summary=f"MX host {mx.host} is an alias (CNAME) for {alias.canonical_name}",
            reproduce=ctx.net.dig(mx.host, "CNAME"),
        )
    if not addresses:
        ctx.add(
            "mx.host.unresolvable",
            target=target,
            summary=f"MX host {mx.host} has no A or AAAA record",
            reproduce=ctx.net.dig(mx.host, "A"),
        )
        return None

    usable = []
    for address in addresses:
        reason = ctx.net.policy.refusal(address)
        if reason is None:
            usable.append(address)
            continue
        ctx.add(
            "mx.address.private",
            target=Target(host=mx.host, address=address),
            summary=f"MX host {mx.host} resolves to {address}, {reason}",
            reproduce=ctx.net.dig(mx.host, "A" if ":" not in address else "AAAA"),
        )
    ctx.add(
        "mx.host.addresses",
        target=target,
        summary=f"{mx.host} → {', '.join(addresses)}",
        reproduce=ctx.net.dig(mx.host, "A"),
    )
    return MailHost(mx.preference, mx.host, addresses, tuple(usable))


async def probe_ptr(ctx: ProbeContext) -> dict[str, list[str]]:
    """Reverse DNS of every usable MX address, forward-confirmed. Returns address -> names."""
    hosts: tuple[MailHost, ...] = ctx.result(MX_HOSTS)
    owners: dict[str, str] = {}
    for host in hosts:
        for address in host.usable:
            owners.setdefault(address, host.host)
    results = await asyncio.gather(*(_ptr(ctx, addr, owner) for addr, owner in owners.items()))
    ptrs = dict(zip(owners, results, strict=True))
    ctx.fact("ptr", ptrs)
    return ptrs


@dataclass(frozen=True)
class ReverseDNS:
    """An address's PTR names, each looked up forward again (FCrDNS)."""

    names: tuple[str, ...]  # the PTR names; () when there is no PTR
    confirmed: tuple[str, ...]  # those that resolve back to the address
    lines: tuple[str, ...]  # each forward lookup, for evidence
    failure: ResolverFailure | None = None  # a forward lookup that got no answer


async def reverse_dns(net: Network, address: str) -> ReverseDNS:
    """PTR of `address` with forward confirmation. Raises ResolverFailure when
    the PTR lookup itself got no answer; a failed forward lookup stops there
    and is returned in `failure`."""
    try:
        answer = await net.query_ptr(address)
    except NXDomain:
        return ReverseDNS((), (), ())
    names = tuple(hostname(r.target) for r in answer.records)
    rdtype = "AAAA" if ":" in address else "A"
    confirmed: list[str] = []
    lines: list[str] = []
    for name in names:
        try:
            forward = await net.query(name, rdtype)
        except NXDomain:
            lines.append(f"{name} does not exist")
            continue
        except ResolverFailure as exc:
            return ReverseDNS(names, tuple(confirmed), tuple(lines), exc)
        found = {str(ipaddress.ip_address(t)) for t in forward.texts()}
        lines.append(f"{name} {rdtype} -> {', '.join(sorted(found)) or '(none)'}")
        if str(ipaddress.ip_address(address)) in found:
            confirmed.append(name)
    return ReverseDNS(names, tuple(confirmed), tuple(lines))


async def _ptr(ctx: ProbeContext, address: str, owner: str) -> list[str]:
    target = Target(host=owner, address=address)
    reproduce = ctx.net.dig(address, "PTR")
    try:
        found = await reverse_dns(ctx.net, address)
    except ResolverFailure as exc:
        _failure(ctx, exc)
        return []
    names = list(found.names)
    if not names:
        ctx.add(
            "ptr.missing",
            target=target,
            summary=f"{address} ({owner}) has no PTR record",
            reproduce=reproduce,
        )
    elif found.failure is not None:
        _failure(ctx, found.failure)
    elif found.confirmed:
        ctx.add(
            "ptr.ok",
            target=target,
            summary=f"{address} ↔ {', '.join(found.confirmed)}",
            reproduce=reproduce,
        )
    else:
        rdtype = "AAAA" if ":" in address else "A"
        ctx.add(
            "ptr.mismatch",
            target=target,
            summary=(
                f"{address} has PTR {', '.join(names)}, which does not resolve back to {address}"
            ),
            evidence=found.lines,
            reproduce=f"{reproduce}; {ctx.net.dig(names[0], rdtype)}",
        )
    return names


async def probe_srv(ctx: ProbeContext) -> dict[str, tuple[SRVTarget, ...]]:
    """RFC 6186/8314 SRV records and whether their targets resolve."""
    mxset: MXSet | None = ctx.result(MX_SET)
    if mxset is None or mxset.null:  # no domain, or one that declares it takes no mail
        return {}
    found = await asyncio.gather(*(_srv(ctx, service) for service, _ in SRV_SERVICES))
    services = {
        service: targets
        for (service, _), targets in zip(SRV_SERVICES, found, strict=True)
        if targets
    }
    ctx.fact(
        "srv",
        {s: [[t.priority, t.weight, t.port, t.host] for t in ts] for s, ts in services.items()},
    )
    if not services:
        ctx.add(
            "srv.missing",
            target=Target(host=ctx.domain),
            summary="no RFC 6186/8314 SRV records for submission, IMAP or POP3",
            reproduce=ctx.net.dig(f"_submissions._tcp.{ctx.domain}", "SRV"),
        )
        return services
    lines = [
        f"{service}: " + ", ".join(f"{t.host or '.'}:{t.port}" for t in targets)
        for service, targets in services.items()
    ]
    ctx.add(
        "srv.found",
        target=Target(host=ctx.domain),
        summary="; ".join(lines),
        reproduce=ctx.net.dig(f"{next(iter(services))}.{ctx.domain}", "SRV"),
    )
    return services


async def _srv(ctx: ProbeContext, service: str) -> tuple[SRVTarget, ...]:
    name = f"{service}.{ctx.domain}"
    try:
        answer = await ctx.net.query(name, "SRV")
    except NXDomain:
        return ()
    except ResolverFailure as exc:
        _failure(ctx, exc)
        # Unknown, not absent: the service probes must not call it missing.
        ctx.net.memo.setdefault("dns.srv.failed", set()).add(service)
        return ()
    targets = tuple(
        ctx.net.budget.cap(
            "srv_targets",
            parse_srv(service, answer.records),
            lambda t: f"{name} -> {t.host or '.'}:{t.port}",
        )
    )
    await asyncio.gather(*(_srv_target(ctx, name, t) for t in targets if t.host))
    return targets


async def _srv_target(ctx: ProbeContext, name: str, srv: SRVTarget) -> None:
    try:
        a, aaaa = await _addresses(ctx, srv.host)
        addresses = a.texts() + aaaa.texts()
    except NXDomain:
        addresses = []
    except ResolverFailure as exc:
        _failure(ctx, exc)
        return
    if not addresses:
        ctx.add(
            "srv.target.unresolvable",
            target=Target(host=srv.host, port=srv.port),
            summary=f"{name} points at {srv.host}:{srv.port}, which has no address",
            reproduce=ctx.net.dig(srv.host, "A"),
        )


async def probe_mailconf(ctx: ProbeContext) -> str | None:
    """The `mailconf=` TXT record: the URL of the autoconfig document, if valid."""
    if ctx.result(MX_SET) is None:
        return None
    try:
        answer = await ctx.net.query(ctx.domain, "TXT")
    except NXDomain:
        return None
    except ResolverFailure as exc:
        _failure(ctx, exc)
        return None
    urls, problems = parse_mailconf(txt_strings(answer))
    if not urls:
        return None
    target = Target(host=ctx.domain)
    reproduce = ctx.net.dig(ctx.domain, "TXT")
    if problems:
        ctx.add(
            "mailconf.invalid",
            target=target,
            summary="; ".join(problems),
            evidence=[f"mailconf={u}" for u in urls],
            reproduce=reproduce,
        )
        return None
    ctx.fact("mailconf", urls[0])
    ctx.add("mailconf.found", target=target, summary=urls[0], reproduce=reproduce)
    return urls[0]


PROBES: tuple[Probe, ...] = (
    Probe(MX_SET.name, Stage.DNS, probe_mx, asks=lambda r, _c: [(r.domain, "MX")]),
    Probe(MX_HOSTS.name, Stage.DNS, probe_mx_hosts, needs=("dns.mx",)),
    Probe(PTR.name, Stage.DNS, probe_ptr, needs=("dns.mx.hosts",)),
    Probe(
        SRV.name,
        Stage.DNS,
        probe_srv,
        needs=("dns.mx",),
        asks=lambda r, _c: [(f"{service}.{r.domain}", "SRV") for service, _ in SRV_SERVICES],
    ),
    Probe(
        MAILCONF.name,
        Stage.DNS,
        probe_mailconf,
        needs=("dns.mx",),
        asks=lambda r, _c: [(r.domain, "TXT")],
    ),
)
