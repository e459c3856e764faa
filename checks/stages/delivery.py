"""The delivery stage: does a message sent now arrive, and how fast?

With a test account, a uniquely tagged message is submitted with the
account's login (aiosmtplib, on a socket from the network door) and the
account's mailbox is watched over IMAP (aioimaplib, IDLE when offered, else
polling) until it arrives or `delivery_timeout` passes. The delivered copy's
Received hops and Authentication-Results are reported, then it is deleted.
The inbound path is tried the same way: a message to the account's address
handed to the domain's MX on port 25, as an outside sender would.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import email.utils
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aioimaplib  # type: ignore[import-untyped]
import aiosmtplib

from checks.core.accounts import Account, split_hostport
from checks.core.errors import DNSError, InputError, NetError, TargetRefused
from checks.core.model import Stage, Target
from checks.core.text import untrusted
from checks.net import http
from checks.net.door import Network, note
from checks.protocols.session import Endpoint
from checks.stages.auth import Logins, account_of
from checks.stages.dns import MailHost
from checks.stages.keys import LOGIN, MX_HOSTS
from checks.stages.probe import Probe, ProbeContext

TAG_HEADER = "X-Mailcheck-Tag"
POLL_SECONDS = 1.0


class _DoorIMAP(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib over a socket the door opened, with TLS for `server_name`."""

    def __init__(self, sock: Any, server_name: str, context: ssl.SSLContext, timeout: float):
        self._door_sock = sock
        self._server_name = server_name
        super().__init__(host=server_name, port=0, timeout=timeout, ssl_context=context)

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = aioimaplib.IMAP4ClientProtocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(
                lambda: self.protocol,
                sock=self._door_sock,
                ssl=ssl_context,
                server_hostname=self._server_name,
            )
        )


@dataclass(frozen=True)
class Arrival:
    seconds: float
    received: tuple[str, ...]  # Received headers, newest first
    auth_results: tuple[str, ...]


