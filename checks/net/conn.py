"""One TCP conversation with a server: bounded, timed, recorded, optionally TLS.

The network door (`Network.connect`) opens these after the target policy
allows the address. Everything a server sends is read through `read_line`,
which enforces the line, reply and byte limits, so a server that floods, sends
an endless line or garbage costs us a bounded amount of memory and raises
ProtocolViolation instead of hanging or crashing.

TLS runs over pyOpenSSL in memory-BIO mode on top of the plain stream, not the
stdlib `ssl` module: a diagnosis needs the chain exactly as the server sent it
(`get_peer_cert_chain`, only in the stdlib from Python 3.13), and handshakes
with deliberately permissive settings (TLS 1.0, weak ciphers) whose outcome we
judge ourselves. The same code serves STARTTLS and implicit TLS.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.core.config import Limits
from checks.core.errors import (
    ConnectionClosed,
    ProtocolViolation,
    ReadTimeout,
    TLSDropped,
    TLSFailed,
)
from checks.core.model import Target
from checks.core.text import untrusted

if TYPE_CHECKING:
    from OpenSSL import SSL

# Everything OpenSSL can still speak: we want to see what the server accepts,
# then judge it, rather than fail the handshake for a reason we cannot report.
PERMISSIVE_CIPHERS = b"ALL:COMPLEMENTOFALL:@SECLEVEL=0"


@dataclass(frozen=True)
class TLSSession:
    """What a completed handshake showed: the chain as sent, leaf first."""

    version: str
    cipher: str
    cipher_bits: int
    chain_der: tuple[bytes, ...]
    server_name: str | None


@functools.lru_cache(maxsize=8)
def tls_context(version: str | None = None) -> SSL.Context:
    """A client context that verifies nothing (we verify later, ourselves);
    `version` pins the protocol ("TLSv1"...), "legacy" offers TLS 1.0-1.1, and
    "client" offers only what a current mail client would (TLS 1.2 or later,
    OpenSSL's default ciphers and security level): the context for connections
    that carry a password, whose certificate is then verified before it is sent.
    pyOpenSSL (and cryptography under it) is imported here, by the first
    handshake, not with the module: a check without TLS never loads it. One
    context per kind, made once per process: making one costs more CPU than
    a loopback handshake."""
    from OpenSSL import SSL

    versions = {
        "TLSv1": SSL.TLS1_VERSION,
        "TLSv1.1": SSL.TLS1_1_VERSION,
        "TLSv1.2": SSL.TLS1_2_VERSION,
        "TLSv1.3": SSL.TLS1_3_VERSION,
    }
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    if version == "client":
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        return ctx
    ctx.set_cipher_list(PERMISSIVE_CIPHERS)
    if version == "legacy":  # offer only what RFC 8996 deprecated
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
    elif version is not None:
        ctx.set_min_proto_version(versions[version])
        ctx.set_max_proto_version(versions[version])
    else:
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
    return ctx


class Connection:
    """A conversation; use through `Network.connect`, which closes it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: Target,
        limits: Limits,
        reply_timeout: float,
    ) -> None:
        self.target = target
        self.limits = limits
        self.reply_timeout = reply_timeout
        self.transcript: list[str] = []
        self._reader = reader
        self._writer = writer
        self._t0 = time.monotonic()
        self._buffer = bytearray()
        self._received = 0
        self._eof = False
        self._tls: SSL.Connection | None = None
        self.tls: TLSSession | None = None
        self.goodbye: Coroutine[Any, Any, None] | None = None

    def leave(self, goodbye: Coroutine[Any, Any, None]) -> None:
        """Say `goodbye` (QUIT, LOGOUT) once the caller is done with the
        connection: the door sends it and waits for its reply in the
        background, so no probe waits a round trip for a farewell."""
        self.goodbye = goodbye
        self.note("-- goodbye sent as the conversation ends; its reply is not waited for")

    # -- transcript ----------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def note(self, line: str) -> None:
        self.transcript.append(f"{self.elapsed() * 1000:8.1f} ms  {line}")

    # -- lines -----------------------------------------------------------------------

    async def read_line(self, timeout: float | None = None) -> str:
        """One line without its CRLF, decoded and made safe. Raises ReadTimeout,
        ConnectionClosed or ProtocolViolation (line too long, too many bytes)."""
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.reply_timeout):
                raw = await self._line()
        except TimeoutError:
            self.note("-- no reply (timeout)")
            raise ReadTimeout(f"no reply within {timeout or self.reply_timeout:g} s") from None
        line = untrusted(raw, self.limits.line)
        self.note(f"S: {line}")
        return line

    async def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                raw = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return raw
            if len(self._buffer) > self.limits.line:
                self.note(
                    f"S: {untrusted(bytes(self._buffer[:80]))}… (line over "
                    f"{self.limits.line} bytes)"
                )
                raise ProtocolViolation(f"line longer than {self.limits.line} bytes")
            if self._eof:
                if self._buffer:
                    self.note(f"S: {untrusted(bytes(self._buffer))} (then closed)")
                    self._buffer.clear()
                self.note("-- connection closed by server")
                raise ConnectionClosed("the server closed the connection")
            chunk = await self._recv()
            if not chunk:
                self._eof = True
                continue
            self._received += len(chunk)
            if self._received > self.limits.bytes_per_connection:
                self.note(f"-- over {self.limits.bytes_per_connection} bytes received; giving up")
                raise ProtocolViolation(
                    f"server sent more than {self.limits.bytes_per_connection} bytes"
                )
            self._buffer += chunk

    async def write_line(self, line: str, shown: str | None = None) -> None:
        """Send `line` + CRLF; `shown` replaces it in the transcript (for secrets)."""
        self.note(f"C: {shown if shown is not None else line}")
        await self._send(line.encode("utf-8") + b"\r\n")

    # -- raw bytes, through TLS when it is on -------------------------------------------

    async def _recv(self) -> bytes:
        if self._tls is None:
            try:
                return await self._reader.read(65536)
            except ConnectionError:
                return b""
        from OpenSSL import SSL  # loaded by start_tls already

        while True:
            try:
                return self._tls.recv(65536)
            except SSL.WantReadError:
                if not await self._pump_in():
                    return b""
            except SSL.ZeroReturnError:
                return b""
            except SSL.Error as exc:
                raise TLSFailed(_ssl_text(exc)) from exc

    async def _send(self, data: bytes) -> None:
        if self._tls is not None:
            self._tls.sendall(data)
            data = self._pump_out_bytes()
        try:
            self._writer.write(data)
            await self._writer.drain()
        except ConnectionError as exc:
            raise ConnectionClosed("the server closed the connection") from exc

    def _pump_out_bytes(self) -> bytes:
        assert self._tls is not None
        from OpenSSL import SSL  # loaded by start_tls already

        out = b""
        while True:
            try:
                out += self._tls.bio_read(65536)
            except SSL.WantReadError:
                return out

    async def _pump_out(self) -> None:
        data = self._pump_out_bytes()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _pump_in(self) -> bool:
        """Feed ciphertext from the network into OpenSSL; False at EOF."""
        assert self._tls is not None
        await self._pump_out()
        try:
            data = await self._reader.read(65536)
        except ConnectionError:
            data = b""
        if not data:
            self._tls.bio_shutdown()
            return False
        self._received += len(data)
        if self._received > self.limits.bytes_per_connection:
            raise ProtocolViolation(
                f"server sent more than {self.limits.bytes_per_connection} bytes"
            )
        self._tls.bio_write(data)
        return True

    # -- TLS ----------------------------------------------------------------------------

    async def start_tls(
        self, server_name: str | None, version: str | None = None, timeout: float | None = None
    ) -> TLSSession:
        """Handshake over this connection (after STARTTLS, or at once for implicit
        TLS). Raises TLSFailed with OpenSSL's reason, or ReadTimeout."""
        if self._buffer:
            # Bytes after the STARTTLS reply and before the handshake: a classic
            # injection hole (CVE-2011-0411); refuse them.
            raise ProtocolViolation("the server sent data before the TLS handshake")
        from OpenSSL import SSL

        tls = SSL.Connection(tls_context(version), None)
        if server_name:
            tls.set_tlsext_host_name(server_name.encode("idna"))
        tls.set_connect_state()
        self._tls = tls
        pinned = {None: "", "client": " (a mail client's settings)"}.get(
            version, f" ({version} only)"
        )
        self.note(f"-- TLS handshake{pinned}, SNI {server_name}")
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.reply_timeout):
                while True:
                    try:
                        tls.do_handshake()
                        break
                    except SSL.WantReadError:
                        if not await self._pump_in():
                            raise TLSDropped(
                                "the server closed the connection during the TLS handshake"
                            ) from None
                await self._pump_out()
        except TimeoutError:
            self.note("-- TLS handshake timed out")
            raise ReadTimeout("TLS handshake did not finish in time") from None
        except SSL.Error as exc:
            self.note(f"-- TLS handshake failed: {_ssl_text(exc)}")
            raise TLSFailed(_ssl_text(exc)) from exc
        except TLSFailed as exc:
            self.note(f"-- TLS handshake failed: {exc}")
            raise
        chain = tls.get_peer_cert_chain(as_cryptography=True) or []
        from cryptography.hazmat.primitives.serialization import Encoding

        session = TLSSession(
            version=tls.get_protocol_version_name(),
            cipher=tls.get_cipher_name() or "",
            cipher_bits=tls.get_cipher_bits() or 0,
            chain_der=tuple(c.public_bytes(Encoding.DER) for c in chain),
            server_name=server_name,
        )
        self.tls = session
        self.note(
            f"-- TLS established: {session.version} {session.cipher} "
            f"({session.cipher_bits} bits), {len(chain)} certificate(s) sent"
        )
        return session

    async def aclose(self) -> None:
        try:
            if self._tls is not None:
                from OpenSSL import SSL  # loaded by start_tls already

                try:
                    self._tls.shutdown()
                    await self._pump_out()
                except (SSL.Error, ConnectionError):
                    pass
            self._writer.close()
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
        except (ConnectionError, TimeoutError, OSError):
            pass


def _ssl_text(exc: SSL.Error) -> str:
    """OpenSSL's error queue as one readable reason."""
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return untrusted("; ".join(parts) or str(exc) or type(exc).__name__, 300)
