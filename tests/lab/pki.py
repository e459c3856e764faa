"""A throwaway PKI for the mail lab, made with `cryptography` at every lab start.

Two hierarchies: the trusted one ("mailcheck lab root CA" and its intermediate,
whose root alone is in `ca_file`, the file tests pass as --ca-file) and an
unrelated "untrusted lab root" with its own intermediate. Leaf certificates are
described by CertSpec; their dates are offsets from now, so they are issued
anew on every build. Keys are kept between builds (making RSA keys is the slow
part), certificates never are.

Layout of state_dir/pki: ca.pem (trusted root only), root.{key,pem},
intermediate.{key,pem}, untrusted-root.{key,pem}, untrusted-intermediate.{key,pem},
and per leaf <name>.key and <name>.pem (leaf, then the intermediate if send_chain).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["rsa2048", "rsa1024", "ec256"]
Issuer = Literal["intermediate", "untrusted-intermediate", "self"]

ROOT_NAME = "mailcheck lab root CA"
INTERMEDIATE_NAME = "mailcheck lab intermediate CA"
UNTRUSTED_ROOT_NAME = "untrusted lab root"
UNTRUSTED_INTERMEDIATE_NAME = "untrusted lab intermediate"

CA_BACKDATE = datetime.timedelta(days=1)
ROOT_LIFETIME = datetime.timedelta(days=3650)
INTERMEDIATE_LIFETIME = datetime.timedelta(days=3650)

_ORGANIZATION = "mailcheck test lab"


@dataclass(frozen=True)
class CertSpec:
    """One leaf certificate. Dates are offsets from the moment of the build."""

    name: str  # file stem: <name>.key, <name>.pem
    sans: tuple[str, ...]  # DNS names; the first is also the subject CN
    not_before: datetime.timedelta = datetime.timedelta(days=-1)
    not_after: datetime.timedelta = datetime.timedelta(days=365)
    key: KeyType = "rsa2048"
    issuer: Issuer = "intermediate"
    send_chain: bool = True  # the served PEM carries the intermediate after the leaf

    def __post_init__(self) -> None:
        object.__setattr__(self, "sans", tuple(self.sans))
        if not self.sans:
            raise ValueError(f"certificate {self.name!r} needs at least one name")
        if self.key not in ("rsa2048", "rsa1024", "ec256"):
            raise ValueError(f"certificate {self.name!r}: unknown key type {self.key!r}")
        if self.issuer not in ("intermediate", "untrusted-intermediate", "self"):
            raise ValueError(f"certificate {self.name!r}: unknown issuer {self.issuer!r}")
        if "/" in self.name or self.name.startswith("."):
            raise ValueError(f"certificate name {self.name!r} is not a plain file stem")


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class _CA:
    key: PrivateKey
    cert: x509.Certificate


class LabPKI:
    """The lab's certificates, written as PEM files into state_dir/pki."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir).resolve() / "pki"

    @property
    def ca_file(self) -> Path:
        """PEM with only the trusted lab root: what tests pass as --ca-file."""
        return self.dir / "ca.pem"

    @property
    def untrusted_ca_file(self) -> Path:
        """PEM with only the untrusted root (trust it to check that hierarchy)."""
        return self.dir / "untrusted-root.pem"

    def cert_path(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key_path(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def build(self, specs: Iterable[CertSpec]) -> None:
        specs = list(specs)
        names = [spec.name for spec in specs]
        reserved = {"ca", "root", "intermediate", "untrusted-root", "untrusted-intermediate"}
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & reserved))
        if clash:
            raise ValueError(f"certificate names used twice or reserved: {clash}")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        now = datetime.datetime.now(datetime.UTC)

        root = self._root("root", ROOT_NAME, now)
        intermediate = self._intermediate("intermediate", INTERMEDIATE_NAME, root, now)
        untrusted_root = self._root("untrusted-root", UNTRUSTED_ROOT_NAME, now)
        untrusted_intermediate = self._intermediate(
            "untrusted-intermediate", UNTRUSTED_INTERMEDIATE_NAME, untrusted_root, now
        )
        _write(self.ca_file, _pem(root.cert))
        issuers = {"intermediate": intermediate, "untrusted-intermediate": untrusted_intermediate}

        for spec in specs:
            key = self._key(spec.name, spec.key)
            issuer = issuers.get(spec.issuer)
            cert = _leaf(spec, key, issuer, now)
            chain = _pem(cert)
            if spec.send_chain and issuer is not None:
                chain += _pem(issuer.cert)
            _write(self.cert_path(spec.name), chain)

    def _root(self, stem: str, common_name: str, now: datetime.datetime) -> _CA:
        key = self._key(stem, "rsa2048")
        name = _name(common_name)
        cert = (
            _builder(name, name, key, now - CA_BACKDATE, now - CA_BACKDATE + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        _write(self.cert_path(stem), _pem(cert))
        return _CA(key, cert)

    def _intermediate(
        self, stem: str, common_name: str, parent: _CA, now: datetime.datetime
    ) -> _CA:
        key = self._key(stem, "rsa2048")
        not_before = now - CA_BACKDATE
        cert = (
            _builder(
                _name(common_name),
                parent.cert.subject,
                key,
                not_before,
                not_before + INTERMEDIATE_LIFETIME,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(_aki(parent.cert), critical=False)
            .sign(parent.key, hashes.SHA256())
        )
        _write(self.cert_path(stem), _pem(cert))
        return _CA(key, cert)

    def _key(self, stem: str, key_type: KeyType) -> PrivateKey:
        """The key at <stem>.key if it is of this type, else a new one (written there)."""
        path = self.key_path(stem)
        try:
            # Our own file: skipping the (slow) RSA consistency check is safe.
            loaded = serialization.load_pem_private_key(
                path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
            )
        except (OSError, ValueError, TypeError):
            loaded = None
        if isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) and (
            _key_type(loaded) == key_type
        ):
            return loaded
        key: PrivateKey
        if key_type == "ec256":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = rsa.generate_private_key(65537, 2048 if key_type == "rsa2048" else 1024)
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write(path, data, mode=0o600)
        return key


def _key_type(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ec256" if key.curve.name == "secp256r1" else key.curve.name
    return f"rsa{key.key_size}"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _leaf(
    spec: CertSpec, key: PrivateKey, issuer: _CA | None, now: datetime.datetime
) -> x509.Certificate:
    subject = _name(spec.sans[0])
    builder = (
        _builder(
            subject,
            issuer.cert.subject if issuer else subject,
            key,
            now + spec.not_before,
            now + spec.not_after,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in spec.sans]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if issuer is None:
        # A self-signed leaf has no keyUsage: with one lacking keyCertSign,
        # OpenSSL would not see it as its own issuer and report error 20
        # (unable to get local issuer) instead of 18 (self-signed).
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        return builder.sign(key, hashes.SHA256())
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=is_rsa,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    ).add_extension(_aki(issuer.cert), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace path atomically, so a server reading it never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
