"""`mailcheck receiver`: the SMTP server that receives send-test messages.

It listens where the operator's receiving domain (MAILCHECK_SENDTEST_DOMAIN)
has its MX, offers STARTTLS with the configured certificate, and takes mail
only for live test addresses: `RCPT TO:<st-<token>@<domain>>` of a test that is
still waiting for its message. Anything else is refused at RCPT (550), so it
never relays; one message per test, one recipient per message, a size limit,
and per-source limits on concurrent connections and on connections per hour
keep a stranger from using it as a sink.

A stranger must not make it costly either (bot/receiverlimits.py): sources
are counted per network (/24, /64), connections open at once are capped for
everyone, DATA is read keeping at most the size limit (aiosmtpd's own reader
keeps every fragment of an over-long line), a transaction's recipients are
looked up in Redis only up to a cap, and a session ends after a number of
commands.

It judges nothing itself: it stores what it saw (checks.engine.sendtest.Received:
the peer, HELO, TLS, envelope, the SMTP commands, the message) in Redis
through bot.testaddresses, and for a Slack test queues the worker's judge job.
Logs say who sent what size for which token, never the message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from saq import Queue

from bot.queue import enqueue_sendtest
from bot.receiverlimits import SourceLimits, read_data
from bot.settings import Settings
from bot.testaddresses import SendTest, SendTests
from checks.core.text import untrusted
from checks.engine.sendtest import Received, TLSInfo, token_of

log = logging.getLogger("mailcheck.receiver")

MAX_SESSION_LINES = 60
_RECORDED = ("HELO", "EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY")

Arrived = Callable[[Received, SendTest], Awaitable[None]]


class Handler:
    """aiosmtpd hooks: who may send to which address, and what happens to the message."""

    def __init__(self, tests: SendTests, arrived: Arrived, hostname: str) -> None:
        self.tests = tests
        self.arrived = arrived
        self.hostname = hostname

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if not r[4:].upper().startswith("AUTH")]  # no AUTH here

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if envelope.rcpt_tos:
            return "452 4.5.3 One recipient per message"
        token = token_of(address, self.tests.receive_domain)
        if token is None:
            return "550 5.7.1 Relay access denied: this server takes only send-test mail"
        if await self.tests.live(token) is None:
            return "550 5.1.1 Unknown or expired send-test address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_exception(self, error: Exception) -> str:
        """A session that broke (a failed TLS handshake, a dropped line): one log
        line, no traceback; the client gets a 421 and the connection ends."""
        log.warning("session ended: %s: %s", type(error).__name__, untrusted(str(error), 200))
        return "421 4.3.0 Error in the session; closing"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0]
        token = token_of(rcpt, self.tests.receive_domain)
        assert token is not None  # handle_RCPT let only test addresses in
        content = envelope.original_content or b""
        received = Received(
            token=token,
            peer=str(session.peer[0]) if session.peer else "",
            helo=session.host_name or "",
            esmtp=session.extended_smtp,
            mail_from=envelope.mail_from or "",
            recipients=(rcpt,),
            tls=_tls_info(server),
            received_at=time.time(),
            message=content,
            receiver=self.hostname,
            session=tuple(getattr(server, "transcript", ())),
        )
        test = await self.tests.deliver(received)
        if test is None:
            return "550 5.1.1 This send-test address has expired or already has its message"
        log.info(
            "send test %s: %d bytes from %s (HELO %s, %s)",
            token,
            len(content),
            received.peer,
            untrusted(received.helo, 80),
            received.tls.version if received.tls else "no TLS",
        )
        try:
            await self.arrived(received, test)
        except Exception:  # the message is kept: a waiter or the deadline job still finds it
            log.exception("send test %s: telling the workers failed", token)
        return f"250 2.0.0 OK: send test {token} received"


def _tls_info(server: SMTP) -> TLSInfo | None:
    transport = server.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher() or ("", "", None)
    return TLSInfo(version=ssl_object.version() or "", cipher=cipher[0], bits=cipher[2])


def _guarded(name: str) -> Any:
    """ReceiverSMTP's command `name`, counted against the session's command
    limit, and noted in the transcript if it is one of _RECORDED."""
    base = getattr(ReceiverSMTP, f"smtp_{name}")
    recorded = name in _RECORDED

    @functools.wraps(getattr(SMTP, f"smtp_{name}"))  # aiosmtpd's syntax, for HELP
    async def method(self: ReceiverSMTP, arg: str | None) -> None:
        if not await self.within_command_limit():
            return
        if recorded:
            self.note(f"> {name} {arg or ''}".rstrip())
        await base(self, arg)

    return method


class ReceiverSMTP(SMTP):
    """aiosmtpd's SMTP, keeping the session's commands and replies (never the
    message), turning away sources over their limits with a 421, and bounding
    what one session may cost: its commands, a transaction's recipients (each
    may be a Redis lookup), and the memory its DATA takes."""

    def __init__(
        self,
        handler: Handler,
        limits: SourceLimits,
        *,
        max_commands: int,
        max_recipients: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.handler = handler
        self.limits = limits
        self.max_commands = max_commands
        self.max_recipients = max_recipients
        self.commands = 0
        self.recipients = 0  # RCPTs of this transaction, answered or not
        self.transcript: list[str] = []
        self.source: str | None = None
        self.refused = False

    async def within_command_limit(self) -> bool:
        """Count a command; past the limit, say so once (421) and hang up."""
        self.commands += 1
        if self.commands <= self.max_commands:
            return True
        if self.commands == self.max_commands + 1 and self.transport is not None:
            log.warning("%s sent more than %d commands; closing", self.source, self.max_commands)
            await self.push(
                f"421 4.7.0 {self.hostname} more than {self.max_commands} commands "
                "in one session; closing"
            )
            self.transport.close()
        return False

    def _create_envelope(self) -> Envelope:
        self.recipients = 0  # a new transaction: after RSET, DATA, HELO/EHLO, STARTTLS
        return super()._create_envelope()

    async def smtp_RCPT(self, arg: str | None) -> None:
        # Counted before any parsing or lookup: a flood of RCPTs costs Redis
        # at most max_recipients lookups per transaction.
        self.recipients += 1
        if self.recipients > self.max_recipients:
            if self.recipients == self.max_recipients + 1:
                log.warning(
                    "%s: more than %d RCPTs in one message", self.source, self.max_recipients
                )
            await self.push(
                f"452 4.5.3 Too many recipients: at most {self.max_recipients} tried per message"
            )
            return
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str | None) -> None:
        """aiosmtpd's DATA, read by receiverlimits.read_data: aiosmtpd's own
        loop keeps every fragment of an over-long line until it ends (a 200 MB
        line without CRLF grew the process by 200 MB) and each line as an
        object of its own (a 2 MB message of bare CRLFs: 170 MB)."""
        if await self.check_helo_needed():
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        assert self.data_size_limit is not None  # Receiver always sets one
        data = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        envelope = self.envelope
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # the next transaction's
        if data.refused:
            log.warning("refused a message from %s: %s", self.source, data.refused)
            if not data.closed:
                await self.push(f"552 5.3.4 Message refused: {data.refused}")
            elif self.transport is not None:
                await self.push(f"552 5.3.4 Message refused: {data.refused}; closing")
                self.transport.close()
            return
        envelope.content = envelope.original_content = data.content
        await self.push(await self.handler.handle_DATA(self, self.session, envelope))

    def note(self, line: str) -> None:
        if len(self.transcript) < MAX_SESSION_LINES:
            self.transcript.append(untrusted(line, 300))

    async def push(self, status: Any) -> None:
        text = status.decode() if isinstance(status, bytes) else str(status)
        self.note(f"< {text}")
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.source is None:  # not the STARTTLS re-entry
            peer = transport.get_extra_info("peername")
            self.source = str(peer[0]) if peer else "?"
            reason = self.limits.admit(self.source)
            if reason is not None:
                self.refused = True
                log.warning("refused a connection: %s", reason)
                transport.write(f"421 4.7.0 {self.hostname} {reason}\r\n".encode())  # type: ignore[attr-defined]
                transport.close()
                return
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        if self.source:
            self.limits.release(self.source)
            self.source = ""  # released once
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self.refused else super().eof_received()

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)


for _name in [m.removeprefix("smtp_") for m in dir(SMTP) if m.startswith("smtp_")]:
    setattr(ReceiverSMTP, f"smtp_{_name}", _guarded(_name))


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """STARTTLS for senders: TLS 1.2 at least (what the judgement calls current);
    an older client falls back to cleartext and is told so in its verdict."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def judge_on_arrival(queue: Queue, settings: Settings) -> Arrived:
    """What the receiver does with a stored message: a Slack test's gets the
    workers' judge job; a terminal's waiter is woken by the store itself."""

    async def arrived(received: Received, test: SendTest) -> None:
        if test.notify == "job":
            key = f"sendtest:judge:{received.token}"
            await enqueue_sendtest(queue, "judge", key, settings, token=received.token)

    return arrived


