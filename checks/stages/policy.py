"""The policy stage (first part): SPF, DMARC, DKIM keys and TLS-RPT, from DNS.

Who may send mail as the domain, and what receivers should do with mail that
claims to be from it but is not. The rules live in spf*/dmarc; these drivers
fetch through the network door and turn verdicts into findings.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from checks.core import catalog
from checks.core.answers import hostname, txt_strings
from checks.core.config import EngineConfig
from checks.core.errors import BudgetExceeded, NXDomain, ResolverFailure
from checks.core.model import CheckRequest, Severity, Stage, Target
from checks.core.text import untrusted
from checks.net.door import Network
from checks.rules import dkim, dmarc, dnsbl, tlsrpt
from checks.rules.spf import Verdict, check_host
from checks.rules.spfdiagnose import diagnose
from checks.rules.spfmacro import SPFSyntaxError
from checks.rules.spfparse import select_record
from checks.stages.dns import MailHost
from checks.stages.keys import DKIM_KEYS, MX_HOSTS, MX_SET
from checks.stages.probe import Probe, ProbeContext


class NetworkLookup:
    """SPF's lookups (policy.spf.SPFLookup) through the network door: memoised
    and written to the transcript."""

    def __init__(self, net: Network) -> None:
        self._net = net

    async def txt(self, name: str) -> list[str]:
        return txt_strings(await self._net.query(name, "TXT"))

    async def a(self, name: str) -> list[str]:
        return (await self._net.query(name, "A")).texts()

    async def aaaa(self, name: str) -> list[str]:
        return (await self._net.query(name, "AAAA")).texts()

    async def mx(self, name: str) -> list[tuple[int, str]]:
        answer = await self._net.query(name, "MX")
        return [(int(r.preference), hostname(r.exchange)) for r in answer.records]

    async def ptr(self, address: str) -> list[str]:
        return [hostname(r.target) for r in (await self._net.query_ptr(address)).records]


async def lookup_txts(ctx: ProbeContext, name: str) -> list[str] | None:
    """TXT strings of `name`; [] when it has none or does not exist; None when DNS failed."""
    try:
        return txt_strings(await ctx.net.query(name, "TXT"))
    except NXDomain:
        return []
    except BudgetExceeded:
        return None  # not asked: the check reports its spent budget once
    except ResolverFailure as exc:
        ctx.add(
            "dns.resolver.failure",
            target=Target(host=name),
            summary=f"TXT lookup for {name} failed: {exc}",
            reproduce=ctx.net.dig(name, "TXT"),
            stage=Stage.POLICY,
        )
        return None


async def probe_spf(ctx: ProbeContext) -> None:
    if ctx.result(MX_SET) is None:
        return
    domain = ctx.domain
    target = Target(host=domain)
    dig = ctx.net.dig(domain, "TXT")
    txts = await lookup_txts(ctx, domain)
    if txts is None:
        return
    try:
        record = select_record(txts)
    except SPFSyntaxError as exc:
        ctx.add(
            "spf.multiple",
            target=target,
            summary=str(exc),
            evidence=[t for t in txts if t.lower().startswith("v=spf1")],
            reproduce=dig,
        )
        return
    if record is None:
        ctx.add(
            "spf.missing", target=target, summary=f"{domain} publishes no SPF record", reproduce=dig
        )
        return
    lookup = NetworkLookup(ctx.net)
    report = await diagnose(domain, lookup, max_queries=ctx.net.config.budgets.spf_queries)
    ctx.net.budget.skip("spf_queries", report.unasked)
    tree = report.tree.lines()
    ctx.fact(
        "spf", {"record": record, "lookups": report.lookups, "void_lookups": report.void_lookups}
    )
    for error in report.syntax_errors:
        ctx.add("spf.syntax", target=target, summary=error, evidence=[record], reproduce=dig)
    for name in report.missing_includes:
        ctx.add(
            "spf.include.missing",
            target=target,
            summary=f"the record includes {name}, which has no SPF record: receivers "
            "return permerror",
            evidence=tree,
            reproduce=ctx.net.dig(name, "TXT"),
        )
    if report.over_limit:
        ctx.add(
            "spf.lookups.exceeded",
            target=target,
            summary=f"{report.lookups} DNS lookups; receivers stop at 10 with permerror",
            evidence=tree,
            reproduce=dig,
        )
    if report.void_lookups > 2:
        ctx.add(
            "spf.void_lookups.exceeded",
            target=target,
            summary=f"{report.void_lookups} lookups find nothing; receivers stop at 2 "
            "with permerror",
            evidence=tree,
            reproduce=dig,
        )
    if report.weak_all and not report.syntax_errors:  # an unparsable record has no all
        ctx.add(
            "spf.all.permissive",
            target=target,
            summary=f"{record} ends with {report.all_term or 'no all mechanism'}",
            severity=Severity.ERROR if report.all_term == "+all" else None,
            evidence=[record],
            reproduce=dig,
        )
    hosts: tuple[MailHost, ...] = ctx.result(MX_HOSTS)
    addresses = list(dict.fromkeys(a for h in hosts for a in h.usable))
    results = await asyncio.gather(
        *(check_host(a, domain, f"postmaster@{domain}", lookup) for a in addresses)
    )
    for address, result in zip(addresses, results, strict=True):
        if result.result not in (Verdict.PASS, Verdict.PERMERROR, Verdict.TEMPERROR):
            ctx.add(
                "spf.mx.not_permitted",
                target=Target(host=domain, address=address),
                summary=f"mail from the domain's own MX {address} gets SPF {result.result.value}",
                reproduce=dig,
            )
    senders = ctx.request.sender_ips
    verdicts = await asyncio.gather(
        *(check_host(a, domain, f"postmaster@{domain}", lookup) for a in senders)
    )
    for address, result in zip(senders, verdicts, strict=True):
        what = f"mail from {address} as {domain} gets SPF {result.result.value}"
        if result.explanation:
            what += f" ({untrusted(result.explanation, 200)})"
        passed = result.result is Verdict.PASS
        hard = result.result in (Verdict.FAIL, Verdict.PERMERROR)
        ctx.add(
            "spf.sender.permitted" if passed else "spf.sender.not_permitted",
            target=Target(host=domain, address=address),
            summary=what,
            evidence=tree,
            reproduce=dig,
            severity=None if passed or hard else Severity.WARNING,
        )
    if not (
        report.syntax_errors
        or report.missing_includes
        or report.over_limit
        or report.void_lookups > 2
        or report.weak_all
    ):
        ctx.add(
            "spf.ok",
            target=target,
            summary=f"{record} ({report.lookups} of 10 DNS lookups)",
            evidence=tree,
            reproduce=dig,
        )


@dataclass(frozen=True)
class DMARCLookup:
    """Where a receiver finds a domain's DMARC record: at `_dmarc.<domain>`, or
    at the organisational domain's when the domain has none (RFC 7489 6.6.3)."""

    text: str | None  # the one DMARC record, or None
    problems: list[str]  # why there is none (several records, a near miss)
    where: str  # the domain whose record applies
    name: str  # the name it was found at (or last looked for)


