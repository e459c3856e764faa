"""DKIM keys of the lab's signing domains, made at every lab start.

The zones publish each key's public half at DKIM_SELECTOR._domainkey.<domain>
(tests/lab/zones.py, through a callback like the TLSA records') and the lab's
OpenDKIM milter signs with the private half (tests/lab/mail.py), so both read
them from one place: DKIMKeys(directory). The DNS is built before the mail lab
starts, so control.Lab.up() builds the keys first; a MailLab started on its own
builds them itself.

Layout of the directory (never committed: it is under the lab's state dir):
<domain>.key (PEM, PKCS#8, 0600: what OpenDKIM signs with) and <domain>.txt
(the TXT record data in zone-file form). For a Sender with dkim="bad" the
.txt holds the public half of another key, made and thrown away here, so the
signatures the lab makes never verify.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .senders import ALL_SENDERS, SIGNING_DOMAINS

KEY_BITS = 2048


class DKIMKeys:
    """The signing keys and published records of SIGNING_DOMAINS, in directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def key_path(self, domain: str) -> Path:
        return self.dir / f"{domain}.key"

    def record(self, domain: str) -> str:
        """The TXT data to publish for domain (zone-file text, quoted strings)."""
        path = self.dir / f"{domain}.txt"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no DKIM record for {domain} in {self.dir}: DKIMKeys.build() makes them"
            ) from None

    def build(self, domains: Iterable[str] = SIGNING_DOMAINS) -> None:
        """Make a fresh key per domain (and a mismatched record for dkim="bad")."""
        bad = {s.domain for s in ALL_SENDERS if s.dkim == "bad"}
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        for domain in domains:
            key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write(self.key_path(domain), pem, 0o600)
            published = key.public_key()
            if domain in bad:
                other = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
                published = other.public_key()
            _write(self.dir / f"{domain}.txt", txt_record(published).encode(), 0o644)


def signing_key(bits: int = KEY_BITS) -> tuple[bytes, str]:
    """A new RSA signing key: (its private key PEM, its DKIM TXT record data)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return pem, txt_record(key.public_key())


def txt_record(key: rsa.RSAPublicKey) -> str:
    """A DKIM key TXT record for key (zone-file text, split into <=200-character
    strings, as one TXT string may hold 255 at most)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    return " ".join(f'"{text[i : i + 200]}"' for i in range(0, len(text), 200))


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file whole, with mode from the start (a private key is never readable)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)
