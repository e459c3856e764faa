"""IMAP (RFC 9051) and POP3 (RFC 1939, 2449) as the door speaks them: the
capability lists, whether a password would travel before TLS, and the
`IMAPDialect` and `POP3Dialect` (greeting, CAPABILITY / CAPA, STARTTLS /
STLS, goodbye) that the stages drive."""

from __future__ import annotations

import contextlib

from checks.core.config import EngineConfig
from checks.core.errors import NetError, ProtocolViolation
from checks.net.conn import Connection
from checks.protocols.session import Refused, temporary

CLEARTEXT_SASL = frozenset({"PLAIN", "LOGIN"})


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