async def find_dmarc(ctx: ProbeContext, domain: str) -> DMARCLookup | None:
    """The DMARC record that applies to mail from `domain`; None when DNS failed."""
    name = f"_dmarc.{domain}"
    txts = await lookup_txts(ctx, name)
    if txts is None:
        return None
    text, problems = dmarc.select(txts)
    where = domain
    if text is None and not problems:
        org = dmarc.organizational_domain(domain)
        if org != domain:
            org_txts = await lookup_txts(ctx, f"_dmarc.{org}")
            text, problems = dmarc.select(org_txts or [])
            where, name = org, f"_dmarc.{org}"
    return DMARCLookup(text, problems, where, name)


async def probe_dmarc(ctx: ProbeContext) -> None:
    if ctx.result(MX_SET) is None:
        return
    domain = ctx.domain
    found = await find_dmarc(ctx, domain)
    if found is None:
        return
    text, problems, where, name = found.text, found.problems, found.where, found.name
    target = Target(host=where)
    dig = ctx.net.dig(name, "TXT")
    if text is None:
        if any(p.startswith("multiple") for p in problems):
            ctx.add("dmarc.multiple", target=target, summary=problems[-1], reproduce=dig)
        elif problems:
            ctx.add("dmarc.syntax", target=target, summary=problems[0], reproduce=dig)
        else:
            ctx.add(
                "dmarc.missing",
                target=Target(host=domain),
                summary=f"no DMARC record at _dmarc.{domain}",
                reproduce=dig,
            )
        return
    try:
        record = dmarc.parse_record(text)
    except dmarc.DMARCError as exc:
        ctx.add("dmarc.syntax", target=target, summary=str(exc), evidence=[text], reproduce=dig)
        return
    ctx.fact("dmarc", {"record": text, "p": record.p, "pct": record.pct})
    for error in record.errors:
        ctx.add("dmarc.syntax", target=target, summary=error, evidence=[text], reproduce=dig)
    weak = dmarc.weaknesses(record, name)
    for weakness in weak:
        ctx.add(
            weakness.code, target=target, summary=weakness.summary, evidence=[text], reproduce=dig
        )
    for uri, auth_name in dmarc.external_destinations(where, record):
        auth = await lookup_txts(ctx, auth_name)
        if auth is not None and not dmarc.authorizes(auth):
            ctx.add(
                "dmarc.rua.unauthorized",
                target=target,
                summary=f"{uri} is in another domain that has not agreed to receive "
                f"{where}'s reports (no v=DMARC1 record at {auth_name})",
                reproduce=ctx.net.dig(auth_name, "TXT"),
            )
    if not record.errors and all(catalog.entry(w.code).severity < Severity.WARNING for w in weak):
        ctx.add("dmarc.ok", target=target, summary=text, reproduce=dig)


