"""DNS consistency: every authoritative server asked directly, and compared.

"I changed the MX an hour ago; why do some senders still use the old one?"
An admin answers it with `dig +norec @each-nameserver` and a look at what the
public resolvers serve. This probe does the same for the domain's mail records:

- the zone cut (the nearest name with an SOA), its NS set and their addresses;
- the parent zone's delegation (a referral from a parent server) against it;
- each server asked directly (RD clear) for the SOA: one that times out, says
  REFUSED or answers without the AA flag (lame) is reported and not compared;
- the others asked for MX, the MX hosts' addresses (inside the zone), the
  TXT records (SPF, mailconf), _dmarc, _mta-sts, _smtp._tls and the SRV
  records; serials and record sets compared across them;
- where they all agree, the resolver's (cached) answer compared with theirs,
  with the TTL it has left: a propagation delay, not a broken server.

Every question goes through the network door (the target policy applies to
nameserver addresses), and the per-server table is kept as the fact
`nameservers` for the renderers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from checks.core.answers import hostname
from checks.core.errors import BudgetExceeded, DNSError, NXDomain, TargetRefused
from checks.core.model import Finding, Severity, Stage, Target
from checks.core.names import within
from checks.net.door import Network, ServerAnswer
from checks.stages.dns import SRV_SERVICES, parse_mx
from checks.stages.keys import DKIM_KEYS, NAMESERVERS
from checks.stages.probe import Probe, ProbeContext

NXDOMAIN = ("NXDOMAIN",)
# Findings about the servers carry the per-server table here, for renderers.
TABLE = "nameservers"
MAX_SERVERS = 8  # addresses asked; a zone with more is compared on the first eight


@dataclass
class Server:
    """One nameserver address and what it said."""

    name: str
    address: str
    status: str = "ok"  # ok | lame | refused | unreachable | private (not asked)
    serial: int | None = None
    detail: str = ""
    answers: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} [{self.address}]"


async def find_zones(net: Network, domain: str) -> list[str] | None:
    """The zones at and above `domain`, nearest first: the names with an SOA,
    all asked at once (the parent zone's is needed too, for the delegation).
    None when there is none, or DNS did not answer below the first one."""
    labels = domain.rstrip(".").lower().split(".")
    names = [".".join(labels[i:]) for i in range(len(labels))]

    async def has_soa(name: str) -> bool | None:
        try:
            answer = await net.query(name, "SOA")
        except NXDomain:
            return False
        except DNSError:  # no answer: the MX probe reports the resolver's failure
            return None
        return bool(answer.records) and not answer.via_cname

    zones: list[str] = []
    for name, soa in zip(names, await asyncio.gather(*map(has_soa, names)), strict=True):
        if soa is None:
            if not zones:
                return None
            break  # above the zone: its parent stays unknown
        if soa:
            zones.append(name)
    return zones or None


async def _ns_names(net: Network, zone: str) -> list[str]:
    try:
        answer = await net.query(zone, "NS")
    except DNSError:
        return []
    return sorted({hostname(r.target) for r in answer.records})


async def _addresses(net: Network, name: str) -> list[str]:
    async def of(rdtype: str) -> list[str]:
        try:
            return (await net.query(name, rdtype)).texts()
        except DNSError:
            return []

    v4, v6 = await asyncio.gather(of("A"), of("AAAA"))
    return v4 + v6


def questions(domain: str, zone: str, mx_hosts: list[str]) -> list[tuple[str, str]]:
    """(name, type) of every mail record compared across the servers."""
    asked = [
        (domain, "MX"),
        (domain, "TXT"),
        (f"_dmarc.{domain}", "TXT"),
        (f"_mta-sts.{domain}", "TXT"),
        (f"_smtp._tls.{domain}", "TXT"),
        *((f"{service}.{domain}", "SRV") for service, _ in SRV_SERVICES),
    ]
    for host in mx_hosts:  # addresses the zone itself serves
        if within(host, zone):
            asked += [(host, "A"), (host, "AAAA")]
    return asked


def _key(name: str, rdtype: str) -> str:
    return f"{rdtype} {name}"


def _texts(answer: ServerAnswer) -> tuple[str, ...]:
    if answer.rcode == "NXDOMAIN":
        return NXDOMAIN
    return tuple(sorted(r.to_text() for r in answer.records()))


async def _soa(net: Network, server: Server, zone: str) -> None:
    """Classify the server by its answer to SOA <zone>."""
    try:
        answer = await net.ask_server(server.address, zone, "SOA")
    except TargetRefused as exc:
        server.status = "private"
        server.detail = f"has a non-public address, not asked: {exc.reason}"
        return
    except BudgetExceeded as exc:  # says nothing of the server: no finding, not compared
        server.status, server.detail = "not asked", str(exc)
        return
    except DNSError as exc:
        server.status, server.detail = "unreachable", str(exc)
        return
    soa = answer.records()
    if answer.rcode == "REFUSED":
        server.status, server.detail = "refused", "answers REFUSED: it does not serve the zone"
    elif answer.rcode != "NOERROR" or not answer.aa or not soa:
        server.status = "lame"
        how = (
            f"answers {answer.rcode}"
            if answer.rcode != "NOERROR"
            else "refers the question elsewhere"
            + (f" ({', '.join(answer.referral())})" if answer.referral() else "")
            if not answer.aa
            else "has no SOA for it"
        )
        server.detail = f"{how}, without authority (no AA flag)"
    else:
        server.serial = int(soa[0].serial)


async def _ask_all(net: Network, server: Server, asked: list[tuple[str, str]]) -> None:
    async def one(name: str, rdtype: str) -> None:
        try:
            answer = await net.ask_server(server.address, name, rdtype)
        except BudgetExceeded:
            return  # not asked: the question is compared on no server (see _compare)
        except DNSError as exc:
            server.answers[_key(name, rdtype)] = (f"no answer: {exc}",)
            return
        server.answers[_key(name, rdtype)] = _texts(answer)

    await asyncio.gather(*(one(n, t) for n, t in asked))


async def delegation(net: Network, zone: str, parent: str) -> tuple[list[str], str] | None:
    """(the NS set the parent zone delegates `zone` to, the parent server that
    said so), from a referral; None when no parent server gives one (every
    parent server also serves the zone, or none answers)."""
    for name in await _ns_names(net, parent):
        for address in await _addresses(net, name):
            try:
                answer = await net.ask_server(address, zone, "NS")
            except (DNSError, TargetRefused):
                continue
            if answer.referral():
                return answer.referral(), address
    return None


@dataclass(frozen=True)
class Nameservers:
    """What probe_nameservers found, for the probes that compare more records."""

    zone: str
    servers: list[Server]

    @property
    def good(self) -> list[Server]:
        return [s for s in self.servers if s.status == "ok"]


async def _mx_hosts(net: Network, domain: str) -> list[str] | None:
    """The domain's MX hosts; None when the domain does not exist or DNS failed
    (the MX probe says so). The same lookup as dns.mx's, shared by the memo."""
    try:
        answer = await net.query(domain, "MX")
    except DNSError:
        return None
    hosts = [mx.host for mx in parse_mx(answer.records) if mx.host]
    return hosts[: net.budget.budgets.mx_hosts]  # as dns.mx checks them (it reports the rest)


async def _servers(net: Network, zone: str) -> tuple[list[str], list[Server]]:
    """The zone's NS names and each address's server, classified by its SOA answer."""
    names = await _ns_names(net, zone)
    addresses = await asyncio.gather(*(_addresses(net, n) for n in names))
    servers = [
        Server(name, address)
        for name, found in zip(names, addresses, strict=True)
        for address in found
    ][:MAX_SERVERS]
    unresolved = [n for n in names if not any(s.name == n for s in servers)]
    await asyncio.gather(*(_soa(net, s, zone) for s in servers))
    servers += [Server(n, "-", "unreachable", detail="has no address") for n in unresolved]
    return names, servers


async def probe_nameservers(ctx: ProbeContext) -> Nameservers | None:
    """Not after dns.mx but beside it: its MX lookup is shared through the memo,
    and the zone's servers are found meanwhile (one round trip less)."""
    net = ctx.net
    mx_hosts, zones = await asyncio.gather(_mx_hosts(net, ctx.domain), find_zones(net, ctx.domain))
    if mx_hosts is None or zones is None:  # no such domain, or DNS failed
        return None
    zone = zones[0]
    asked = questions(ctx.domain, zone, mx_hosts)
    # What the resolver serves is asked beside the servers, not after them.
    served = asyncio.ensure_future(asyncio.gather(*(_cached(net, n, t) for n, t in asked)))
    (names, servers), referral = await asyncio.gather(
        _servers(net, zone),
        delegation(net, zone, zones[1]) if len(zones) > 1 else _nothing(),
    )
    parent_ns = referral[0] if referral else None
    found = Nameservers(zone, servers)
    good = found.good
    await asyncio.gather(*(_ask_all(net, s, asked) for s in good))

    rows = table(servers)
    _report_servers(ctx, zone, servers, rows)
    if referral is not None and referral[0] != names:
        _parent_child(ctx, zone, *referral, names, rows)
    differ = _compare(ctx, zone, good, asked, rows)
    cached = await served
    if good and not differ:
        _against_resolver(ctx, good, asked, cached)
    ctx.fact(
        "nameservers",
        {
            "zone": zone,
            "parent": parent_ns,
            "servers": [{k: v for k, v in asdict(s).items() if k != "answers"} for s in servers],
            "differ": {
                key: {s.label: list(s.answers.get(key, ())) for s in good} for key in differ
            },
        },
    )
    if (
        good
        and not differ
        and len(good) == len(servers)
        and (parent_ns is None or parent_ns == names)
    ):
        ctx.add(
            "dns.ns.ok",
            target=Target(host=zone),
            summary=(
                f"{len(good)} nameserver address(es) of {zone} answer with authority, serial "
                f"{good[0].serial}, the same {len(asked)} mail record sets"
            ),
            evidence=rows,
            data={TABLE: rows},
        )
    return found


def table_of(findings: Iterable[Finding]) -> list[str]:
    """The per-server table carried by the first of `findings` that has one
    (for renderers); [] when none does."""
    for f in findings:
        rows = f.data.get(TABLE)
        if isinstance(rows, list) and rows:
            return [str(row) for row in rows]
    return []


def table(servers: list[Server]) -> list[str]:
    """The per-server table, one line a server."""
    width = max((len(s.label) for s in servers), default=0)
    return [
        f"{s.label:<{width}}  {s.status:<11}  "
        + (f"serial {s.serial}" if s.serial is not None else s.detail)
        for s in servers
    ]


def _said(server: Server, key: str) -> str:
    """What one server answered to one question, as an evidence line."""
    return f"{server.label}: {', '.join(server.answers.get(key, ())) or '(none)'}"


def _dig(server: Server, name: str, rdtype: str) -> str:
    return f"dig +norec @{server.address} {rdtype} {name}"


def _report_servers(ctx: ProbeContext, zone: str, servers: list[Server], rows: list[str]) -> None:
    """A finding per nameserver name that fails: lame, REFUSED, or not reached on
    any of its addresses (one address of several not reached from here, often
    IPv6 from an IPv4-only network, is only information)."""
    codes = {
        "lame": "dns.ns.lame",
        "refused": "dns.ns.refused",
        "unreachable": "dns.ns.unreachable",
        "private": "dns.ns.address.private",
    }
    for server in servers:
        code = codes.get(server.status)
        if code is None:
            continue
        severity = None
        if server.status == "unreachable" and any(
            s.name == server.name and s.status == "ok" for s in servers
        ):
            severity = Severity.INFO
        known = server.address != "-"
        ctx.add(
            code,
            target=Target(
                host=server.name,
                address=server.address if known else None,
                port=53 if known else None,
                protocol="dns",
            ),
            summary=f"nameserver {server.label} of {zone} {server.detail}",
            evidence=rows,
            reproduce=_dig(server, zone, "SOA") if known else ctx.net.dig(server.name, "A"),
            severity=severity,
            data={TABLE: rows},
        )
    serials = {s.serial for s in servers if s.serial is not None}
    if len(serials) > 1:
        newest = max(serials)
        behind = [s for s in servers if s.serial is not None and s.serial != newest]
        ctx.add(
            "dns.ns.serial_mismatch",
            target=Target(host=zone),
            summary=(
                f"the nameservers of {zone} serve different versions of the zone: serial "
                f"{newest} at most, {', '.join(f'{s.label} has {s.serial}' for s in behind)}"
            ),
            evidence=rows,
            reproduce=_dig(behind[0], zone, "SOA"),
            data={TABLE: rows},
        )


def _parent_child(
    ctx: ProbeContext, zone: str, parent: list[str], asked: str, child: list[str], rows: list[str]
) -> None:
    only_parent = sorted(set(parent) - set(child))
    only_child = sorted(set(child) - set(parent))
    parts = []
    if only_parent:
        parts.append(f"only in the delegation: {', '.join(only_parent)}")
    if only_child:
        parts.append(f"only in the zone: {', '.join(only_child)}")
    parent_zone = zone.split(".", 1)[1]
    ctx.add(
        "dns.ns.parent_child_mismatch",
        target=Target(host=zone),
        summary=f"the {parent_zone} zone delegates {zone} to other nameservers than the "
        f"zone lists ({'; '.join(parts)})",
        evidence=[
            f"delegation ({parent_zone}, from {asked}): {', '.join(parent)}",
            f"zone ({zone}): {', '.join(child)}",
        ],
        reproduce=f"dig +norec NS {zone} @{asked}; {ctx.net.dig(zone, 'NS')}",
        data={TABLE: rows},
    )


def _compare(
    ctx: ProbeContext,
    zone: str,
    good: list[Server],
    asked: list[tuple[str, str]],
    rows: list[str],
) -> list[str]:
    """Add dns.ns.records_differ for each record set the servers disagree on."""
    differ = []
    for name, rdtype in asked:
        key = _key(name, rdtype)
        if any(key not in s.answers for s in good):
            continue  # the check's query budget ran out before every server was asked
        seen = {s.answers[key] for s in good}
        if len(seen) <= 1:
            continue
        differ.append(key)
        ctx.add(
            "dns.ns.records_differ",
            target=Target(host=name),
            summary=f"the nameservers of {zone} give different {rdtype} records for {name}",
            evidence=[_said(s, key) for s in good],
            reproduce="; ".join(_dig(s, name, rdtype) for s in good[:2]),
            data={TABLE: rows},
        )
    return differ


async def _nothing() -> None:
    return None


async def _cached(
    net: Network, name: str, rdtype: str
) -> tuple[tuple[str, ...], int | None] | None:
    """The resolver's answer and its TTL left; None when it gave none, or
    followed an alias (the servers answer the alias itself)."""
    try:
        answer = await net.query(name, rdtype)
    except NXDomain:
        return NXDOMAIN, None
    except DNSError:
        return None
    if answer.via_cname:
        return None
    return tuple(sorted(r.to_text() for r in answer.records)), answer.ttl


def _against_resolver(
    ctx: ProbeContext,
    good: list[Server],
    asked: list[tuple[str, str]],
    cached: list[tuple[tuple[str, ...], int | None] | None],
) -> None:
    """Where the authoritative servers agree, does the resolver serve the same?"""
    for (name, rdtype), seen in zip(asked, cached, strict=True):
        key = _key(name, rdtype)
        if key not in good[0].answers:
            continue  # not asked: the check's query budget was spent
        authoritative = good[0].answers[key]
        if seen is None or seen[0] == authoritative:
            continue
        if any(a.startswith("no answer") for a in authoritative):
            continue
        values, ttl = seen
        left = f" for up to {_minutes(ttl)} more" if ttl else ""
        ctx.add(
            "dns.propagation.pending",
            target=Target(host=name),
            summary=(
                f"the resolver still serves the old {rdtype} for {name}{left}: "
                f"{', '.join(values) or '(none)'}; the nameservers say "
                f"{', '.join(authoritative) or '(none)'}"
            ),
            evidence=[
                f"resolver {ctx.net.resolver_label()}: {', '.join(values) or '(none)'}"
                + (f" (TTL {ttl} s left)" if ttl else ""),
                *(_said(s, key) for s in good),
            ],
            reproduce=f"{ctx.net.dig(name, rdtype)}; {_dig(good[0], name, rdtype)}",
            data={"ttl": ttl},
        )


def _minutes(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 7200:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds / 3600:.1f} hours"


async def probe_dkim_keys(ctx: ProbeContext) -> None:
    """The DKIM keys the policy stage found, asked of every nameserver too."""
    found: Nameservers | None = ctx.result(NAMESERVERS)
    names: list[str] = ctx.result(DKIM_KEYS)
    if found is None or not found.good or not names:
        return
    asked = [(name, "TXT") for name in names]
    await asyncio.gather(*(_ask_all(ctx.net, s, asked) for s in found.good))
    _compare(ctx, found.zone, found.good, asked, table(found.servers))


PROBES: tuple[Probe, ...] = (
    Probe(NAMESERVERS.name, Stage.DNS, probe_nameservers),
    Probe(
        "policy.dkim.nameservers",
        Stage.POLICY,
        probe_dkim_keys,
        needs=("dns.nameservers", "policy.dkim"),
    ),
)
