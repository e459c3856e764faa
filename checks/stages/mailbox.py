"""IMAP (143 STARTTLS, 993) and POP3 (110 STLS, 995): where people read mail.

The checks an admin makes with `openssl s_client -starttls imap`: greeting,
CAPABILITY / CAPA, STARTTLS / STLS, and whether the server would take a
password before TLS (no LOGINDISABLED in IMAP, USER offered in POP3).
"""

from __future__ import annotations

import contextlib

from checks.core.config import EngineConfig
from checks.core.errors import NetError, ProtocolViolation
from checks.core.model import Stage
from checks.net.conn import Connection
from checks.stages.endpoints import IMAP, POP3
from checks.stages.probe import Probe, ProbeContext
from checks.stages.sessions import Refused, Session, probe_service, reproduce, temporary

CLEARTEXT_SASL = frozenset({"PLAIN", "LOGIN"})


# -- IMAP -------------------------------------------------------------------------------


def imap_capabilities(line: str) -> tuple[str, ...]:
    """Tokens of `* CAPABILITY ...` or of a `[CAPABILITY ...]` response code, upper-cased."""
    text = line
    if "[CAPABILITY " in text.upper():
        start = text.upper().index("[CAPABILITY ") + len("[CAPABILITY ")
        text = text[start:].split("]", 1)[0]
    elif text.upper().startswith("* CAPABILITY"):
        text = text[len("* CAPABILITY") :]
    else:
        return ()
    return tuple(t.upper() for t in text.split())


def imap_cleartext_login(caps: tuple[str, ...]) -> list[str]:
    """Commands that would send a password as is: LOGIN unless LOGINDISABLED,
    and AUTHENTICATE PLAIN/LOGIN."""
    offered = ["LOGIN"] if "LOGINDISABLED" not in caps else []
    offered += [
        f"AUTHENTICATE {c[5:]}" for c in caps if c.startswith("AUTH=") and c[5:] in CLEARTEXT_SASL
    ]
    return offered


class IMAPDialect:
    family = "imap"

    def __init__(self, config: EngineConfig) -> None:
        self._tag = 0

    async def greet(self, conn: Connection, timeout: float) -> str:
        line = await conn.read_line(timeout)
        upper = line.upper()
        if upper.startswith("* BYE"):
            raise Refused("greeting", line)
        if not (upper.startswith("* OK") or upper.startswith("* PREAUTH")):
            raise ProtocolViolation(f"not an IMAP greeting: {line[:80]!r}")
        return line

    async def _command(self, conn: Connection, command: str) -> tuple[str, list[str]]:
        self._tag += 1
        tag = f"mc{self._tag}"
        await conn.write_line(f"{tag} {command}")
        untagged: list[str] = []
        while True:
            line = await conn.read_line()
            if line.startswith(f"{tag} "):
                return line[len(tag) + 1 :], untagged
            if not (line.startswith("* ") or line.startswith("+")):
                raise ProtocolViolation(f"not an IMAP response: {line[:80]!r}")
            untagged.append(line)
            if len(untagged) > conn.limits.reply_lines:
                raise ProtocolViolation(f"more than {conn.limits.reply_lines} response lines")

    async def capabilities(self, conn: Connection) -> tuple[str, ...]:
        status, untagged = await self._command(conn, "CAPABILITY")
        if not status.upper().startswith("OK"):
            raise Refused("CAPABILITY", status)
        for line in untagged:
            caps = imap_capabilities(line)
            if caps:
                return caps
        return ()

    def offers_starttls(self, caps: tuple[str, ...]) -> bool:
        return "STARTTLS" in caps

    async def starttls(self, conn: Connection) -> None:
        status, _ = await self._command(conn, "STARTTLS")
        if not status.upper().startswith("OK"):
            raise Refused("STARTTLS", status)

    async def quit(self, conn: Connection) -> None:
        with contextlib.suppress(NetError):
            await self._command(conn, "LOGOUT")


# -- POP3 ---------------------------------------------------------------------------------


def pop3_cleartext_login(caps: tuple[str, ...]) -> list[str]:
    offered = ["USER/PASS"] if "USER" in caps else []
    for cap in caps:
        if cap.startswith("SASL "):
            offered += [f"AUTH {m}" for m in cap.split()[1:] if m in CLEARTEXT_SASL]
    return offered


