"""SMTP as the door speaks it (RFC 5321): replies read line by line and
bounded, EHLO capabilities and AUTH mechanisms, and the `SMTP` dialect
(greeting, EHLO, STARTTLS, QUIT) that the connect, TLS, auth and autoconfig
stages drive."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from checks.core.config import EngineConfig
from checks.core.errors import NetError, ProtocolViolation
from checks.net.conn import Connection
from checks.protocols.session import Refused

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
