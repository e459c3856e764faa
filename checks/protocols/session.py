"""One conversation with a mail socket, as values: the socket tried
(`Endpoint`), what the server said (`Session`), a refusal (`Refused`), how a
refusal reads (`busy`, `temporary`), and the `Dialect` each protocol speaks
(greeting, capabilities, STARTTLS, goodbye). The conversation itself, and the
findings it yields, are the stages' (checks.stages.sessions).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from checks.core.config import EngineConfig
from checks.core.errors import NetError
from checks.core.model import Target
from checks.net.conn import Connection, TLSSession


@dataclass(frozen=True)
class Endpoint:
    host: str  # the name a client uses: SNI and certificate name
    address: str
    port: int
    protocol: str  # smtp, submission, submissions, imap, imaps, pop3, pop3s
    tls: str  # "starttls" or "implicit"
    role: str  # "mx" (other servers connect) or "client" (people's mail clients do)
    advertised: bool  # named by MX or SRV, not guessed

    @property
    def family(self) -> str:
        """The protocol spoken: smtp, imap or pop3."""
        return {"submission": "smtp", "submissions": "smtp", "imaps": "imap", "pop3s": "pop3"}.get(
            self.protocol, self.protocol
        )

    @property
    def service(self) -> str:
        """What the port is for, as in finding codes: smtp (MX), submission, imap, pop3."""
        return {"submissions": "submission", "imaps": "imap", "pop3s": "pop3"}.get(
            self.protocol, self.protocol
        )

    def target(self) -> Target:
        return Target(host=self.host, address=self.address, port=self.port, protocol=self.protocol)

    def label(self) -> str:
        return self.target().label()


# What a busy server says when it turns a client away for now: SMTP's 421
# (closing), words like Dovecot's "Connection queue full" and Postfix's "too
# many connections"; and, beyond load, the response codes of a temporary
# failure: POP3's [SYS/TEMP], [IN-USE], [LOGIN-DELAY], IMAP's [UNAVAILABLE].
_BUSY = re.compile(r"queue full|too many|try (again|later)|temporar|overload|busy", re.I)


_NOT_NOW = re.compile(r"\[(SYS/TEMP|IN-?USE|LOGIN-DELAY|UNAVAILABLE)\]", re.I)


def busy(reply: str) -> bool:
    """A refusal for load: this client, now, not this server's setup."""
    return reply.startswith("421") or bool(_BUSY.search(reply[:300]))


def temporary(reply: str) -> bool:
    """A refusal that says "not now" rather than "no". (At STARTTLS only
    `busy` counts: a 454 or a [UNAVAILABLE] there is the server's TLS that
    is broken, Postfix's "TLS not available due to local problem".)"""
    return busy(reply) or bool(_NOT_NOW.search(reply[:300]))


class Refused(NetError):
    """The server answered a step with a refusal (a 4xx/5xx, BYE, -ERR, NO)."""

    def __init__(self, step: str, reply: str) -> None:
        super().__init__(f"{step}: {reply}")
        self.step = step
        self.reply = reply


class Dialect(Protocol):
    family: str  # smtp, imap, pop3: the prefix of protocol-level codes

    async def greet(self, conn: Connection, timeout: float) -> str: ...

    async def capabilities(self, conn: Connection) -> tuple[str, ...]: ...

    def offers_starttls(self, caps: tuple[str, ...]) -> bool: ...

    async def starttls(self, conn: Connection) -> None: ...

    async def quit(self, conn: Connection) -> None: ...


DialectFactory = Callable[[EngineConfig], Dialect]


@dataclass(frozen=True)
class Session:
    endpoint: Endpoint
    banner: str | None = None
    capabilities: tuple[str, ...] = ()  # before TLS (or over implicit TLS)
    tls: TLSSession | None = None
    tls_capabilities: tuple[str, ...] = ()  # after STARTTLS
    transcript: tuple[str, ...] = ()
    server_name: str | None = None  # the name it gives itself (SMTP EHLO)
    complete: bool = False  # the whole conversation went through