async def run_receiver(settings: Settings) -> None:
    """`mailcheck receiver`: serve until SIGINT/SIGTERM."""
    import signal

    from bot.queue import make_queue, redis_client

    domain = settings.require_sendtest()
    host, port = settings.receiver_address()
    redis = redis_client(settings.redis_url)
    tests = SendTests(redis, domain, settings.sendtest_ttl)
    queue = make_queue(settings)
    await queue.connect()

    arrived = judge_on_arrival(queue, settings)
    tls = None
    if settings.receiver_tls_cert:
        tls = tls_context(settings.receiver_tls_cert, settings.receiver_tls_key)
    else:
        log.warning(
            "no MAILCHECK_RECEIVER_TLS_CERT: senders cannot use STARTTLS, and every "
            "send test reports sendtest.tls.none"
        )
    receiver = Receiver(
        tests,
        arrived,
        host=host,
        port=port,
        hostname=settings.receiver_hostname or domain,
        tls=tls,
        max_size=settings.receiver_max_size,
        concurrent=settings.receiver_max_connections,
        per_hour=settings.receiver_rate,
        total=settings.receiver_total_connections,
        max_commands=settings.receiver_max_commands,
        max_recipients=settings.receiver_max_recipients,
        v4_prefix=settings.receiver_prefix_v4,
        v6_prefix=settings.receiver_prefix_v6,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await receiver.start()
    try:
        await stop.wait()
    finally:
        await receiver.stop()
        await queue.disconnect()
        await redis.aclose()


class Receiver:
    """The listening server: `await start()`, `await stop()`."""

    def __init__(
        self,
        tests: SendTests,
        arrived: Arrived,
        *,
        host: str,
        port: int,
        hostname: str,
        tls: ssl.SSLContext | None = None,
        max_size: int = 10 * 1024 * 1024,
        concurrent: int = 5,
        per_hour: int = 60,
        total: int = 20,
        max_commands: int = 100,
        max_recipients: int = 5,
        v4_prefix: int = 24,
        v6_prefix: int = 64,
        idle_timeout: float = 60.0,
    ) -> None:
        """`concurrent` and `per_hour` count per source network (`v4_prefix`,
        `v6_prefix`); `total` is every source's open connections together."""
        self.handler = Handler(tests, arrived, hostname)
        self.limits = SourceLimits(concurrent, per_hour, total, v4_prefix, v6_prefix)
        self.host, self.port = host, port
        self.hostname = hostname
        self.tls = tls
        self.max_size = max_size
        self.max_commands = max_commands
        self.max_recipients = max_recipients
        self.idle_timeout = idle_timeout
        self.server: asyncio.Server | None = None
        # aiosmtpd logs every line of DATA at DEBUG and each address at INFO:
        # its own log says only what goes wrong; ours says what arrived.
        logging.getLogger("mail.log").setLevel(logging.WARNING)

    def _protocol(self) -> ReceiverSMTP:
        return ReceiverSMTP(
            self.handler,
            self.limits,
            max_commands=self.max_commands,
            max_recipients=self.max_recipients,
            data_size_limit=self.max_size,
            enable_SMTPUTF8=True,
            hostname=self.hostname,
            ident="mailcheck send-test receiver",
            tls_context=self.tls,
            require_starttls=False,  # a sender without TLS is judged, not refused
            timeout=self.idle_timeout,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol, self.host, self.port)
        if self.port == 0:
            self.port = self.server.sockets[0].getsockname()[1]
        log.info("receiving send tests on %s:%d for @%s", self.host, self.port, self.hostname)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