def dkim_questions(request: CheckRequest, config: EngineConfig) -> list[tuple[str, str]]:
    """The selectors' TXT lookups (as many as the budget lets probe_dkim ask),
    asked at the start of the check."""
    selectors = list(dict.fromkeys((*request.dkim_selectors, *dkim.COMMON_SELECTORS)))
    limit = config.budgets.dkim_selectors
    return [(dkim.selector_name(sel, request.domain), "TXT") for sel in selectors[:limit]]


async def probe_dkim(ctx: ProbeContext) -> list[str]:
    """Keys at the selectors asked for and the common ones. DKIM selectors are
    not discoverable, so 'none found' is information, not a verdict. Returns
    the names where a key record was found."""
    if ctx.result(MX_SET) is None:
        return []
    domain = ctx.domain
    selectors = list(dict.fromkeys((*ctx.request.dkim_selectors, *dkim.COMMON_SELECTORS)))
    selectors = ctx.net.budget.cap("dkim_selectors", selectors)
    names = [dkim.selector_name(sel, domain) for sel in selectors]
    answers = await asyncio.gather(*(lookup_txts(ctx, name) for name in names))
    keys: list[str] = []
    for selector, name, txts in zip(selectors, names, answers, strict=True):
        records = [t for t in txts or [] if "p=" in t]
        if not records:
            continue
        keys.append(name)
        target = Target(host=name)
        dig = ctx.net.dig(name, "TXT")
        try:
            key = dkim.parse_key_record(records[0])
        except dkim.DKIMError as exc:
            ctx.add(
                "dkim.key.invalid",
                target=target,
                summary=f"selector {selector}: {exc}",
                evidence=[records[0][:300]],
                reproduce=dig,
            )
            continue
        if key.revoked:
            ctx.add(
                "dkim.key.revoked",
                target=target,
                summary=f"selector {selector} has an empty p=: its key is revoked",
                reproduce=dig,
            )
        elif key.errors:
            ctx.add(
                "dkim.key.invalid",
                target=target,
                summary=f"selector {selector}: {key.errors[0]}",
                reproduce=dig,
            )
        elif key.bits is not None and key.bits < dkim.RSA_RECOMMENDED and key.key_type == "rsa":
            ctx.add(
                "dkim.key.weak",
                target=target,
                summary=f"selector {selector}: RSA {key.bits}-bit key",
                severity=Severity.ERROR if key.bits < dkim.RSA_MINIMUM else None,
                reproduce=dig,
            )
        else:
            ctx.add(
                "dkim.ok",
                target=target,
                summary=f"selector {selector}: {key.key_type} {key.bits or '?'} bits",
                reproduce=dig,
            )
    if not keys:
        ctx.add(
            "dkim.none_found",
            target=Target(host=domain),
            summary=f"no DKIM key at {len(selectors)} common selectors "
            f"({', '.join(selectors[:6])}, ...); give yours with --dkim-selector",
            reproduce=ctx.net.dig(names[0], "TXT"),
        )
    return keys


