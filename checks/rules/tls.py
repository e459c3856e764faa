"""TLS evaluation: one implementation for STARTTLS and implicit TLS, every protocol.

Pure functions judge what a handshake showed (`checks.net.conn.TLSSession`):
the chain against the trust store, the name, the dates, the key, the cipher.
The handshake itself is permissive on purpose (see `checks.net.conn`), so the
verdicts here are ours, with reasons an admin can act on, not OpenSSL's
first complaint.

Severity follows who is hurt: on an MX's port 25, sending servers fall back to
unauthenticated TLS, so a certificate problem is a warning; on submission,
IMAP and POP3, users' clients refuse the connection, so it is an error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

from checks.core.text import untrusted

EXPIRY_WARNING = timedelta(days=14)
EXPIRY_ERROR = timedelta(days=3)
_NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME: dates are judged separately

# OpenSSL verify codes (x509_vfy.h) we explain ourselves.
V_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
V_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
V_DEPTH_ZERO_SELF_SIGNED = 18
V_SELF_SIGNED_IN_CHAIN = 19


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    serial: str  # hex
    not_before: datetime
    not_after: datetime
    sans: tuple[str, ...]  # DNS names
    common_name: str | None
    sha256: str
    key_type: str  # RSA, EC, Ed25519, ...
    key_bits: int
    is_ca: bool

    @property
    def self_issued(self) -> bool:
        return self.subject == self.issuer

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sans": list(self.sans),
            "sha256": self.sha256,
            "key": f"{self.key_type} {self.key_bits}",
        }


@functools.lru_cache(maxsize=512)
def parse_cert(der: bytes) -> CertInfo:
    """The facts of one DER certificate, parsed once per process (a check
    meets each certificate several times: every port, every legacy probe)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        sans = tuple(untrusted(n, 255) for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = ()
    except ValueError:  # malformed extension: treat as absent, the name check will say so
        sans = ()
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        is_ca = bool(basic.value.ca)
    except (x509.ExtensionNotFound, ValueError):
        is_ca = False
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = untrusted(str(cns[0].value), 255) if cns else None
    key_type, key_bits = _key(cert.public_key())
    return CertInfo(
        subject=untrusted(cert.subject.rfc4514_string(), 500),
        issuer=untrusted(cert.issuer.rfc4514_string(), 500),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sans=sans,
        common_name=common_name,
        sha256=hashlib.sha256(der).hexdigest(),
        key_type=key_type,
        key_bits=key_bits,
        is_ca=is_ca,
    )


def _key(key: Any) -> tuple[str, int]:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, 0


# -- names -------------------------------------------------------------------------


def match_hostname(name: str, sans: tuple[str, ...]) -> bool:
    """RFC 6125 matching of a DNS name against SAN dNSNames: case-insensitive,
    a wildcard only as the whole left-most label and matching exactly one
    label. The subject CN is not consulted (clients stopped doing that)."""
    host = name.rstrip(".").lower()
    for pattern in sans:
        pat = pattern.rstrip(".").lower()
        if pat == host:
            return True
        if pat.startswith("*.") and "*" not in pat[2:]:
            head, _, rest = host.partition(".")
            if head and rest == pat[2:] and rest.count(".") >= 1:
                return True
    return False


# -- dates, keys, ciphers ---------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    code: str
    summary: str
    severe: bool = False  # an error even where the code is usually a warning


def validity_problem(cert: CertInfo, now: datetime) -> Problem | None:
    if now < cert.not_before:
        return Problem(
            "tls.cert.not_yet_valid",
            f"certificate is not valid before {cert.not_before:%Y-%m-%d %H:%M} UTC",
        )
    if now > cert.not_after:
        days = (now - cert.not_after).days
        return Problem(
            "tls.cert.expired",
            f"certificate expired {cert.not_after:%Y-%m-%d %H:%M} UTC "
            f"({days} day{'s' if days != 1 else ''} ago)",
        )
    left = cert.not_after - now
    if left <= EXPIRY_WARNING:
        return Problem(
            "tls.cert.expiring",
            f"certificate expires {cert.not_after:%Y-%m-%d %H:%M} UTC, in "
            f"{left.days} day{'s' if left.days != 1 else ''}",
            severe=left <= EXPIRY_ERROR,
        )
    return None


def key_problem(cert: CertInfo) -> Problem | None:
    weak = (cert.key_type in ("RSA", "DSA") and cert.key_bits < 2048) or (
        cert.key_type == "EC" and cert.key_bits < 224
    )
    if weak:
        return Problem("tls.key.weak", f"certificate key is {cert.key_type} {cert.key_bits} bits")
    return None


_WEAK_CIPHER_TOKENS = frozenset(
    {"NULL", "EXP", "EXPORT", "RC4", "RC2", "DES", "3DES", "MD5", "ADH", "AECDH", "ANON", "IDEA"}
)


def cipher_problem(cipher: str, bits: int) -> Problem | None:
    """NULL, export, RC4, (3)DES, MD5, anonymous, under 128 bits, or a static
    RSA key exchange (no forward secrecy: one stolen key decrypts all past
    traffic). OpenSSL names forward-secret suites ECDHE-/DHE-; TLS 1.3 TLS_."""
    upper = cipher.upper()
    tokens = set(re.split(r"[-_]", upper))
    if bits < 128 or tokens & _WEAK_CIPHER_TOKENS:
        return Problem("tls.cipher.weak", f"negotiated cipher {cipher} ({bits} bits) is weak")
    if upper and not upper.startswith(("TLS_", "ECDHE-", "DHE-", "EDH-")):
        return Problem(
            "tls.cipher.weak",
            f"negotiated cipher {cipher} has no forward secrecy (static RSA key exchange)",
        )
    return None


# -- the chain ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def trust_store(ca_file: str | None) -> crypto.X509Store:
    """System roots plus the operator's, loaded once per process by OpenSSL
    itself (the system bundle holds certificates `cryptography` would refuse)."""
    store = crypto.X509Store()
    paths = ssl.get_default_verify_paths()
    for path in dict.fromkeys((paths.cafile, paths.openssl_cafile, ca_file)):
        if path and os.path.isfile(path):
            store.load_locations(path)
    store.set_flags(_NO_CHECK_TIME)
    return store


@functools.lru_cache(maxsize=256)
def chain_error(chain_der: tuple[bytes, ...], ca_file: str | None) -> tuple[int, str] | None:
    """OpenSSL's (verify code, message) when the chain (leaf first, then whatever
    else was sent, in any order) leads to no root in the system store or
    `ca_file`; None when it does. Dates are not judged here (see
    `validity_problem`), so the answer holds for the process and is
    remembered: a check meets the same chain on every port of a host.
    Raises ValueError on a certificate OpenSSL cannot read."""
    certs = [crypto.X509.from_cryptography(x509.load_der_x509_certificate(d)) for d in chain_der]
    context = crypto.X509StoreContext(trust_store(ca_file), certs[0], certs[1:])
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as exc:
        code, _depth, message = exc.errors
        return int(code), str(message)
    return None


def chain_problem(chain_der: tuple[bytes, ...], ca_file: str | None) -> Problem | None:
    """Does the chain as sent lead to a trusted root? Tells a missing
    intermediate (the server sent its certificate alone, and its issuer is no
    trusted root) apart from an unknown or self-signed CA."""
    if not chain_der:
        return Problem("tls.cert.untrusted", "the server sent no certificate")
    error = chain_error(chain_der, ca_file)
    if error is not None:
        code, message = error
        leaf = parse_cert(chain_der[0])
        if code in (V_DEPTH_ZERO_SELF_SIGNED,):
            return Problem("tls.cert.untrusted", "certificate is self-signed")
        if code in (V_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, V_UNABLE_TO_VERIFY_LEAF_SIGNATURE) and (
            len(chain_der) == 1 and not leaf.self_issued
        ):
            return Problem(
                "tls.cert.chain_incomplete",
                f"the server sends only its own certificate; its issuer ({leaf.issuer}) is not "
                "a trusted root, so the intermediate certificate is missing (or the issuer "
                "is an unknown CA)",
            )
        issuer = parse_cert(chain_der[-1]).issuer
        return Problem(
            "tls.cert.untrusted",
            f"certificate chain does not lead to a trusted root ({message}; top issuer {issuer})",
        )
    return None


def now_utc() -> datetime:
    return datetime.now(UTC)


def client_trust_problem(
    chain_der: tuple[bytes, ...], host: str, ca_file: str | None, now: datetime
) -> str | None:
    """Why a mail client would refuse this chain for `host`, or None: the chain
    must lead to a trusted root (system store plus `ca_file`), name `host` and be
    in date. What decides whether a test account's password may be sent."""
    chain = chain_problem(chain_der, ca_file)
    if chain is not None:
        return chain.summary
    leaf = parse_cert(chain_der[0])
    if not match_hostname(host, leaf.sans):
        names = ", ".join(leaf.sans[:5]) or "no DNS name"
        return f"certificate is not valid for {host} (it names {names})"
    dates = validity_problem(leaf, now)
    if dates is not None and dates.code != "tls.cert.expiring":
        return dates.summary
    return None
