"""SMTP on port 25 of every MX address, and submission on 587/465.

What an admin checks with `telnet mx 25` and `openssl s_client -starttls
smtp`: the greeting, the EHLO capabilities, STARTTLS, EHLO again; whether a
password could travel in the clear; whether the server's name matches its MX
and PTR names.
"""

from __future__ import annotations

import asyncio

from checks.core.model import Stage
from checks.protocols.session import Endpoint, Session
from checks.protocols.smtp import (
    CLEARTEXT_MECHANISMS,
    SMTP,
    auth_mechanisms,
    banner_name,
    capability,
)
from checks.stages.dns import MailHost
from checks.stages.endpoints import SUBMISSION, mx_endpoints
from checks.stages.keys import MX_HOSTS, MX_SESSIONS, PTR, SUBMISSION_SESSIONS
from checks.stages.probe import Probe, ProbeContext
from checks.stages.sessions import converse_or_refuse, probe_service, reproduce, severity_for

# -- judging a finished session (pure) -----------------------------------------------------


def judge_smtp(ctx: ProbeContext, s: Session) -> None:
    ep = s.endpoint
    target = ep.target()
    cleartext = sorted(auth_mechanisms(s.capabilities) & CLEARTEXT_MECHANISMS)
    if ep.tls == "starttls" and cleartext:
        ctx.add(
            "smtp.auth.before_tls",
            target=target,
            summary=f"{ep.label()} offers AUTH {' '.join(cleartext)} before STARTTLS: "
            "passwords can be sent in the clear",
            evidence=s.transcript[-20:],
            reproduce=reproduce(ep, tls=False),
        )
    if ep.tls == "starttls" and capability(s.capabilities, "STARTTLS") is None:
        ctx.add(
            "smtp.starttls.missing",
            target=target,
            summary=f"{ep.label()} does not offer STARTTLS: mail to it travels in the clear"
            if ep.role == "mx"
            else f"{ep.label()} does not offer STARTTLS: logins travel in the clear",
            evidence=s.transcript[-20:],
            reproduce=reproduce(ep, tls=False),
            severity=severity_for(ep, "smtp.starttls.missing"),
        )
    if not s.complete:
        return
    caps = s.tls_capabilities or s.capabilities
    features = [
        k
        for k in (
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "REQUIRETLS",
        )
        if capability(caps, k) is not None
    ]
    size = capability(caps, "SIZE")
    auth = sorted(auth_mechanisms(caps))
    parts = [f"{ep.label()}: {s.banner}"]
    if s.tls:
        parts.append(f"{s.tls.version} {s.tls.cipher}")
    if size:
        parts.append(f"SIZE {size}")
    if auth:
        parts.append("AUTH " + " ".join(auth))
    ctx.add(
        "smtp.ok" if ep.service == "smtp" else "submission.ok",
        target=target,
        summary="; ".join(parts),
        evidence=s.transcript[-40:],
        reproduce=reproduce(ep, tls=s.tls is not None),
        data={"capabilities": list(caps), "features": features, "auth": auth, "size": size},
    )


# -- probes -----------------------------------------------------------------------------------


async def _sessions(ctx: ProbeContext, endpoints: list[Endpoint]) -> list[Session]:
    found = await asyncio.gather(
        *(converse_or_refuse(ctx, ep, SMTP(ctx.net.config)) for ep in endpoints)
    )
    sessions = [s for s in found if s is not None]
    for s in sessions:
        judge_smtp(ctx, s)
    return sessions


async def probe_mx_smtp(ctx: ProbeContext) -> list[Session]:
    """Port 25 of every usable MX address."""
    hosts: tuple[MailHost, ...] = ctx.result(MX_HOSTS)
    return await _sessions(ctx, mx_endpoints(hosts))


async def probe_smtp_names(ctx: ProbeContext) -> None:
    """Does the name a server gives (banner, EHLO) match its MX name or its PTR?"""
    sessions: list[Session] = ctx.result(MX_SESSIONS)
    ptrs: dict[str, list[str]] = ctx.result(PTR)
    for s in sessions:
        ep = s.endpoint
        if s.banner is None:
            continue
        said = {n for n in (banner_name(s.banner), s.server_name) if n}
        known = {ep.host.lower(), *(p.lower() for p in ptrs.get(ep.address, []))}
        if said and not said & known:
            ctx.add(
                "smtp.hostname.mismatch",
                target=ep.target(),
                summary=f"{ep.label()} calls itself {', '.join(sorted(said))}, which is "
                f"neither its MX name nor its PTR ({', '.join(sorted(known))})",
                evidence=[line for line in s.transcript if "S: 220" in line or "S: 250" in line][
                    :4
                ],
                reproduce=reproduce(ep, tls=False),
            )


async def probe_submission(ctx: ProbeContext) -> list[Session]:
    """Submission (587 STARTTLS, 465 implicit TLS) where clients would find it."""
    return await probe_service(
        ctx,
        SUBMISSION,
        SMTP,
        judge_smtp,
        ("submission.missing", "submission server on 587 or 465"),
        hosts=ctx.result(MX_HOSTS),
    )


PROBES: tuple[Probe, ...] = (
    Probe(MX_SESSIONS.name, Stage.CONNECT, probe_mx_smtp, needs=("dns.mx.hosts",)),
    Probe("connect.smtp.names", Stage.CONNECT, probe_smtp_names, needs=("connect.smtp", "dns.ptr")),
    Probe(
        SUBMISSION_SESSIONS.name,
        Stage.CONNECT,
        probe_submission,
        needs=("dns.mx", "dns.srv", "dns.mx.hosts"),
    ),
)