class Mailbox:
    """The account's INBOX over IMAP (implicit TLS), to watch for a tag."""

    def __init__(self, net: Network, endpoint: Endpoint, account: Account) -> None:
        self.net, self.endpoint, self.account = net, endpoint, account

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[_DoorIMAP]:
        timeout = self.net.config.timeouts.reply
        async with self.net.open_socket(self.endpoint.target()) as sock:
            context = login_context(self.net.config.ca_file, self.account)
            imap = _DoorIMAP(sock, self.endpoint.host, context, timeout)
            try:
                await imap.wait_hello_from_server()
                response = await imap.login(self.account.username, self.account.password)
                if response.result != "OK":
                    raise InputError(f"IMAP login refused: {_lines(response)}")
                await imap.select("INBOX")
                yield imap
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(imap.logout(), 5)
                # The transport owns the door's socket: end it before the door does.
                transport = getattr(imap.protocol, "transport", None)
                if transport is not None:
                    transport.abort()

    async def wait_for(self, imap: _DoorIMAP, tag: str, deadline: float) -> str | None:
        """The message number carrying `tag`, or None at the deadline."""
        idle = imap.has_capability("IDLE")
        while time.monotonic() < deadline:
            found = await self._search(imap, tag)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if idle:
                waiter = await imap.idle_start(timeout=min(left, 29 * 60))
                # Short IDLE rounds: a server that only checks its mailbox every
                # so often (Dovecot without inotify: 30 s) would blur the latency.
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(imap.wait_server_push(), timeout=min(left, POLL_SECONDS))
                imap.idle_done()
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(waiter, 5)
            else:
                await asyncio.sleep(min(POLL_SECONDS, left))
        return None

    async def _search(self, imap: _DoorIMAP, tag: str) -> str | None:
        response = await imap.search(f'HEADER {TAG_HEADER} "{tag}"')
        for line in _lines(response).split("\n"):
            numbers = line.strip().split()
            if numbers and all(n.isdigit() for n in numbers):
                return numbers[0]
        return None

    async def headers_and_delete(self, imap: _DoorIMAP, number: str) -> EmailMessage:
        response = await imap.fetch(number, "(BODY.PEEK[HEADER])")
        raw = next(
            (x for x in response.lines if isinstance(x, bytes | bytearray) and b":" in x), b""
        )
        await imap.store(number, "+FLAGS", "(\\Deleted)")
        await imap.expunge()
        message = email.message_from_bytes(bytes(raw), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


def _lines(response: Any) -> str:
    return "\n".join(
        x.decode(errors="replace") if isinstance(x, bytes | bytearray) else str(x)
        for x in getattr(response, "lines", [])
    )


def tagged_message(account: Account, tag: str, helo: str, how: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = account.address
    message["To"] = account.address
    message["Subject"] = f"mailcheck {how} test {tag[:8]}"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = f"<{tag}@{helo}>"
    message[TAG_HEADER] = tag
    message.set_content(f"A round-trip test by mailcheck ({how}). It is deleted once it arrives.\n")
    return message


def login_context(ca_file: str | None, account: Account | None) -> ssl.SSLContext:
    """The TLS context of a connection that carries `account`'s password: a mail
    client's (chain, name and dates verified, TLS 1.2 or later), unless the
    profile opted out with tls_verify = false (the auth stage reported that)."""
    if account is None or account.tls_verify:
        return http.ssl_context(ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def send_message(
    net: Network,
    endpoint: Endpoint,
    message: EmailMessage,
    account: Account | None,
) -> tuple[str | None, float]:
    """Hand the message over: (None when accepted, else the server's refusal;
    the monotonic time of the server's answer to the message)."""
    config = net.config
    implicit = endpoint.tls == "implicit"
    async with net.open_socket(endpoint.target()) as sock:
        client = aiosmtplib.SMTP(
            hostname=endpoint.host,
            sock=sock,
            use_tls=implicit,
            start_tls=None if account is None else not implicit,
            tls_context=login_context(config.ca_file, account),
            local_hostname=config.helo_name,
            timeout=config.timeouts.reply,
        )
        try:
            await client.connect()
            if account is not None:
                await client.login(account.username, account.password)
            errors, reply = await client.send_message(message)
            accepted = time.monotonic()  # the clock starts here, not after QUIT
            note(f"  submitted to {endpoint.label()}: {untrusted(reply, 200)}")
            if errors:
                return "; ".join(f"{r}: {e.message}" for r, e in errors.items()), accepted
            return None, accepted
        except aiosmtplib.SMTPResponseException as exc:
            return f"{exc.code} {untrusted(exc.message, 300)}", time.monotonic()
        except aiosmtplib.SMTPException as exc:
            return untrusted(str(exc), 300), time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await client.quit()
            if client.transport is not None:  # it owns the door's socket: end it first
                client.transport.abort()  # type: ignore[attr-defined]


def hops(message: EmailMessage) -> tuple[str, ...]:
    """Each Received header, one line, bounded: newest first."""
    return tuple(
        untrusted(re.sub(r"\s+", " ", str(h)), 300) for h in message.get_all("Received", [])
    )


def auth_results(message: EmailMessage) -> tuple[str, ...]:
    """The receiving side's SPF/DKIM/DMARC verdicts (Authentication-Results), one line each."""
    return tuple(
        untrusted(re.sub(r"\s+", " ", str(h)), 300)
        for h in message.get_all("Authentication-Results", [])
    )


async def round_trip(
    ctx: ProbeContext,
    how: str,
    send_via: Endpoint,
    mailbox: Endpoint,
    account: Account,
    authenticated: bool,
) -> None:
    """Submit (or relay) a tagged message and watch for it; findings say how it went."""
    config = ctx.net.config
    tag = uuid.uuid4().hex
    message = tagged_message(account, tag, config.helo_name, how)
    target = Target(host=send_via.host, address=send_via.address, port=send_via.port)
    box = Mailbox(ctx.net, mailbox, account)
    async with box.open() as imap:
        refused, sent = await send_message(
            ctx.net, send_via, message, account if authenticated else None
        )
        if refused is not None:
            ctx.add(
                "delivery.submit.rejected",
                target=target,
                summary=f"{how}: {send_via.label()} refused the test message to "
                f"{account.address}: {refused}",
            )
            return
        number = await box.wait_for(imap, tag, sent + config.delivery_timeout)
        if number is None:
            ctx.add(
                "delivery.timeout",
                target=Target(host=account.address),
                summary=f"{how}: the message {send_via.label()} accepted for "
                f"{account.address} did not arrive within {config.delivery_timeout:g} s",
                data={"tag": tag},
            )
            return
        seconds = time.monotonic() - sent
        delivered = await box.headers_and_delete(imap, number)
    received = hops(delivered)
    results = auth_results(delivered)
    data = {"latency_s": round(seconds, 3), "received": list(received), "how": how, "tag": tag}
    summary = (
        f"{how}: {send_via.label()} -> {account.address} in "
        f"{f'{seconds * 1000:.0f} ms' if seconds < 1 else f'{seconds:.2f} s'}, "
        f"{len(received)} Received hop(s)"
    )
    evidence = [*received, *(f"Authentication-Results: {r}" for r in results)]
    if seconds > config.delivery_slow:
        ctx.add(
            "delivery.slow",
            target=Target(host=account.address),
            summary=summary + f" (over {config.delivery_slow:g} s)",
            evidence=evidence,
            data=data,
        )
    else:
        ctx.add(
            "delivery.ok",
            target=Target(host=account.address),
            summary=summary,
            evidence=evidence,
            data=data,
        )
    ctx.fact(f"delivery.{how}", data)


async def probe_delivery(ctx: ProbeContext) -> None:
    try:
        account = account_of(ctx)
    except InputError:
        return  # auth.login said so
    if account is None:
        return
    logins: Logins = ctx.result(LOGIN)
    submission = logins.first("smtp")
    imap = next((ep for ep in logins.working if ep.family == "imap" and ep.tls == "implicit"), None)
    try:  # the profile may name its servers; they win over what the check found
        if account.smtp:
            submission = await profile_endpoint(ctx, account.smtp, "smtp")
        if account.imap:
            imap = await profile_endpoint(ctx, account.imap, "imap")
    except (DNSError, TargetRefused, InputError) as exc:
        ctx.add(
            "delivery.skipped",
            target=Target(host=ctx.domain),
            summary=f"no round trip: the servers in {account.name}'s profile: {exc}",
        )
        return
    if submission is None or imap is None:
        if logins.working:  # when nothing logs in, auth.failed has said why
            missing = "submission server" if submission is None else "IMAP server on 993"
            ctx.add(
                "delivery.skipped",
                target=Target(host=ctx.domain),
                summary=f"no round trip: {account.name} logs in at no {missing}",
            )
        return
    paths = [("submission", submission, True)]
    hosts: tuple[MailHost, ...] = ctx.result(MX_HOSTS)
    mx = next((h for h in hosts if h.usable), None)
    if mx is not None:  # as an outside sender would: the MX, port 25, no login
        paths.append(
            ("inbound", Endpoint(mx.host, mx.usable[0], 25, "smtp", "starttls", "mx", True), False)
        )
    for how, via, authenticated in paths:
        try:
            await round_trip(ctx, how, via, imap, account, authenticated)
        except (NetError, TargetRefused, DNSError, InputError) as exc:
            ctx.add(
                "delivery.submit.rejected",
                target=via.target(),
                summary=f"{how}: {via.label()}: {exc}",
            )


async def profile_endpoint(ctx: ProbeContext, hostport: str, family: str) -> Endpoint:
    """An endpoint from a profile's `smtp`/`imap` (465 and IMAP: implicit TLS;
    other submission ports: STARTTLS)."""
    host, port = split_hostport(hostport)
    addresses = await http.resolve_allowed(ctx.net, host)
    if not addresses:
        raise InputError(f"{host} has no usable address")
    if family == "imap":
        return Endpoint(host, addresses[0], port, "imaps", "implicit", "client", True)
    implicit = port == 465
    protocol, tls = ("submissions", "implicit") if implicit else ("submission", "starttls")
    return Endpoint(host, addresses[0], port, protocol, tls, "client", True)


PROBES: tuple[Probe, ...] = (
    Probe(
        "delivery.roundtrip", Stage.DELIVERY, probe_delivery, needs=("auth.login", "dns.mx.hosts")
    ),
)
