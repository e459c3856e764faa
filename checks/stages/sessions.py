"""One conversation with a mail socket, the way an admin runs it by hand.

`converse()` connects through the door, reads the greeting, asks for the
capabilities, upgrades with STARTTLS (or starts with TLS on an implicit-TLS
port), asks again, and says goodbye. The protocol details live in a
`Dialect` (SMTP, IMAP, POP3); everything that can go wrong on the way is
turned into a finding here, once, with the transcript as evidence and the
command that reproduces it.

The three protocols are spoken directly over the door's connection rather
than through aiosmtplib/aioimaplib: a diagnosis needs every raw line with its
timing, the bounds against hostile servers, the chain as sent during STARTTLS,
and deliberately permissive handshakes, none of which those clients expose
(aioimaplib cannot even STARTTLS). They remain the right tools for the
authenticated, well-behaved sessions of the delivery checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from checks.core.errors import (
    BudgetExceeded,
    ConnectFailed,
    ConnectionClosed,
    ConnectRefused,
    ConnectTimeout,
    NetError,
    ProtocolViolation,
    ReadTimeout,
    TargetRefused,
    TLSDropped,
    TLSFailed,
)
from checks.core.model import Severity, Target
from checks.net.conn import Connection
from checks.net.door import Network
from checks.protocols.session import (
    Dialect,
    DialectFactory,
    Endpoint,
    Refused,
    Session,
    busy,
    temporary,
)
from checks.stages.dns import MailHost
from checks.stages.endpoints import Discovery, ServiceSpec, discover
from checks.stages.keys import MX_SET, SRV
from checks.stages.probe import ProbeContext

EVIDENCE_LINES = 40

# Codes per service (what the port is for) and per family (the protocol spoken),
# spelled out so every code can be found by name in the source.
CONNECT_CODES: dict[str, tuple[str, str]] = {  # service -> (refused, timeout)
    "smtp": ("smtp.connect.refused", "smtp.connect.timeout"),
    "submission": ("submission.connect.refused", "submission.connect.timeout"),
    "imap": ("imap.connect.refused", "imap.connect.timeout"),
    "pop3": ("pop3.connect.refused", "pop3.connect.timeout"),
}
GREETING_CODES: dict[str, tuple[str, str, str]] = {  # family -> (timeout, rejected, STARTTLS)
    "smtp": ("smtp.banner.timeout", "smtp.banner.rejected", "smtp.starttls.failed"),
    "imap": ("imap.banner.timeout", "imap.banner.rejected", "imap.starttls.failed"),
    "pop3": ("pop3.banner.timeout", "pop3.banner.rejected", "pop3.starttls.failed"),
}


# Problems a sending server shrugs off (it falls back to unauthenticated or
# cleartext delivery) but a person's mail client does not.
MX_LENIENT = frozenset(
    {
        "smtp.starttls.missing",
        "smtp.starttls.failed",
        "tls.handshake.failed",
        "tls.cert.expired",
        "tls.cert.not_yet_valid",
        "tls.cert.expiring",
        "tls.cert.hostname_mismatch",
        "tls.cert.untrusted",
        "tls.cert.chain_incomplete",
        "tls.cipher.weak",
        "tls.key.weak",
    }
)


def severity_for(
    endpoint: Endpoint, code: str, severe: bool = False, enforced: bool = False
) -> Severity | None:
    """Warning on an MX for what senders tolerate, unless `enforced` (an
    MTA-STS policy in enforce mode covers the host: senders then refuse);
    else the catalog's default (`severe` forces error, e.g. a certificate
    expiring within days)."""
    if endpoint.role == "mx" and code in MX_LENIENT:
        return Severity.ERROR if enforced else Severity.WARNING
    return Severity.ERROR if severe else None


def reproduce(endpoint: Endpoint, tls: bool = True) -> str:
    addr = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    if not tls:
        return f"telnet {endpoint.address} {endpoint.port}"
    starttls = f" -starttls {endpoint.family}" if endpoint.tls == "starttls" else ""
    return f"openssl s_client -connect {addr}:{endpoint.port}{starttls} -servername {endpoint.host}"


def _key(endpoint: Endpoint) -> tuple[str, str, int, str]:
    return (endpoint.host, endpoint.address, endpoint.port, endpoint.tls)


def _reached(net: Network, endpoint: Endpoint) -> asyncio.Future[bool]:
    """Whether this check's conversation with `endpoint` reached TLS: set
    True once it connected (implicit TLS) or saw STARTTLS offered, False once
    it failed before, for probes that go beside it."""
    reached: dict[tuple[str, str, int, str], asyncio.Future[bool]]
    reached = net.memo.setdefault("reached", {})
    future = reached.get(_key(endpoint))
    if future is None:
        future = reached[_key(endpoint)] = asyncio.get_running_loop().create_future()
    return future


async def reached(net: Network, endpoint: Endpoint, source: Awaitable[Any]) -> bool:
    """True once the conversation with `endpoint` is known to reach TLS (see
    _reached), False when it failed first or `source` (the probe holding it)
    ended without it."""
    known = asyncio.ensure_future(asyncio.shield(_reached(net, endpoint)))
    ended: asyncio.Future[Any] = asyncio.ensure_future(source)
    try:
        await asyncio.wait({known, ended}, return_when=asyncio.FIRST_COMPLETED)
        return known.done() and known.result()
    finally:
        known.cancel()
        ended.cancel()


def _conversations(net: Network) -> dict[tuple[str, str, int, str], asyncio.Future[Session | None]]:
    conversations: dict[tuple[str, str, int, str], asyncio.Future[Session | None]]
    conversations = net.memo.setdefault("conversations", {})
    return conversations


async def same_conversation(net: Network, endpoint: Endpoint) -> Session | None:
    """The outcome of a conversation with `endpoint` (same name, address, port
    and TLS mode) that this check had or is having; None if there was none."""
    pending = _conversations(net).get(_key(endpoint))
    return await asyncio.shield(pending) if pending is not None else None


async def converse(ctx: ProbeContext, endpoint: Endpoint, dialect: Dialect) -> Session | None:
    """Run the conversation; emit findings for what broke. None if it never
    got as far as a greeting. Other stages can read its outcome with
    `same_conversation`. Raises TargetRefused (ConnectBudgetExceeded among
    them) when it may not connect at all."""
    conversations = _conversations(ctx.net)
    outcome: asyncio.Future[Session | None] = asyncio.get_running_loop().create_future()
    conversations.setdefault(_key(endpoint), outcome)
    reaches_tls = _reached(ctx.net, endpoint)
    session = None
    try:
        session = await _converse(ctx, endpoint, dialect, reaches_tls)
        return session
    finally:
        if not outcome.done():
            outcome.set_result(session)
        if not reaches_tls.done():
            reaches_tls.set_result(False)


async def _converse(
    ctx: ProbeContext, endpoint: Endpoint, dialect: Dialect, reaches_tls: asyncio.Future[bool]
) -> Session | None:
    session = Session(endpoint)
    step = "connect"
    conn: Connection | None = None
    try:
        async with ctx.net.connect(endpoint.target()) as conn:
            if endpoint.tls == "implicit" and not reaches_tls.done():
                reaches_tls.set_result(True)
            if endpoint.tls == "implicit":
                step = "tls"
                session = replace(session, tls=await conn.start_tls(endpoint.host))
            step = "greeting"
            banner = await dialect.greet(conn, ctx.net.config.timeouts.banner)
            step = "capabilities"
            session = replace(
                session,
                banner=banner,
                capabilities=await dialect.capabilities(conn),
                server_name=getattr(dialect, "server_name", None),
            )
            offers = dialect.offers_starttls(session.capabilities)
            if endpoint.tls == "starttls" and not reaches_tls.done():
                reaches_tls.set_result(offers)
            if endpoint.tls == "starttls" and offers:
                step = "starttls"
                await dialect.starttls(conn)
                step = "tls"
                session = replace(session, tls=await conn.start_tls(endpoint.host))
                step = "capabilities after TLS"
                session = replace(session, tls_capabilities=await dialect.capabilities(conn))
            step = "quit"
            session = replace(session, complete=True)
            conn.leave(dialect.quit(conn))
    except NetError as exc:
        if isinstance(exc, BudgetExceeded):
            raise  # not connected at all: for the caller, a refused target
        transcript = tuple(conn.transcript) if conn is not None else ()
        _report_failure(ctx, endpoint, dialect, step, exc, transcript, session)
        if step == "quit":  # a rude goodbye is no problem
            return replace(session, transcript=transcript)
        if session.banner is None:
            return None
        return replace(session, transcript=transcript)
    return replace(session, transcript=tuple(conn.transcript))


def _report_failure(
    ctx: ProbeContext,
    ep: Endpoint,
    dialect: Dialect,
    step: str,
    exc: NetError,
    transcript: tuple[str, ...],
    session: Session,
) -> None:
    refused, timed_out = CONNECT_CODES[ep.service]
    banner_timeout, rejected, starttls_failed = GREETING_CODES[dialect.family]
    evidence = transcript[-EVIDENCE_LINES:]
    target = ep.target()

    def add(code: str, summary: str, *, tls: bool = False, severe: bool = False) -> None:
        ctx.add(
            code,
            target=target,
            summary=summary,
            evidence=evidence,
            reproduce=reproduce(ep, tls),
            severity=severity_for(ep, code, severe),
        )

    where = f"{ep.label()}"
    if isinstance(exc, ConnectRefused | ConnectFailed):
        if ep.advertised:
            add(refused, f"{where}: {exc}")
    elif isinstance(exc, ConnectTimeout):
        if ep.advertised:
            add(timed_out, f"{where}: {exc}")
    elif step == "quit":
        return
    elif isinstance(exc, Refused):
        if step == "greeting":
            add(rejected, f"{where} refused us: {exc.reply}")
        elif busy(exc.reply) if step == "starttls" else temporary(exc.reply):
            # Busy now: what it does when it is not is unknown.
            add(rejected, f"{where} turned us away during {step}: {exc.reply}")
        elif step == "starttls":
            add(
                starttls_failed,
                f"{where} advertises STARTTLS but refused it: {exc.reply}",
                tls=True,
            )
        elif dialect.family == "smtp" and step == "capabilities":
            add("smtp.ehlo.rejected", f"{where} rejected EHLO: {exc.reply}")
        else:
            add("session.protocol.invalid", f"{where} refused {step}: {exc.reply}")
    elif isinstance(exc, TLSDropped):  # no alert, no reason: busy as often as broken
        add("session.dropped", f"{where} closed the connection during the TLS handshake")
    elif isinstance(exc, TLSFailed):
        how = "after STARTTLS" if ep.tls == "starttls" else "on connect (implicit TLS)"
        add("tls.handshake.failed", f"{where}: TLS handshake {how} failed: {exc}", tls=True)
    elif isinstance(exc, ReadTimeout):
        if step == "greeting":
            add(
                banner_timeout,
                f"{where} accepted the connection but sent no "
                f"greeting within {ctx.net.config.timeouts.banner:g} s",
            )
        else:
            add("session.reply.timeout", f"{where} stopped answering during {step}: {exc}")
    elif isinstance(exc, ConnectionClosed):
        add("session.dropped", f"{where} closed the connection during {step}")
    elif isinstance(exc, ProtocolViolation):
        add("session.protocol.invalid", f"{where} during {step}: {exc}")
    else:  # pragma: no cover - every NetError subclass is handled above
        add("session.protocol.invalid", f"{where} during {step}: {exc}")


async def converse_or_refuse(
    ctx: ProbeContext, endpoint: Endpoint, dialect: Dialect
) -> Session | None:
    """`converse`, reporting an advertised endpoint that the target policy forbids."""
    try:
        return await converse(ctx, endpoint, dialect)
    except TargetRefused as exc:
        if isinstance(exc, BudgetExceeded):
            return None  # the check reports its spent budget once
        if endpoint.advertised and endpoint.role != "mx":  # MX: mx.address.private said it
            ctx.add(
                "connect.target.refused",
                target=endpoint.target(),
                summary=f"{endpoint.host} resolves to {exc.address}, {exc.reason}",
            )
        return None


async def service_endpoints(
    ctx: ProbeContext, spec: ServiceSpec, hosts: Sequence[MailHost] = ()
) -> Discovery | None:
    """Where a client would look for the service (needs dns.mx and dns.srv);
    None when there is no domain or its SRV records say there is no service."""
    if ctx.result(MX_SET) is None:
        return None
    found = await discover(ctx, spec, ctx.result(SRV), hosts)
    return None if found.declared_absent else found


async def probe_service(
    ctx: ProbeContext,
    spec: ServiceSpec,
    dialect: DialectFactory,
    judge: Callable[[ProbeContext, Session], None],
    missing: tuple[str, str] | None,
    hosts: Sequence[MailHost] = (),
) -> list[Session]:
    """Find a client service's endpoints, talk to each, judge each session.
    `missing` is (code, what) for when nothing answers at the guessed names;
    advertised endpoints that fail have said so themselves."""
    found = await service_endpoints(ctx, spec, hosts)
    if found is None:
        return []
    results = await asyncio.gather(
        *(converse_or_refuse(ctx, ep, dialect(ctx.net.config)) for ep in found.endpoints)
    )
    sessions = [s for s in results if s is not None]
    for session in sessions:
        judge(ctx, session)
    unknown = ctx.net.memo.get("dns.srv.failed", set())  # its SRV lookup failed
    if any(name in unknown for name, *_ in spec.srv):
        missing = None  # the failed lookup is the (inconclusive) finding
    if missing is not None and not sessions and not found.advertised:
        code, what = missing
        tried = ", ".join(ep.label() for ep in found.endpoints) or "no host name resolved"
        ctx.add(code, target=Target(host=ctx.domain), summary=f"no {what} answers (tried {tried})")
    return sessions
