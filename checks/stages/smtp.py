"""SMTP on port 25 of every MX address, and submission on 587/465.

What an admin checks with `telnet mx 25` and `openssl s_client -starttls
smtp`: the greeting, the EHLO capabilities, STARTTLS, EHLO again; whether a
password could travel in the clear; whether the server's name matches its MX
and PTR names.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

from checks.core.config import EngineConfig
from checks.core.errors import NetError, ProtocolViolation
from checks.core.model import Stage
from checks.net.conn import Connection
from checks.stages.dns import MailHost
from checks.stages.endpoints import SUBMISSION, Endpoint, mx_endpoints
from checks.stages.probe import Probe, ProbeContext
from checks.stages.sessions import (
    Refused,
    Session,
    converse_or_refuse,
    probe_service,
    reproduce,
    severity_for,
)

_REPLY = re.compile(r"^(\d{3})(?:([ -])(.*))?$")
CLEARTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def parse_reply_line(line: str) -> tuple[int, bool, str]:
    """(code, is_last, text) of one reply line; ProtocolViolation if it is not SMTP."""
    m = _REPLY.match(line)
    if not m:
        raise ProtocolViolation(f"not an SMTP reply: {line[:80]!r}")
    return int(m.group(1)), m.group(2) != "-", m.group(3) or ""


async def read_reply(conn: Connection, timeout: float | None = None) -> Reply:
    lines: list[str] = []
    code = None
    while True:
        this, last, text = parse_reply_line(await conn.read_line(timeout))
        if code is not None and this != code:
            raise ProtocolViolation(f"reply code changed mid-reply ({code} then {this})")
        code = this
        lines.append(text)
        if last:
            return Reply(code, tuple(lines))
        if len(lines) >= conn.limits.reply_lines:
            raise ProtocolViolation(f"reply longer than {conn.limits.reply_lines} lines")


def parse_ehlo(reply: Reply) -> tuple[str, tuple[str, ...]]:
    """(the name the server gives in its EHLO reply, capability lines upper-cased keyword)."""
    first = reply.lines[0].split()
    name = first[0] if first else ""
    caps = []
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        caps.append(f"{keyword.upper()} {params}".strip() if params else keyword.upper())
    return name, tuple(caps)


def capability(caps: tuple[str, ...], keyword: str) -> str | None:
    """The parameters of `keyword` (AUTH, SIZE...) or None when not offered."""
    for cap in caps:
        head, _, params = cap.partition(" ")
        if head == keyword or head.startswith(keyword + "="):  # AUTH=LOGIN, old style
            return params if head == keyword else head.split("=", 1)[1] + " " + params
    return None


def auth_mechanisms(caps: tuple[str, ...]) -> set[str]:
    mechanisms: set[str] = set()
    for cap in caps:
        head, _, params = cap.partition(" ")
        if head == "AUTH":
            mechanisms |= {m.upper() for m in params.split()}
        elif head.startswith("AUTH="):
            mechanisms |= {m.upper() for m in (head[5:] + " " + params).split()}
    return mechanisms


class SMTP:
    family = "smtp"

    def __init__(self, config: EngineConfig) -> None:
        self.helo_name = config.helo_name
        self.server_name: str | None = None  # as the EHLO reply gives it

    async def greet(self, conn: Connection, timeout: float) -> str:
        reply = await read_reply(conn, timeout)
        if reply.code != 220:
            raise Refused("greeting", str(reply))
        return str(reply)

    async def capabilities(self, conn: Connection) -> tuple[str, ...]:
        await conn.write_line(f"EHLO {self.helo_name}")
        reply = await read_reply(conn)
        if reply.code != 250:
            raise Refused("EHLO", str(reply))
        name, caps = parse_ehlo(reply)
        self.server_name = name.lower().rstrip(".")
        return caps

    def offers_starttls(self, caps: tuple[str, ...]) -> bool:
        return capability(caps, "STARTTLS") is not None

    async def starttls(self, conn: Connection) -> None:
        await conn.write_line("STARTTLS")
        reply = await read_reply(conn)
        if reply.code != 220:
            raise Refused("STARTTLS", str(reply))

    async def quit(self, conn: Connection) -> None:
        await conn.write_line("QUIT")
        with contextlib.suppress(NetError):  # some servers just hang up; that is fine
            await read_reply(conn, 5.0)


def banner_name(banner: str) -> str:
    """The host name a greeting announces: `220 mx.example.com ESMTP` -> mx.example.com."""
    parts = banner.split()
    return parts[1].lower().rstrip(".") if len(parts) > 1 else ""


# -- judging a finished session (pure) -----------------------------------------------------


def judge(ctx: ProbeContext, s: Session) -> None:
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
        judge(ctx, s)
    return sessions


async def probe_mx_smtp(ctx: ProbeContext) -> list[Session]:
    """Port 25 of every usable MX address."""
    hosts: tuple[MailHost, ...] = ctx.result("dns.mx.hosts")
    return await _sessions(ctx, mx_endpoints(hosts))


async def probe_smtp_names(ctx: ProbeContext) -> None:
    """Does the name a server gives (banner, EHLO) match its MX name or its PTR?"""
    sessions: list[Session] = ctx.result("connect.smtp")
    ptrs: dict[str, list[str]] = ctx.result("dns.ptr")
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
        judge,
        ("submission.missing", "submission server on 587 or 465"),
        hosts=ctx.result("dns.mx.hosts"),
    )


PROBES: tuple[Probe, ...] = (
    Probe("connect.smtp", Stage.CONNECT, probe_mx_smtp, needs=("dns.mx.hosts",)),
    Probe("connect.smtp.names", Stage.CONNECT, probe_smtp_names, needs=("connect.smtp", "dns.ptr")),
    Probe(
        "connect.submission",
        Stage.CONNECT,
        probe_submission,
        needs=("dns.mx", "dns.srv", "dns.mx.hosts"),
    ),
)
