"""`mailcheck receiver`: the SMTP server that receives send-test messages.

It listens where the operator's receiving domain (MAILCHECK_SENDTEST_DOMAIN)
has its MX, offers STARTTLS with the configured certificate, and takes mail
only for live test addresses: `RCPT TO:<st-<token>@<domain>>` of a test that is
still waiting for its message. Anything else is refused at RCPT (550), so it
never relays; one message per test, one recipient per message, a size limit,
and per-source limits on concurrent connections and on connections per hour
keep a stranger from using it as a sink.

It judges nothing itself: it stores what it saw (checks.sendtest.Received:
the peer, HELO, TLS, envelope, the SMTP commands, the message) in Redis
through bot.sendtests, and for a Slack test queues the worker's judge job.
Logs say who sent what size for which token, never the message.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from saq import Queue

from bot.queue import enqueue_sendtest
from bot.sendtests import SendTest, SendTests
from bot.settings import Settings
from checks.sendtest import Received, TLSInfo, token_of
from checks.text import untrusted

log = logging.getLogger("mailcheck.receiver")

MAX_SESSION_LINES = 60
_RECORDED = ("HELO", "EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY")

Arrived = Callable[[Received, SendTest], Awaitable[None]]


class SourceLimits:
    """Per-source-address limits: connections open at once, and per hour."""

    def __init__(self, concurrent: int, per_hour: int) -> None:
        self.concurrent = concurrent
        self.per_hour = per_hour
        self.open: collections.Counter[str] = collections.Counter()
        self.recent: dict[str, collections.deque[float]] = {}
        self._swept: float | None = None

    def admit(self, source: str, now: float | None = None) -> str | None:
        """Count a new connection; the reason to refuse it, or None."""
        now = time.monotonic() if now is None else now
        self._forget(now)
        if self.open[source] >= self.concurrent:
            return f"too many connections from {source} at once (limit {self.concurrent})"
        seen = self.recent.setdefault(source, collections.deque())
        while seen and seen[0] <= now - 3600:
            seen.popleft()
        if self.per_hour and len(seen) >= self.per_hour:
            return f"too many connections from {source} this hour (limit {self.per_hour})"
        seen.append(now)
        self.open[source] += 1
        return None

    def _forget(self, now: float) -> None:
        """Once an hour, drop the sources not seen for an hour: on port 25 every
        scanner on the internet is a source, and they must not pile up."""
        if self._swept is not None and now - self._swept < 3600:
            return
        self._swept = now
        for source in [s for s, seen in self.recent.items() if not seen or seen[-1] <= now - 3600]:
            del self.recent[source]

    def release(self, source: str) -> None:
        self.open[source] -= 1
        if self.open[source] <= 0:
            del self.open[source]


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


def _recorded(name: str) -> Any:
    base = getattr(SMTP, f"smtp_{name}")

    @functools.wraps(base)
    async def method(self: ReceiverSMTP, arg: str | None) -> None:
        self.note(f"> {name} {arg or ''}".rstrip())
        await base(self, arg)

    return method


class ReceiverSMTP(SMTP):
    """aiosmtpd's SMTP, keeping the session's commands and replies (never the
    message) and turning away sources over their limits with a 421."""

    def __init__(self, handler: Handler, limits: SourceLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.transcript: list[str] = []
        self.source: str | None = None
        self.refused = False

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


for _name in _RECORDED:
    setattr(ReceiverSMTP, f"smtp_{_name}", _recorded(_name))


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
        idle_timeout: float = 60.0,
    ) -> None:
        self.handler = Handler(tests, arrived, hostname)
        self.limits = SourceLimits(concurrent, per_hour)
        self.host, self.port = host, port
        self.hostname = hostname
        self.tls = tls
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.server: asyncio.Server | None = None
        # aiosmtpd logs every line of DATA at DEBUG and each address at INFO:
        # its own log says only what goes wrong; ours says what arrived.
        logging.getLogger("mail.log").setLevel(logging.WARNING)

    def _protocol(self) -> ReceiverSMTP:
        return ReceiverSMTP(
            self.handler,
            self.limits,
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
