"""The TLS verdicts, on certificates from a throwaway PKI (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from checks.core.model import Severity
from checks.protocols.session import Endpoint
from checks.rules import tls
from checks.stages.sessions import severity_for
from tests.lab.pki import CertSpec, LabPKI

SPECS = [
    CertSpec("good", ("mx.example.test", "*.mail.example.test")),
    CertSpec("nochain", ("mx.example.test",), send_chain=False),
    CertSpec("selfsigned", ("mx.example.test",), issuer="self"),
    CertSpec("unknownca", ("mx.example.test",), issuer="untrusted-intermediate"),
    CertSpec("weak", ("mx.example.test",), key="rsa1024"),
    CertSpec("ec", ("mx.example.test",), key="ec256"),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    pki = LabPKI(tmp_path_factory.mktemp("pki"))
    pki.build(SPECS)
    return pki


def chain(pki: LabPKI, name: str) -> tuple[bytes, ...]:
    certs = x509.load_pem_x509_certificates(pki.cert_path(name).read_bytes())
    return tuple(c.public_bytes(Encoding.DER) for c in certs)


def test_a_full_chain_to_a_trusted_root_passes(pki: LabPKI) -> None:
    assert tls.chain_problem(chain(pki, "good"), str(pki.ca_file)) is None


def test_without_the_root_nothing_is_trusted(pki: LabPKI) -> None:
    problem = tls.chain_problem(chain(pki, "good"), None)
    assert problem is not None and problem.code == "tls.cert.untrusted"


def test_missing_intermediate_is_told_apart_from_an_unknown_ca(pki: LabPKI) -> None:
    incomplete = tls.chain_problem(chain(pki, "nochain"), str(pki.ca_file))
    assert incomplete is not None and incomplete.code == "tls.cert.chain_incomplete"
    assert "intermediate" in incomplete.summary
    unknown = tls.chain_problem(chain(pki, "unknownca"), str(pki.ca_file))
    assert unknown is not None and unknown.code == "tls.cert.untrusted"
    assert "untrusted lab root" in unknown.summary or "untrusted lab" in unknown.summary
    selfsigned = tls.chain_problem(chain(pki, "selfsigned"), str(pki.ca_file))
    assert selfsigned is not None and selfsigned.code == "tls.cert.untrusted"
    assert "self-signed" in selfsigned.summary


def test_dates_are_judged_apart_from_the_chain(pki: LabPKI) -> None:
    leaf = tls.parse_cert(chain(pki, "good")[0])
    assert tls.chain_problem(chain(pki, "good"), str(pki.ca_file)) is None
    after = leaf.not_after
    cases = {
        after + timedelta(days=2): ("tls.cert.expired", False),
        leaf.not_before - timedelta(hours=1): ("tls.cert.not_yet_valid", False),
        after - timedelta(days=10): ("tls.cert.expiring", False),
        after - timedelta(days=2): ("tls.cert.expiring", True),
    }
    for now, (code, severe) in cases.items():
        problem = tls.validity_problem(leaf, now)
        assert problem is not None and (problem.code, problem.severe) == (code, severe), now
    assert tls.validity_problem(leaf, after - timedelta(days=30)) is None


def test_certificate_details_are_recorded(pki: LabPKI) -> None:
    leaf = tls.parse_cert(chain(pki, "good")[0])
    assert leaf.sans == ("mx.example.test", "*.mail.example.test")
    assert "mailcheck lab intermediate CA" in leaf.issuer
    assert len(leaf.sha256) == 64 and leaf.serial
    assert (leaf.key_type, leaf.key_bits) == ("RSA", 2048)
    assert set(leaf.as_dict()) >= {
        "subject",
        "issuer",
        "serial",
        "not_before",
        "not_after",
        "sans",
        "sha256",
    }


def test_weak_keys(pki: LabPKI) -> None:
    weak = tls.key_problem(tls.parse_cert(chain(pki, "weak")[0]))
    assert weak is not None and "RSA 1024" in weak.summary
    assert tls.key_problem(tls.parse_cert(chain(pki, "good")[0])) is None
    assert tls.key_problem(tls.parse_cert(chain(pki, "ec")[0])) is None


@pytest.mark.parametrize(
    ("name", "sans", "ok"),
    [
        ("mx.example.test", ("mx.example.test",), True),
        ("MX.Example.Test.", ("mx.example.test",), True),
        ("a.mail.example.test", ("*.mail.example.test",), True),
        ("mail.example.test", ("*.mail.example.test",), False),  # wildcard needs a label
        ("a.b.mail.example.test", ("*.mail.example.test",), False),  # exactly one label
        ("mx.example.test", ("m*.example.test",), False),  # no partial wildcards
        ("mx.example.test", ("*.test",), False),  # no wildcard right under a TLD-like label
        ("mx.example.test", (), False),
        ("other.example.test", ("mx.example.test",), False),
    ],
)
def test_hostname_matching(name: str, sans: tuple[str, ...], ok: bool) -> None:
    assert tls.match_hostname(name, sans) is ok


@pytest.mark.parametrize(
    ("cipher", "bits", "weak"),
    [
        ("TLS_AES_256_GCM_SHA384", 256, False),
        ("ECDHE-RSA-AES128-GCM-SHA256", 128, False),
        ("ECDHE-RSA-CHACHA20-POLY1305", 256, False),
        ("DES-CBC3-SHA", 112, True),
        ("ECDHE-RSA-DES-CBC3-SHA", 168, True),
        ("RC4-MD5", 128, True),
        ("NULL-SHA256", 0, True),
        ("EXP-RC2-CBC-MD5", 40, True),
        ("ADH-AES128-SHA", 128, True),
        ("AES128-SHA", 128, True),  # static RSA: no forward secrecy
        ("AES256-GCM-SHA384", 256, True),
        ("ECDHE-RSA-AES128-SHA", 128, False),  # CBC, but forward secret
        ("DHE-RSA-AES256-GCM-SHA384", 256, False),
    ],
)
def test_weak_ciphers(cipher: str, bits: int, weak: bool) -> None:
    assert (tls.cipher_problem(cipher, bits) is not None) is weak


def test_severity_depends_on_who_connects() -> None:
    mx = Endpoint("mx.example.test", "192.0.2.1", 25, "smtp", "starttls", "mx", True)
    imap = Endpoint("imap.example.test", "192.0.2.2", 993, "imaps", "implicit", "client", True)
    assert severity_for(mx, "tls.cert.expired") is Severity.WARNING
    assert severity_for(imap, "tls.cert.expired") is None  # the catalog's error
    assert severity_for(imap, "tls.cert.expiring", severe=True) is Severity.ERROR
    assert severity_for(mx, "smtp.auth.before_tls") is None  # never lenient


def test_now_is_aware() -> None:
    assert tls.now_utc().tzinfo is UTC and abs(tls.now_utc() - datetime.now(UTC)) < timedelta(1)


def test_trust_store_reads_the_operator_file(pki: LabPKI, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca_file.read_bytes() + pki.untrusted_ca_file.read_bytes())
    assert tls.chain_problem(chain(pki, "unknownca"), str(bundle)) is None