async def probe_tlsrpt(ctx: ProbeContext) -> None:
    if ctx.result(MX_SET) is None:
        return
    name = f"_smtp._tls.{ctx.domain}"
    txts = await lookup_txts(ctx, name)
    if not txts:
        return  # TLS-RPT is optional
    text, problems = tlsrpt.select(txts)
    target, dig = Target(host=name), ctx.net.dig(name, "TXT")
    if text is None:
        if problems:
            ctx.add("tlsrpt.invalid", target=target, summary=problems[0], reproduce=dig)
        return
    try:
        record = tlsrpt.parse_record(text)
    except tlsrpt.TLSRPTError as exc:
        ctx.add("tlsrpt.invalid", target=target, summary=str(exc), evidence=[text], reproduce=dig)
        return
    ctx.add(
        "tlsrpt.ok", target=target, summary=f"TLS reports to {', '.join(record.rua)}", reproduce=dig
    )


def blocklist_zones(ctx: ProbeContext) -> tuple[str, ...]:
    zones = ctx.net.config.dnsbl_zones
    return tuple(ctx.net.budget.cap("dnsbl_zones", dnsbl.DEFAULT_ZONES if zones is None else zones))


async def blocklists(
    ctx: ProbeContext, addresses: list[str], *, listed: str, inconclusive: str
) -> int:
    """Look every address up on the configured blocklists and add a `listed` or
    `inconclusive` finding for each answer that is one. Returns how many
    (address, list) pairs came back clean."""
    zones = blocklist_zones(ctx)
    pairs = [(a, z) for a in addresses for z in zones]
    unasked: set[tuple[str, str]] = set()  # the check's query budget was spent

    async def ask(address: str, zone: str) -> dnsbl.Verdict | None:
        name = dnsbl.query_name(address, zone)
        try:
            answer = await ctx.net.query(name, "A")
        except NXDomain:
            return dnsbl.interpret(zone, [])
        except BudgetExceeded:
            unasked.add((address, zone))
            return None
        except ResolverFailure:
            return None
        return dnsbl.interpret(zone, answer.texts())

    verdicts = await asyncio.gather(*(ask(a, z) for a, z in pairs))
    clean = 0
    for (address, zone), verdict in zip(pairs, verdicts, strict=True):
        if (address, zone) in unasked:
            continue  # the check reports its spent budget once
        target = Target(host=zone, address=address)
        dig = ctx.net.dig(dnsbl.query_name(address, zone), "A")
        if verdict is None or verdict.listing is dnsbl.Listing.INCONCLUSIVE:
            reason = verdict.reason if verdict else "the lookup failed"
            ctx.add(
                inconclusive,
                target=target,
                summary=f"{address} on {zone}: {reason}",
                reproduce=dig,
            )
        elif verdict.listed:
            ctx.add(
                listed,
                target=target,
                summary=f"{address} is listed on {zone}: {verdict.reason}",
                evidence=list(verdict.answers),
                reproduce=dig,
            )
        else:
            clean += 1
    return clean


async def probe_dnsbl(ctx: ProbeContext) -> None:
    """Every usable MX address against the configured blocklists. Error answers
    (e.g. Spamhaus refusing a public resolver) are inconclusive, never 'listed'."""
    hosts: tuple[MailHost, ...] = ctx.result(MX_HOSTS)
    addresses = list(dict.fromkeys(a for h in hosts for a in h.usable))
    clean = await blocklists(
        ctx, addresses, listed="dnsbl.listed", inconclusive="dnsbl.inconclusive"
    )
    zones = blocklist_zones(ctx)
    if addresses and zones and clean == len(addresses) * len(zones):
        ctx.add(
            "dnsbl.ok",
            target=Target(host=ctx.domain),
            summary=f"{len(addresses)} MX address(es) on none of {len(zones)} blocklists",
        )


PROBES: tuple[Probe, ...] = (
    Probe("policy.spf", Stage.POLICY, probe_spf, needs=("dns.mx", "dns.mx.hosts")),
    Probe(
        "policy.dmarc",
        Stage.POLICY,
        probe_dmarc,
        needs=("dns.mx",),
        asks=lambda r, _c: [(f"_dmarc.{r.domain}", "TXT")],
    ),
    Probe(DKIM_KEYS.name, Stage.POLICY, probe_dkim, needs=("dns.mx",), asks=dkim_questions),
    Probe(
        "policy.tlsrpt",
        Stage.POLICY,
        probe_tlsrpt,
        needs=("dns.mx",),
        asks=lambda r, _c: [(f"_smtp._tls.{r.domain}", "TXT")],
    ),
    Probe("policy.dnsbl", Stage.POLICY, probe_dnsbl, needs=("dns.mx.hosts",)),
)
