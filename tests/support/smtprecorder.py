"""A hostile submission server that records every byte a client sends it.

No real server shows what a client sent after TLS, so this one does: it greets,
offers STARTTLS and AUTH PLAIN/LOGIN, upgrades with whatever certificate it is
given (self-signed, or a good one for another name), and accepts any
credentials, which is what a phishing server would do. `received` is every
byte the client sent, decrypted where TLS was on; `connections` counts accepts.

    async with SMTPRecorder("127.1.24.1", 587, cert, key) as server:
        ...
        assert password.encode() not in server.received
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from tests.support.fakeserver import FakeServer

_EHLO = b"250-evil.test\r\n250-AUTH PLAIN LOGIN\r\n250-STARTTLS\r\n250 8BITMIME\r\n"


class SMTPRecorder(FakeServer):
    def __init__(self, address: str, port: int, cert: Path, key: Path) -> None:
        super().__init__(self._converse, address, port)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.received = bytearray()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 evil.test ESMTP\r\n")
        login_answers = 0  # AUTH LOGIN: the username, then the password, each after a 334
        while line := await asyncio.wait_for(reader.readline(), 30):
            self.received += line
            words = line.split()
            verb = words[0].upper() if words else b""
            if login_answers:
                login_answers -= 1
                writer.write(b"334 UGFzc3dvcmQ6\r\n" if login_answers else b"235 welcome\r\n")
            elif verb in (b"EHLO", b"HELO"):
                writer.write(_EHLO)
            elif verb == b"STARTTLS":
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(self.context)
                continue
            elif verb == b"AUTH" and len(words) == 2:  # AUTH LOGIN, or PLAIN without its blob
                login_answers = 2 if words[1].upper() == b"LOGIN" else 1
                writer.write(b"334 VXNlcm5hbWU6\r\n" if login_answers == 2 else b"334 \r\n")
            elif verb == b"AUTH":
                writer.write(b"235 welcome\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
