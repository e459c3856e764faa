"""The auth stage: can the test account log in, by which mechanisms, how fast?

For every submission, IMAP and POP3 endpoint the connect stage talked to,
the mechanisms offered after TLS are listed; with a test account
(`--account NAME`, server-side profiles in `checks.core.accounts`) each one is
tried on a fresh connection, over TLS only: an endpoint that offers no TLS
gets no password (`auth.cleartext.refused`), and neither does one whose
certificate a mail client would refuse (`auth.withheld`): the TLS of a login
is a mail client's (TLS 1.2+, default ciphers), and the chain, the name and
the dates are verified before anything secret is sent. An account is used only
for its own domains (`auth.account.refused`). Transcripts show what an admin
would type, with placeholders where the secrets go; nothing secret is
written anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from checks.core.accounts import Account, AccountMisuse, imap_quoted, login_blobs, plain_blob
from checks.core.errors import InputError, NetError, TargetRefused, TLSFailed
from checks.core.model import Stage, Target
from checks.net.conn import Connection
from checks.protocols.mailbox import IMAPDialect, POP3Dialect
from checks.protocols.session import Dialect, DialectFactory, Endpoint, Session
from checks.protocols.smtp import SMTP, auth_mechanisms, read_reply
from checks.rules.tls import client_trust_problem, now_utc
from checks.stages.keys import IMAP_SESSIONS, LOGIN, POP3_SESSIONS, SUBMISSION_SESSIONS
from checks.stages.probe import Key, Probe, ProbeContext
from checks.stages.sessions import reproduce

# The connect probes whose conversations a login is tried on.
CONNECT_PROBES: tuple[Key[list[Session]], ...] = (
    SUBMISSION_SESSIONS,
    IMAP_SESSIONS,
    POP3_SESSIONS,
)
SMTP_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")  # what we can try, best known first


def offered(session: Session) -> tuple[str, ...]:
    """Login methods the endpoint offers once TLS is on (what we would try)."""
    caps = session.tls_capabilities if session.endpoint.tls == "starttls" else session.capabilities
    family = session.endpoint.family
    if family == "smtp":
        mechanisms = auth_mechanisms(caps)
        return tuple(m for m in SMTP_MECHANISMS if m in mechanisms)
    if family == "imap":
        methods = [] if "LOGINDISABLED" in caps else ["LOGIN"]
        return (*methods, *(["AUTHENTICATE PLAIN"] if "AUTH=PLAIN" in caps else []))
    return ("USER/PASS",) if "USER" in caps else ()


def account_of(ctx: ProbeContext) -> Account | None:
    """The test account the request names (None: none named). InputError if
    unknown, AccountMisuse (an InputError) if the checked domain is not its own."""
    name = ctx.request.account
    if not name:
        return None
    accounts = ctx.net.config.accounts
    if accounts is None:
        raise InputError(f"no test account named {name!r}: no accounts are configured")
    return accounts.for_domain(name, ctx.domain)


@dataclass(frozen=True)
class Attempt:
    endpoint: Endpoint
    method: str
    ok: bool
    reply: str  # the server's answer to the credentials
    ms: float
    transcript: tuple[str, ...] = ()
    cleartext: bool = False  # refused by us: no TLS to send the password over
    withheld: str = ""  # refused by us: why a mail client would refuse this TLS
    unverified: str = ""  # sent all the same (the profile's tls_verify = false): why


# -- one login ------------------------------------------------------------------------


async def _smtp_login(conn: Connection, method: str, account: Account) -> tuple[bool, str]:
    user, password = account.username, account.password
    if method == "PLAIN":
        await conn.write_line(
            f"AUTH PLAIN {plain_blob(user, password)}",
            shown="AUTH PLAIN <base64 of \\0username\\0password>",
        )
    elif method == "LOGIN":
        user64, pass64 = login_blobs(user, password)
        await conn.write_line("AUTH LOGIN")
        reply = await read_reply(conn)
        if reply.code != 334:
            return False, str(reply)
        await conn.write_line(user64, shown="<base64 of username>")
        reply = await read_reply(conn)
        if reply.code != 334:
            return False, str(reply)
        await conn.write_line(pass64, shown="<base64 of password>")
    else:  # CRAM-MD5
        await conn.write_line("AUTH CRAM-MD5")
        reply = await read_reply(conn)
        if reply.code != 334:
            return False, str(reply)
        challenge = base64.b64decode(reply.text.strip() or "", validate=False)
        digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
        answer = base64.b64encode(f"{user} {digest}".encode()).decode()
        await conn.write_line(answer, shown="<base64 of 'username hmac-md5(password, challenge)'>")
    reply = await read_reply(conn)
    return reply.code == 235, str(reply)


async def _imap_login(
    conn: Connection, dialect: IMAPDialect, method: str, account: Account
) -> tuple[bool, str]:
    if method == "LOGIN":
        dialect._tag += 1
        tag = f"mc{dialect._tag}"
        await conn.write_line(
            f"{tag} LOGIN {imap_quoted(account.username)} {imap_quoted(account.password)}",
            shown=f'{tag} LOGIN "username" "password"',
        )
    else:
        dialect._tag += 1
        tag = f"mc{dialect._tag}"
        await conn.write_line(f"{tag} AUTHENTICATE PLAIN")
        line = await conn.read_line()
        if not line.startswith("+"):
            return False, line
        await conn.write_line(
            plain_blob(account.username, account.password),
            shown="<base64 of \\0username\\0password>",
        )
    while True:
        line = await conn.read_line()
        if line.startswith(f"{tag} "):
            status = line[len(tag) + 1 :]
            return status.upper().startswith("OK"), status
        if not line.startswith("*"):
            return False, line


async def _pop3_login(conn: Connection, account: Account) -> tuple[bool, str]:
    await conn.write_line(f"USER {account.username}", shown="USER username")
    line = await conn.read_line()
    if not line.startswith("+OK"):
        return False, line
    await conn.write_line(f"PASS {account.password}", shown="PASS password")
    line = await conn.read_line()
    return line.startswith("+OK"), line


DIALECTS: dict[str, DialectFactory] = {"smtp": SMTP, "imap": IMAPDialect, "pop3": POP3Dialect}


async def _client_tls(conn: Connection, ep: Endpoint, account: Account, ca_file: str | None) -> str:
    """Handshake as a mail client would, then judge the certificate for the host
    name used: "" when it verifies, else why a mail client would refuse it.
    `tls_verify = false` profiles keep the diagnostic handshake, which completes
    wherever OpenSSL still can."""
    try:
        session = await conn.start_tls(ep.host, "client" if account.tls_verify else None)
    except TLSFailed as exc:
        return f"TLS with a mail client's settings (TLS 1.2 or later) failed: {exc}"
    problem = client_trust_problem(session.chain_der, ep.host, ca_file, now_utc()) or ""
    if problem:
        conn.note(f"-- {problem}")
    return problem


async def attempt(ctx: ProbeContext, ep: Endpoint, method: str, account: Account) -> Attempt:
    """Log in once by `method`, on a fresh connection, TLS first. Nothing secret
    is sent unless the certificate verifies for the host name (or the profile
    opted out: then `unverified` says why it would not have)."""
    config = ctx.net.config
    dialect: Dialect = DIALECTS[ep.family](config)
    conn: Connection | None = None
    try:
        async with ctx.net.connect(ep.target()) as conn:
            if ep.tls == "implicit":
                problem = await _client_tls(conn, ep, account, config.ca_file)
            else:
                await dialect.greet(conn, config.timeouts.banner)
                caps = await dialect.capabilities(conn)
                if not dialect.offers_starttls(caps):
                    return Attempt(ep, method, False, "no TLS offered", 0.0, cleartext=True)
                await dialect.starttls(conn)
                problem = await _client_tls(conn, ep, account, config.ca_file)
            if problem and (account.tls_verify or conn.tls is None):
                # Hang up without a word: nothing more is said to such a server.
                transcript = (*conn.transcript, "-- closed: no credentials sent")
                return Attempt(ep, method, False, problem, 0.0, transcript, withheld=problem)
            if ep.tls == "implicit":
                await dialect.greet(conn, config.timeouts.banner)
            await dialect.capabilities(conn)
            started = time.monotonic()
            if ep.family == "smtp":
                ok, reply = await _smtp_login(conn, method, account)
            elif isinstance(dialect, IMAPDialect):
                ok, reply = await _imap_login(conn, dialect, method, account)
            else:
                ok, reply = await _pop3_login(conn, account)
            ms = (time.monotonic() - started) * 1000
            await dialect.quit(conn)
            return Attempt(ep, method, ok, reply, ms, tuple(conn.transcript), unverified=problem)
    except (NetError, TargetRefused) as exc:
        transcript = tuple(conn.transcript) if conn is not None else ()
        return Attempt(ep, method, False, f"failed: {exc}", 0.0, transcript)


# -- the probe ------------------------------------------------------------------------


@dataclass(frozen=True)
class Logins:
    """Endpoints where the account logged in, best first per family."""

    working: tuple[Endpoint, ...] = ()

    def first(self, family: str) -> Endpoint | None:
        return next((ep for ep in self.working if ep.family == family), None)


async def probe_login(ctx: ProbeContext) -> Logins:
    import asyncio

    try:
        account = account_of(ctx)
    except AccountMisuse as exc:
        ctx.add("auth.account.refused", target=Target(host=ctx.domain), summary=str(exc))
        return Logins()
    except InputError as exc:
        ctx.add("auth.failed", target=Target(host=ctx.domain), summary=str(exc))
        return Logins()
    sessions = [s for key in CONNECT_PROBES for s in ctx.result(key)]
    jobs = []
    for s in sessions:
        ep = s.endpoint
        methods = offered(s) if s.tls is not None else ()
        if s.tls is None:
            if account is not None and _offers_any_login(s):
                ctx.add(
                    "auth.cleartext.refused",
                    target=ep.target(),
                    summary=f"{ep.label()} offers logins only without TLS; mailcheck did not "
                    f"send {account.name}'s password",
                    evidence=list(s.capabilities),
                    reproduce=reproduce(ep, tls=False),
                )
            continue
        caps = s.tls_capabilities or s.capabilities
        if not methods and any(c.upper() in ("SASL", "AUTH") for c in caps):
            # The keyword with no mechanism after it: Dovecot says that while its
            # login process waits for the auth service (busy, or starting).
            ctx.add(
                "auth.mechanisms.unavailable",
                target=ep.target(),
                summary=f"{ep.label()} lists no login method after TLS for now "
                f"(capabilities: {' '.join(caps)[:200]}): the server's auth service was "
                "not ready",
                reproduce=reproduce(ep),
            )
            continue
        if not methods:
            ctx.add(
                "auth.mechanisms.none",
                target=ep.target(),
                summary=f"{ep.label()} offers no login method we could use after TLS "
                f"(capabilities: {' '.join(s.tls_capabilities or s.capabilities)[:200]})",
                reproduce=reproduce(ep),
            )
            continue
        if account is None:
            ctx.add(
                "auth.mechanisms",
                target=ep.target(),
                summary=f"{ep.label()} offers {', '.join(methods)} after TLS "
                "(give --account to try them)",
                reproduce=reproduce(ep),
            )
            continue
        jobs += [attempt(ctx, ep, m, account) for m in methods]
    results: list[Attempt] = list(await asyncio.gather(*jobs))
    working: list[Endpoint] = []
    by_endpoint: dict[Endpoint, list[Attempt]] = {}
    for a in results:
        by_endpoint.setdefault(a.endpoint, []).append(a)
    for ep, attempts in by_endpoint.items():
        withheld = next((a for a in attempts if a.withheld), None)
        if withheld is not None and account is not None:
            ctx.add(
                "auth.withheld",
                target=ep.target(),
                summary=f"mailcheck did not send {account.name}'s password to {ep.label()}: "
                f"{withheld.withheld}. A mail client would refuse this server too",
                evidence=list(withheld.transcript),
                reproduce=reproduce(ep),
            )
            continue
        unverified = next((a.unverified for a in attempts if a.unverified), "")
        if unverified and account is not None:
            ctx.add(
                "auth.unverified",
                target=ep.target(),
                summary=f"{account.name}'s password went to {ep.label()} over TLS that does "
                f"not verify ({unverified}), because its profile sets tls_verify = false",
                reproduce=reproduce(ep),
            )
        good = [a for a in attempts if a.ok]
        bad = [a for a in attempts if not a.ok]
        shown = "; ".join(
            f"{a.method} {'ok' if a.ok else 'refused'} ({a.ms:.0f} ms)" for a in attempts
        )
        if good:
            working.append(ep)
            ctx.add(
                "auth.ok",
                target=ep.target(),
                summary=f"{account.username if account else ''} logs in at {ep.label()}: {shown}",
                evidence=list(good[0].transcript),
                reproduce=reproduce(ep),
                data={"methods": {a.method: round(a.ms, 1) for a in good}},
            )
        else:
            ctx.add(
                "auth.failed",
                target=ep.target(),
                summary=f"{account.username if account else ''} cannot log in at "
                f"{ep.label()}: {bad[0].reply}",
                evidence=list(bad[0].transcript),
                reproduce=reproduce(ep),
            )
    order = {"implicit": 0, "starttls": 1}
    working.sort(key=lambda ep: order.get(ep.tls, 2))
    return Logins(tuple(working))


def _offers_any_login(s: Session) -> bool:
    caps = s.capabilities
    if s.endpoint.family == "smtp":
        return bool(auth_mechanisms(caps))
    if s.endpoint.family == "imap":
        return "LOGINDISABLED" not in caps
    return "USER" in caps


PROBES: tuple[Probe, ...] = (
    Probe(LOGIN.name, Stage.AUTH, probe_login, needs=tuple(k.name for k in CONNECT_PROBES)),
)