class POP3Dialect:
    family = "pop3"

    def __init__(self, config: EngineConfig) -> None:
        pass

    async def greet(self, conn: Connection, timeout: float) -> str:
        line = await conn.read_line(timeout)
        if line.startswith("-ERR"):
            raise Refused("greeting", line)
        if not line.startswith("+OK"):
            raise ProtocolViolation(f"not a POP3 greeting: {line[:80]!r}")
        return line

    async def capabilities(self, conn: Connection) -> tuple[str, ...]:
        await conn.write_line("CAPA")
        status = await conn.read_line()
        if status.startswith("-ERR"):
            if temporary(status):  # busy (Dovecot: "Connection queue full"), not CAPA-less
                raise Refused("capabilities", status)
            return ()  # RFC 1939 servers without CAPA
        if not status.startswith("+OK"):
            raise ProtocolViolation(f"not a POP3 response: {status[:80]!r}")
        caps = []
        while (line := await conn.read_line()) != ".":
            caps.append(line.upper())
            if len(caps) > conn.limits.reply_lines:
                raise ProtocolViolation(f"more than {conn.limits.reply_lines} CAPA lines")
        return tuple(caps)

    def offers_starttls(self, caps: tuple[str, ...]) -> bool:
        return "STLS" in caps

    async def starttls(self, conn: Connection) -> None:
        await conn.write_line("STLS")
        status = await conn.read_line()
        if not status.startswith("+OK"):
            raise Refused("STLS", status)

    async def quit(self, conn: Connection) -> None:
        await conn.write_line("QUIT")
        with contextlib.suppress(NetError):
            await conn.read_line(5.0)


# -- judging and probes -------------------------------------------------------------------


JUDGE_CODES: dict[str, tuple[str, str, str]] = {  # family -> (no STARTTLS, login in clear, ok)
    "imap": ("imap.starttls.missing", "imap.auth.before_tls", "imap.ok"),
    "pop3": ("pop3.starttls.missing", "pop3.auth.before_tls", "pop3.ok"),
}


def judge(ctx: ProbeContext, s: Session) -> None:
    ep = s.endpoint
    family = ep.family
    missing, in_clear, ok = JUDGE_CODES[family]
    target = ep.target()
    evidence = s.transcript[-20:]
    plain = reproduce(ep, tls=False)
    if ep.tls == "starttls":
        starttls = "STARTTLS" if family == "imap" else "STLS"
        if starttls not in s.capabilities:
            ctx.add(
                missing,
                target=target,
                summary=f"{ep.label()} does not offer {starttls}",
                evidence=evidence,
                reproduce=plain,
            )
        login = (imap_cleartext_login if family == "imap" else pop3_cleartext_login)(s.capabilities)
        if login:
            ctx.add(
                in_clear,
                target=target,
                summary=f"{ep.label()} accepts {', '.join(login)} before TLS: passwords "
                "can be sent in the clear",
                evidence=evidence,
                reproduce=plain,
            )
    if s.complete:
        tls = f"; {s.tls.version} {s.tls.cipher}" if s.tls else ""
        ctx.add(
            ok,
            target=target,
            summary=f"{ep.label()}: {s.banner}{tls}",
            evidence=s.transcript[-40:],
            reproduce=reproduce(ep, tls=s.tls is not None),
            data={"capabilities": list(s.tls_capabilities or s.capabilities)},
        )


async def probe_imap(ctx: ProbeContext) -> list[Session]:
    return await probe_service(ctx, IMAP, IMAPDialect, judge, ("imap.missing", "IMAP server"))


async def probe_pop3(ctx: ProbeContext) -> list[Session]:
    # POP3 is optional: its absence is no finding.
    return await probe_service(ctx, POP3, POP3Dialect, judge, None)


PROBES: tuple[Probe, ...] = (
    Probe("connect.imap", Stage.CONNECT, probe_imap, needs=("dns.mx", "dns.srv")),
    Probe("connect.pop3", Stage.CONNECT, probe_pop3, needs=("dns.mx", "dns.srv")),
)
