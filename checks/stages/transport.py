"""The policy stage (second part): may senders insist on TLS to the MX, and can they?

MTA-STS (RFC 8461) says so over HTTPS; DANE (RFC 7672) says so in DNSSEC-signed
TLSA records. The policy-stage probes here read what the domain publishes
(the `_mta-sts` record and policy file, the zone's DNSSEC chain, the MX
hosts' TLSA records); `tls.policy` then holds the port-25 handshakes the TLS
stage made against them, as a DANE or MTA-STS sender would.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from checks.core.errors import ConnectionClosed, DNSError, NetError, TargetRefused
from checks.core.model import Severity, Stage, Target
from checks.net import http
from checks.net.door import Network
from checks.protocols.session import Session
from checks.rules import dane, mtasts, tls
from checks.rules.dnssec import Security, Validated, Validator
from checks.stages.dns import MailHost, MXSet
from checks.stages.endpoints import address_questions
from checks.stages.policy import lookup_txts
from checks.stages.probe import Probe, ProbeContext
from checks.stages.sessions import reproduce

# -- MTA-STS ------------------------------------------------------------------------


def validator_for(net: Network) -> Validator:
    """The check's DNSSEC Validator, asking through this door, made on first
    use with the configured trust anchors (the IANA root's when none are)."""
    found = net.memo.get("dnssec.validator")
    if not isinstance(found, Validator):
        found = net.memo["dnssec.validator"] = Validator(
            net, net.config.cpu, net.config.trust_anchors
        )
    return found


@dataclass(frozen=True)
class STSState:
    """The MTA-STS policy senders would apply (None: they would apply none)."""

    policy: mtasts.Policy | None = None

    def enforces(self, host: str) -> bool:
        """Whether senders require valid TLS to `host` (enforce mode, host covered)."""
        p = self.policy
        return (
            p is not None and p.mode == "enforce" and any(mtasts.mx_covered(m, host) for m in p.mx)
        )


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


async def probe_mtasts(ctx: ProbeContext) -> STSState:
    mxset: MXSet | None = ctx.result("dns.mx")
    if mxset is None:
        return STSState()
    domain = ctx.domain
    name = f"_mta-sts.{domain}"
    txts = await lookup_txts(ctx, name)
    if txts is None:
        return STSState()
    record_target, dig = Target(host=name), ctx.net.dig(name, "TXT")
    text, problems = mtasts.select(txts)
    if text is None:
        if problems:
            ctx.add(
                "mtasts.record.invalid", target=record_target, summary=problems[0], reproduce=dig
            )
        else:
            ctx.add(
                "mtasts.missing",
                target=Target(host=domain),
                summary=f"{domain} publishes no MTA-STS record ({name})",
                reproduce=dig,
            )
        return STSState()
    try:
        record = mtasts.parse_txt(text)
    except mtasts.MTASTSError as exc:
        ctx.add(
            "mtasts.record.invalid",
            target=record_target,
            summary=str(exc),
            evidence=[text],
            reproduce=dig,
        )
        return STSState()

    url = policy_url(domain)
    policy_target = Target(host=f"mta-sts.{domain}", port=443, protocol="https")
    curl = http.curl(ctx.net, url)

    def unreachable(
        why: str, evidence: list[str] | None = None, severity: Severity | None = None
    ) -> STSState:
        ctx.add(
            "mtasts.policy.unreachable",
            target=policy_target,
            summary=f"{url}: {why}",
            evidence=evidence or [f"_mta-sts record: {text}"],
            reproduce=curl,
            severity=severity,
        )
        return STSState()

    try:
        fetched = await http.fetch_reporting(ctx, url, max_bytes=mtasts.MAX_POLICY_BYTES)
    except TargetRefused as exc:
        return unreachable(str(exc))
    except DNSError as exc:
        return unreachable(f"mta-sts.{domain} does not resolve ({exc})")
    except ConnectionClosed as exc:  # a reset: busy as often as broken
        return unreachable(f"{exc} (busy? try again)", severity=Severity.INCONCLUSIVE)
    except NetError as exc:
        return unreachable(str(exc))
    if fetched.status != 200:
        why = f"HTTP {fetched.status} {fetched.reason}"
        if fetched.location:
            why += f", redirecting to {fetched.location[:120]} (senders never follow redirects)"
        return unreachable(why)
    try:
        policy = mtasts.parse_policy(fetched.text())
    except mtasts.MTASTSError as exc:
        ctx.add(
            "mtasts.policy.invalid",
            target=policy_target,
            summary=str(exc),
            evidence=fetched.text().splitlines()[:20],
            reproduce=curl,
        )
        return STSState()
    warnings = list(record.warnings + policy.warnings)
    if fetched.content_type != "text/plain":
        ctx.add(
            "mtasts.policy.invalid",
            target=policy_target,
            summary=f"served as {fetched.content_type or 'no Content-Type'}, not text/plain: "
            "strict senders discard it",
            reproduce=curl,
            severity=Severity.WARNING,
        )
    hosts = [mx.host for mx in mxset.hosts]
    if policy.mode != "none":
        for host in mtasts.uncovered(policy, hosts):
            ctx.add(
                "mtasts.mx.not_covered",
                target=Target(host=host),
                summary=f"MX {host} matches no mx: line of the policy "
                f"({', '.join(policy.mx)}); under mode {policy.mode} senders "
                + ("refuse to deliver to it" if policy.mode == "enforce" else "report it"),
                evidence=fetched.text().splitlines()[:20],
                reproduce=curl,
                severity=None if policy.mode == "enforce" else Severity.WARNING,
            )
    summary = (
        f"mode {policy.mode}, max_age {policy.max_age} s, mx {', '.join(policy.mx) or '(none)'}"
        f" (id {record.id})"
    )
    if policy.mode == "testing":
        ctx.add("mtasts.mode.testing", target=policy_target, summary=summary, reproduce=curl)
    elif policy.mode == "none":
        ctx.add(
            "mtasts.missing",
            target=Target(host=domain),
            summary=f"the MTA-STS policy is mode none: senders drop it ({summary})",
            reproduce=curl,
        )
    else:
        ctx.add(
            "mtasts.ok", target=policy_target, summary=summary, evidence=warnings, reproduce=curl
        )
    ctx.fact(
        "mtasts",
        {
            "id": record.id,
            "mode": policy.mode,
            "max_age": policy.max_age,
            "mx": list(policy.mx),
            "warnings": warnings,
        },
    )
    return STSState(policy)


# -- DNSSEC ---------------------------------------------------------------------------


def delv(ctx: ProbeContext, name: str, rdtype: str) -> str:
    """The command that repeats a validation by hand (BIND's delv, in dnsutils)."""
    server = ctx.net.dig(name, rdtype).partition(" @")[2]
    at = f" @{server}" if server else ""
    return f"delv{at} {rdtype} {name} +vtrace"


_STATUS_CODES = {
    Security.SECURE: "dnssec.ok",
    Security.INSECURE: "dnssec.unsigned",
    Security.BOGUS: "dnssec.bogus",
    Security.INDETERMINATE: "dnssec.inconclusive",
}


def _report_security(ctx: ProbeContext, v: Validated, summary: str, target: Target) -> None:
    ctx.add(
        _STATUS_CODES[v.status],
        target=target,
        summary=summary,
        evidence=list(v.chain),
        reproduce=delv(ctx, v.name, v.rdtype),
    )


async def probe_dnssec(ctx: ProbeContext) -> Validated | None:
    if ctx.result("dns.mx") is None:
        return None
    domain = ctx.domain
    v = await validator_for(ctx.net).validate(domain, "MX")
    if v.status is Security.SECURE:
        summary = f"{v.zone or domain} is signed; its MX records validate"
    elif v.status is Security.INSECURE:
        summary = v.reason
    else:
        summary = f"{domain} MX: {v.reason}"
    _report_security(ctx, v, summary, Target(host=domain))
    ctx.fact("dnssec", {"status": v.status.value, "zone": v.zone, "reason": v.reason})
    return v


# -- DANE: TLSA records of the MX hosts ------------------------------------------------


@dataclass(frozen=True)
class DaneHosts:
    """MX host -> its usable, DNSSEC-validated TLSA records (DANE applies there)."""

    records: dict[str, tuple[dane.TLSA, ...]] = field(default_factory=dict)


def tlsa_name(host: str, port: int = 25) -> str:
    return f"_{port}._tcp.{host}"


async def probe_tlsa(ctx: ProbeContext) -> DaneHosts:
    hosts: tuple[MailHost, ...] = ctx.result("dns.mx.hosts")
    names = list(dict.fromkeys(h.host for h in hosts))
    validator = validator_for(ctx.net)
    results = await asyncio.gather(*(validator.validate(tlsa_name(h), "TLSA") for h in names))
    found: dict[str, tuple[dane.TLSA, ...]] = {}
    for host, v in zip(names, results, strict=True):
        if not v.records and v.status is not Security.BOGUS:
            continue  # no TLSA records: no DANE for this host, nothing wrong
        target = Target(host=tlsa_name(host))
        if v.status is not Security.SECURE:
            if v.status is Security.INSECURE:
                ctx.add(
                    "dane.tlsa.unsigned",
                    target=target,
                    summary=f"{host} publishes TLSA records but {v.reason}",
                    evidence=[r.to_text() for r in v.records],
                    reproduce=delv(ctx, tlsa_name(host), "TLSA"),
                )
            else:
                _report_security(ctx, v, f"TLSA {tlsa_name(host)}: {v.reason}", target)
            continue
        records = tuple(dane.from_rdata(r) for r in v.records)
        usable = tuple(r for r in records if r.usable)
        if not usable:
            ctx.add(
                "dane.tlsa.unusable",
                target=target,
                summary=f"{host}: none of its {len(records)} TLSA record(s) is DANE-TA(2) or "
                "DANE-EE(3) with known parameters, so SMTP senders ignore them",
                evidence=[r.text() for r in records],
                reproduce=ctx.net.dig(tlsa_name(host), "TLSA"),
            )
            continue
        found[host] = usable
    ctx.fact("dane", {host: [r.text() for r in recs] for host, recs in found.items()})
    return DaneHosts(found)


# -- the TLS stage: port-25 handshakes against the policies ---------------------------


def _no_tls(s: Session) -> str:
    # A conversation that went through without TLS never saw STARTTLS offered.
    return "offers no STARTTLS" if s.complete else "its TLS handshake fails"


async def probe_tls_policy(ctx: ProbeContext) -> None:
    sessions: list[Session] = ctx.result("connect.smtp")
    sts: STSState = ctx.result("policy.mtasts")
    dane_hosts: DaneHosts = ctx.result("policy.tlsa")
    now = tls.now_utc()
    for s in sessions:
        ep = s.endpoint
        host = ep.host
        records = dane_hosts.records.get(host)
        failed = s.tls is None
        if records is not None:
            if failed:
                ctx.add(
                    "dane.tls.unavailable",
                    target=ep.target(),
                    summary=f"{ep.label()} has DANE TLSA records but {_no_tls(s)}",
                    evidence=list(s.transcript[-8:]),
                    reproduce=reproduce(ep),
                )
            else:
                assert s.tls is not None
                verdict = dane.match(records, s.tls.chain_der, host, now)
                if verdict.ok and verdict.matched is not None:
                    which = (
                        "the server's certificate"
                        if verdict.depth == 0
                        else f"certificate {verdict.depth} of the chain it sends"
                    )
                    ctx.add(
                        "dane.ok",
                        target=ep.target(),
                        summary=f"{ep.label()}: TLSA {verdict.matched.text()[:24]}… "
                        f"({verdict.matched.kind}) matches {which}",
                        reproduce=dane.reproduce(host, ep.port, records),
                    )
                else:
                    ctx.add(
                        "dane.tlsa.mismatch",
                        target=ep.target(),
                        summary=f"{ep.label()}: " + "; ".join(verdict.problems),
                        evidence=[r.text() for r in records],
                        reproduce=dane.reproduce(host, ep.port, records),
                    )
        if sts.enforces(host) and failed:
            ctx.add(
                "mtasts.tls.unavailable",
                target=ep.target(),
                summary=f"{ep.label()} is covered by an enforced MTA-STS policy but {_no_tls(s)}",
                evidence=list(s.transcript[-8:]),
                reproduce=reproduce(ep),
            )


PROBES: tuple[Probe, ...] = (
    Probe(
        "policy.mtasts",
        Stage.POLICY,
        probe_mtasts,
        needs=("dns.mx",),
        asks=lambda r, _c: [
            (f"_mta-sts.{r.domain}", "TXT"),
            *address_questions(f"mta-sts.{r.domain}"),
        ],
    ),
    Probe("policy.dnssec", Stage.POLICY, probe_dnssec, needs=("dns.mx",)),
    Probe("policy.tlsa", Stage.POLICY, probe_tlsa, needs=("dns.mx.hosts",)),
    Probe(
        "tls.policy",
        Stage.TLS,
        probe_tls_policy,
        needs=("connect.smtp", "policy.mtasts", "policy.tlsa"),
    ),
)
