"""The TLS stage: judge every handshake the connect stage made, and try the
legacy protocol versions one by one on fresh connections."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from checks.core.errors import NetError, TargetRefused
from checks.core.model import Stage
from checks.protocols.mailbox import IMAPDialect, POP3Dialect
from checks.protocols.session import DialectFactory, Endpoint, Session
from checks.protocols.smtp import SMTP
from checks.rules import tls
from checks.stages import mailbox, smtp
from checks.stages.dns import MailHost
from checks.stages.endpoints import IMAP, POP3, SUBMISSION, mx_endpoints
from checks.stages.keys import (
    IMAP_SESSIONS,
    MX_HOSTS,
    MX_SESSIONS,
    POP3_SESSIONS,
    STS,
    SUBMISSION_SESSIONS,
)
from checks.stages.mtasts import STSState
from checks.stages.probe import Key, Probe, ProbeContext
from checks.stages.sessions import reached, reproduce, service_endpoints, severity_for

DIALECTS: dict[str, DialectFactory] = {"smtp": SMTP, "imap": IMAPDialect, "pop3": POP3Dialect}
# The connect probes whose conversations this stage judges.
SESSION_PROBES: tuple[Key[list[Session]], ...] = (
    MX_SESSIONS,
    SUBMISSION_SESSIONS,
    IMAP_SESSIONS,
    POP3_SESSIONS,
)


def _tls_sessions(ctx: ProbeContext) -> list[Session]:
    return [s for key in SESSION_PROBES for s in ctx.result(key) if s.tls is not None]


@dataclass
class _Group:
    problem: tls.Problem
    endpoints: list[Endpoint]
    evidence: tuple[str, ...]


def problems_of(
    s: Session, chain: list[tls.CertInfo], ca_file: str | None, now: datetime
) -> list[tls.Problem]:
    """Everything wrong with one handshake (`chain`: its certificates, parsed):
    chain, name, dates, key, cipher."""
    assert s.tls is not None
    found = []
    chain_problem = tls.chain_problem(s.tls.chain_der, ca_file)
    if chain_problem:
        found.append(chain_problem)
    if chain:
        leaf = chain[0]
        if not tls.match_hostname(s.endpoint.host, leaf.sans):
            names = ", ".join(leaf.sans) or f"no DNS names (CN {leaf.common_name})"
            found.append(
                tls.Problem(
                    "tls.cert.hostname_mismatch",
                    f"certificate is for {names}, not {s.endpoint.host}",
                )
            )
        for check in (tls.validity_problem(leaf, now), tls.key_problem(leaf)):
            if check:
                found.append(check)
    cipher = tls.cipher_problem(s.tls.cipher, s.tls.cipher_bits)
    if cipher:
        found.append(cipher)
    return found


def chain_evidence(s: Session, chain: list[tls.CertInfo]) -> tuple[str, ...]:
    """What `openssl s_client -showcerts` would show: the handshake, then each
    certificate as sent, leaf first."""
    lines = [line for line in s.transcript if "-- TLS" in line]
    for i, cert in enumerate(chain):
        lines.append(
            f"certificate {i}: {cert.subject}; issuer {cert.issuer}; valid "
            f"{cert.not_before:%Y-%m-%d} to {cert.not_after:%Y-%m-%d}; "
            f"DNS names {', '.join(cert.sans) or '(none)'}; {cert.key_type} {cert.key_bits}"
        )
    return tuple(lines)


async def probe_certificates(ctx: ProbeContext) -> None:
    ca_file = ctx.net.config.ca_file
    sts: STSState = ctx.result(STS)
    now = tls.now_utc()
    groups: dict[tuple[str, str, str, str], _Group] = {}
    facts = {}
    for s in _tls_sessions(ctx):
        assert s.tls is not None
        ep = s.endpoint
        chain = [tls.parse_cert(d) for d in s.tls.chain_der]
        facts[ep.label()] = {
            "version": s.tls.version,
            "cipher": s.tls.cipher,
            "bits": s.tls.cipher_bits,
            "certificates": [c.as_dict() for c in chain],
        }
        leaf_id = chain[0].sha256 if chain else ""
        problems = problems_of(s, chain, ca_file, now)
        for p in problems:
            key = (ep.host, ep.address, leaf_id, p.code)
            group = groups.setdefault(key, _Group(p, [], chain_evidence(s, chain)))
            group.endpoints.append(ep)
        if not problems and chain:
            leaf = chain[0]
            left = (leaf.not_after - now).days
            ctx.add(
                "tls.ok",
                target=ep.target(),
                summary=f"{ep.label()}: {s.tls.version} {s.tls.cipher}; certificate for "
                f"{', '.join(leaf.sans[:4])} valid until {leaf.not_after:%Y-%m-%d} "
                f"({left} days), issued by {leaf.issuer}",
                reproduce=reproduce(ep),
                data={"certificates": [c.as_dict() for c in chain]},
            )
    ctx.fact("tls", facts)
    for group in groups.values():
        first = group.endpoints[0]
        # Users' clients are the ones who fail: their endpoint decides the severity.
        decisive = next((ep for ep in group.endpoints if ep.role != "mx"), first)
        enforced = decisive.role == "mx" and sts.enforces(decisive.host)
        severity = severity_for(decisive, group.problem.code, group.problem.severe, enforced)
        ports = ", ".join(f"{ep.port}/{ep.protocol}" for ep in group.endpoints)
        why = (
            "; the MTA-STS policy is in enforce mode, so senders that honour it will not deliver"
            if enforced
            else ""
        )
        ctx.add(
            group.problem.code,
            target=first.target(),
            summary=f"{first.host} [{first.address}] ({ports}): {group.problem.summary}{why}",
            evidence=group.evidence,
            reproduce=reproduce(first),
            severity=severity,
        )


async def _accepts(ctx: ProbeContext, ep: Endpoint, version: str | None) -> str | None:
    """The legacy version the server settles on when offered only TLS 1.0-1.1
    (`version` None), or `version` alone; None if it refuses."""
    dialect = DIALECTS[ep.family](ctx.net.config)
    try:
        async with ctx.net.connect(ep.target()) as conn:
            if ep.tls == "starttls":
                await dialect.greet(conn, ctx.net.config.timeouts.banner)
                await dialect.capabilities(conn)
                await dialect.starttls(conn)
            session = await conn.start_tls(ep.host, version=version or "legacy")
            return session.version
    except (NetError, TargetRefused):
        return None


async def _legacy(ctx: ProbeContext, ep: Endpoint) -> None:
    # One handshake offering only TLS 1.0-1.1 answers "is legacy TLS on?" for
    # the common, healthy case; only a server that takes it costs a second
    # connection, to tell whether TLS 1.0 is on too.
    best = await _accepts(ctx, ep, None)
    if best is None:
        return
    accepted = [best]
    if best != "TLSv1" and await _accepts(ctx, ep, "TLSv1"):
        accepted.insert(0, "TLSv1")
    ctx.add(
        "tls.protocol.legacy",
        target=ep.target(),
        summary=f"{ep.label()} still accepts {' and '.join(accepted)}",
        reproduce=reproduce(ep) + (" -tls1" if "TLSv1" in accepted else " -tls1_1"),
    )


async def _endpoints(ctx: ProbeContext, source: Probe) -> list[Endpoint]:
    """The endpoints connect probe `source` talks to, found as it finds them
    (with the MX hosts when it takes them; the lookups are the check's, asked
    once)."""
    hosts: tuple[MailHost, ...] = ctx.result(MX_HOSTS) if MX_HOSTS.name in source.needs else ()
    service = source.name.removeprefix("connect.")
    if service == "smtp":
        return mx_endpoints(hosts)
    found = await service_endpoints(ctx, _SPECS[service], hosts)
    return list(found.endpoints) if found is not None else []


_SPECS = {spec.service: spec for spec in (SUBMISSION, IMAP, POP3)}


def _legacy_probe(key: Key[list[Session]]) -> Probe:
    """Legacy versions for the endpoints of one connect probe, each tried
    beside that probe's own conversation with it, not after it: a second
    connection as soon as the first has connected with implicit TLS or seen
    STARTTLS offered."""

    source = _SOURCES[key.name]

    async def probe(ctx: ProbeContext) -> None:
        endpoints = list(dict.fromkeys(await _endpoints(ctx, source)))

        async def legacy(ep: Endpoint) -> None:
            if await reached(ctx.net, ep, ctx.followed(key)):
                await _legacy(ctx, ep)

        await asyncio.gather(*(legacy(ep) for ep in endpoints))

    name = f"tls.legacy.{source.name.removeprefix('connect.')}"
    return Probe(name, Stage.TLS, probe, needs=source.needs, follows=(source.name,))


_SOURCES = {p.name: p for p in (*smtp.PROBES, *mailbox.PROBES)}


PROBES: tuple[Probe, ...] = (
    # MTA-STS decides how bad a port-25 certificate problem is.
    Probe(
        "tls.certificates",
        Stage.TLS,
        probe_certificates,
        needs=(*(key.name for key in SESSION_PROBES), STS.name),
    ),
    *(_legacy_probe(key) for key in SESSION_PROBES),
)
