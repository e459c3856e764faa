"""DANE (RFC 6698, 7671, 7672): TLSA records judged against real certificates
made here with `cryptography` (a root, an intermediate, leaves for
mx.example.test with RSA and EC keys). No network."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from checks.rules import dane
from checks.rules.dane import TLSA

HOST = "mx.example.test"
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    cn: str,
    key: Key,
    issuer: tuple[x509.Name, Key] | None = None,
    *,
    ca: bool = False,
    sans: tuple[str, ...] = (),
    start: datetime = NOW - timedelta(days=30),
    end: datetime = NOW + timedelta(days=60),
) -> bytes:
    issuer_name, issuer_key = issuer or (_name(cn), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class PKI:
    root: bytes
    intermediate: bytes
    old_intermediate: bytes  # the same CA name and key, expired
    leaf: bytes  # RSA, mx.example.test, issued by the intermediate
    ec_leaf: bytes  # EC P-256, same
    expired: bytes
    wrong_name: bytes
    other_ca: bytes  # a CA that issued nothing here
    stray_leaf: bytes  # issued by other_ca
    self_signed: bytes  # mx.example.test, its own issuer

    @property
    def chain(self) -> tuple[bytes, ...]:
        return (self.leaf, self.intermediate)


@pytest.fixture(scope="module")
def pki() -> PKI:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    int_key = ec.generate_private_key(ec.SECP384R1())
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    root = (_name("DANE test root"), root_key)
    intermediate = (_name("DANE test intermediate"), int_key)
    other = (_name("DANE other CA"), other_key)
    return PKI(
        root=_cert("DANE test root", root_key, ca=True),
        intermediate=_cert("DANE test intermediate", int_key, root, ca=True),
        old_intermediate=_cert(
            "DANE test intermediate",
            int_key,
            root,
            ca=True,
            start=NOW - timedelta(days=800),
            end=NOW - timedelta(days=400),
        ),
        leaf=_cert(HOST, leaf_key, intermediate, sans=(HOST,)),
        ec_leaf=_cert(HOST, ec_key, intermediate, sans=(HOST,)),
        expired=_cert(
            HOST,
            ec_key,
            intermediate,
            sans=(HOST,),
            start=NOW - timedelta(days=120),
            end=NOW - timedelta(days=3),
        ),
        wrong_name=_cert("other.example.test", ec_key, intermediate, sans=("other.example.test",)),
        other_ca=_cert("DANE other CA", other_key, ca=True),
        stray_leaf=_cert(HOST, ec_key, other, sans=(HOST,)),
        self_signed=_cert(HOST, ec_key, sans=(HOST,)),
    )


def record(cert_der: bytes, usage: int = 3, selector: int = 1, mtype: int = 1) -> TLSA:
    return dane.parse(dane.record_for(cert_der, usage, selector, mtype))


def judge(records: list[TLSA], chain: tuple[bytes, ...] | list[bytes]) -> dane.Verdict:
    return dane.match(records, chain, HOST, NOW)


# -- DANE-EE ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (0, 1), (1, 2), (0, 0), (1, 0), (0, 2)])
@pytest.mark.parametrize("which", ["leaf", "ec_leaf"])
def test_dane_ee_matches_the_servers_certificate(
    pki: PKI, shape: tuple[int, int], which: str
) -> None:
    leaf = getattr(pki, which)
    verdict = judge([record(leaf, 3, *shape)], (leaf, pki.intermediate))
    assert verdict.ok, verdict.problems
    assert verdict.depth == 0 and verdict.matched == record(leaf, 3, *shape)
    assert verdict.problems == () and verdict.unusable == ()


def test_association_is_what_the_rfc_says(pki: PKI) -> None:
    cert = x509.load_der_x509_certificate(pki.leaf)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert dane.association(pki.leaf, 1, 0) == spki
    assert dane.association(pki.leaf, 1, 1) == hashlib.sha256(spki).digest()
    assert dane.association(pki.leaf, 1, 2) == hashlib.sha512(spki).digest()
    assert dane.association(pki.leaf, 0, 0) == pki.leaf
    assert dane.association(pki.leaf, 0, 1) == hashlib.sha256(pki.leaf).digest()
    assert dane.record_for(pki.leaf) == "3 1 1 " + hashlib.sha256(spki).hexdigest()
    with pytest.raises(ValueError, match="selector 7"):
        dane.association(pki.leaf, 7, 1)
    with pytest.raises(ValueError, match="matching type 9"):
        dane.association(pki.leaf, 1, 9)
    with pytest.raises(ValueError, match=r"not a DER X\.509 certificate"):
        dane.association(b"\x30\x03\x02\x01\x00", 1, 1)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
@pytest.mark.parametrize("which", ["leaf", "ec_leaf", "intermediate"])
def test_spki_digest_agrees_with_openssl(pki: PKI, which: str) -> None:
    der = getattr(pki, which)
    pubkey = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-pubkey", "-noout"],
        input=der, capture_output=True, check=True,
    ).stdout  # fmt: skip
    spki = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pubkey, capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert dane.association(der, 1, 0) == spki
    assert dane.association(der, 1, 1) == hashlib.sha256(spki).digest()
    assert dane.association(der, 1, 2) == hashlib.sha512(spki).digest()


def test_dane_ee_ignores_names_and_dates(pki: PKI) -> None:
    for leaf in (pki.expired, pki.wrong_name, pki.self_signed):
        verdict = judge([record(leaf)], (leaf, pki.intermediate))
        assert verdict.ok and verdict.problems == ()
    # and the chain: a DANE-EE key is pinned, whoever issued it
    assert judge([record(pki.stray_leaf)], (pki.stray_leaf,)).ok


def test_a_wrong_digest_fails_and_shows_the_servers(pki: PKI) -> None:
    stale = record(pki.ec_leaf)  # the key before the server's was replaced
    verdict = judge([stale], pki.chain)
    assert not verdict.ok and verdict.matched is None and verdict.depth is None
    text = " ".join(verdict.problems)
    assert verdict.problems[0] == "no TLSA record matches the certificates the server sent"
    actual = dane.association(pki.leaf, 1, 1).hex()
    assert f"3 1 1 {actual[:16]}…" in text
    assert f"3 1 1 {stale.data.hex()[:16]}…" in text
    assert actual not in text  # cut to a readable length
    assert "SHA-256 of the public key" in text


def test_each_record_shape_gets_the_servers_value_in_that_shape(pki: PKI) -> None:
    wrong = [record(pki.ec_leaf, 3, 1, 1), record(pki.ec_leaf, 3, 0, 2)]
    text = " ".join(judge(wrong, pki.chain).problems)
    assert "3 1 1 " + dane.association(pki.leaf, 1, 1).hex()[:16] in text
    assert "3 0 2 " + dane.association(pki.leaf, 0, 2).hex()[:16] in text


def test_shown_digests_are_long_enough_to_tell_apart(pki: PKI) -> None:
    real = dane.association(pki.leaf, 1, 1)
    near = TLSA(3, 1, 1, real[:10] + bytes(22))  # same first 20 hex digits
    text = " ".join(judge([near], pki.chain).problems)
    shown = [w for w in text.split() if w.endswith("…") and w.startswith(real.hex()[:16])]
    assert len(shown) == 2 and shown[0] != shown[1]
    # full public keys of one type share a long DER prefix: still told apart
    spki, other = dane.association(pki.ec_leaf, 1, 0), dane.association(pki.other_ca, 1, 0)
    assert spki[:26] == other[:26]
    text = judge([TLSA(3, 1, 0, spki)], (pki.other_ca,)).problems[1]
    shown = [w for w in text.split() if w.endswith("…")]
    assert len(shown) == 2 and shown[0] != shown[1] and len(shown[0]) > 2 * 26
    # differing only at the end: told apart by length and SHA-256
    key = dane.association(pki.leaf, 1, 0)
    near_key = key[:-1] + b"\x00"
    text = judge([TLSA(3, 1, 0, near_key)], pki.chain).problems[1]
    for value in (key, near_key):
        assert f"({len(value)} bytes, SHA-256 {hashlib.sha256(value).hexdigest()[:16]}…)" in text
    assert len(text) < 400


def test_any_one_matching_record_is_enough(pki: PKI) -> None:
    records = [
        record(pki.ec_leaf),  # stale
        TLSA(1, 1, 1, dane.association(pki.leaf, 1, 1)),  # unusable
        record(pki.root, 2, 0, 1),  # not sent
        record(pki.leaf, 3, 0, 1),
    ]
    verdict = judge(records, pki.chain)
    assert verdict.ok and verdict.problems == ()
    assert verdict.matched == records[3] and verdict.depth == 0
    assert verdict.unusable == (records[1],)


# -- DANE-TA ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 1), (1, 1), (0, 0), (1, 2)])
def test_dane_ta_matches_the_intermediate_the_server_sends(
    pki: PKI, shape: tuple[int, int]
) -> None:
    ta = record(pki.intermediate, 2, *shape)
    verdict = judge([ta], pki.chain)
    assert verdict.ok, verdict.problems
    assert verdict.matched == ta and verdict.depth == 1


def test_dane_ta_matches_a_root_sent_in_any_order(pki: PKI) -> None:
    ta = record(pki.root, 2, 0, 1)
    verdict = judge([ta], (pki.leaf, pki.root, pki.intermediate))
    assert verdict.ok, verdict.problems
    assert verdict.depth == 1


def test_dane_ta_for_a_ca_the_server_does_not_send(pki: PKI) -> None:
    for ta in (record(pki.root, 2, 0, 1), record(pki.root, 2, 1, 1)):
        verdict = judge([ta], pki.chain)
        assert not verdict.ok and verdict.matched is None
        text = " ".join(verdict.problems)
        assert "must send the TA certificate in its chain" in text
        assert "RFC 7672 §3.1.2" in text
        needed = dane.association(pki.intermediate, ta.selector, ta.mtype).hex()[:16]
        assert f"2 {ta.selector} 1 {needed}… (depth 1, CN=DANE test intermediate)" in text
    # the server sends only its own certificate: nothing to match a TA record against
    text = " ".join(judge([record(pki.root, 2, 0, 1)], (pki.leaf,)).problems)
    assert "sends no CA certificate" in text


def test_dane_ta_needs_the_server_certificate_to_chain_to_it(pki: PKI) -> None:
    # a stale CA certificate left in the chain file after a change of CA
    verdict = judge([record(pki.other_ca, 2, 0, 1)], (pki.leaf, pki.other_ca))
    assert not verdict.ok and verdict.depth == 1
    text = " ".join(verdict.problems)
    assert "does not chain to it" in text and "CN=DANE test intermediate" in text


def test_dane_ta_checks_the_name(pki: PKI) -> None:
    ta = record(pki.intermediate, 2, 0, 1)
    verdict = judge([ta], (pki.wrong_name, pki.intermediate))
    assert not verdict.ok and verdict.matched == ta and verdict.depth == 1
    (problem,) = verdict.problems
    assert "not valid for mx.example.test" in problem and "other.example.test" in problem
    # names compare without case or the root dot
    assert dane.match([ta], pki.chain, "MX.Example.Test.", NOW).ok


def test_dane_ta_checks_the_dates(pki: PKI) -> None:
    ta = record(pki.intermediate, 2, 1, 1)
    verdict = judge([ta], (pki.expired, pki.intermediate))
    assert not verdict.ok and verdict.matched == ta
    (problem,) = verdict.problems
    assert "expired" in problem and "server's certificate" in problem
    early = dane.match([ta], pki.chain, HOST, NOW - timedelta(days=365))
    assert not early.ok and "not valid before" in early.problems[0]
    # the same expired certificate under a DANE-EE record: fine
    assert judge([record(pki.expired)], (pki.expired, pki.intermediate)).ok


def test_dane_ta_checks_the_dates_of_cas_below_the_trust_anchor(pki: PKI) -> None:
    stale_chain = (pki.leaf, pki.old_intermediate, pki.root)
    verdict = judge([record(pki.root, 2, 0, 1)], stale_chain)
    assert not verdict.ok and verdict.depth == 2
    (problem,) = verdict.problems
    assert problem.startswith("the certificate at depth 1 (CN=DANE test intermediate) expired")
    # the trust anchor's own dates do not count
    assert judge([record(pki.old_intermediate, 2, 1, 1)], stale_chain).ok


def test_a_good_record_wins_over_one_with_name_problems(pki: PKI) -> None:
    ta = record(pki.intermediate, 2, 0, 1)
    ee = record(pki.wrong_name)
    verdict = judge([ta, ee], (pki.wrong_name, pki.intermediate))
    assert verdict.ok and verdict.matched == ee


def test_dane_ta_names_the_leaf_only_when_self_issued(pki: PKI) -> None:
    own = record(pki.leaf, 2, 1, 1)
    verdict = judge([own], pki.chain)
    assert not verdict.ok
    assert "it is the server's own certificate, not a CA's: publish 3 1 1" in verdict.problems[-1]
    assert judge([record(pki.self_signed, 2, 0, 1)], (pki.self_signed,)).ok
    wrong_way = judge([record(pki.intermediate, 3, 1, 1)], pki.chain)
    assert "a CA certificate the server sends" in wrong_way.problems[-1]


# -- unusable records --------------------------------------------------------------------


def test_only_pkix_records_are_unusable(pki: PKI) -> None:
    records = [TLSA(1, 1, 1, bytes(32)), TLSA(1, 0, 1, bytes(32))]
    verdict = judge(records, pki.chain)
    assert not verdict.ok and verdict.unusable == tuple(records)
    assert verdict.problems[0] == (
        "only PKIX-EE(1) records: SMTP senders treat them as unusable and fall back to "
        "unauthenticated TLS (RFC 7672 §3.1.3)"
    )
    assert verdict.problems[1] == "to pin the server's current key, publish " + dane.record_for(
        pki.leaf
    )
    both = judge([TLSA(0, 1, 1, bytes(32)), *records], pki.chain)
    assert both.problems[0].startswith("only PKIX-EE(1) and PKIX-TA(0) records")


def test_a_pkix_record_with_the_right_data_is_told_to_change_usage(pki: PKI) -> None:
    pkix = TLSA(1, 1, 1, dane.association(pki.leaf, 1, 1))
    verdict = judge([pkix], pki.chain)
    assert "SMTP senders ignore PKIX-EE(1) records: publish 3 1 1" in verdict.problems[1]
    pkix_ta = TLSA(0, 0, 1, dane.association(pki.intermediate, 0, 1))
    assert "publish 2 0 1" in judge([pkix_ta], pki.chain).problems[1]


@pytest.mark.parametrize(
    ("rec", "why"),
    [
        (TLSA(3, 1, 1, bytes(20)), "digest is 32 bytes (64 hex digits); this record carries 20"),
        (TLSA(3, 1, 2, bytes(32)), "SHA2-512 digest is 64 bytes"),
        (TLSA(3, 1, 0, b""), "carries no data"),
        (TLSA(4, 1, 1, bytes(32)), "certificate usage 4 is not defined"),
        (TLSA(3, 2, 1, bytes(32)), "selector 2 is not defined"),
        (TLSA(3, 1, 3, bytes(32)), "matching type 3 is not defined"),
        (TLSA(0, 1, 1, bytes(32)), "PKIX-TA(0)"),
        (TLSA(255, 255, 255, bytes(32)), "usage 255"),
    ],
)  # fmt: skip
def test_unusable_records_say_why(pki: PKI, rec: TLSA, why: str) -> None:
    assert not rec.usable and why in rec.why_unusable
    verdict = judge([rec], pki.chain)
    assert not verdict.ok and verdict.unusable == (rec,)
    assert "fall back to unauthenticated TLS" in verdict.problems[0]


def test_usable_records(pki: PKI) -> None:
    for rec in (TLSA(3, 1, 1, bytes(32)), TLSA(2, 0, 2, bytes(64)), TLSA(3, 0, 0, pki.leaf)):
        assert rec.usable and rec.why_unusable == ""


# -- hostile input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "chain",
    [
        (),
        (b"",),
        (b"garbage",),
        (b"\x30\x82\xff\xff" + bytes(10),),
        (b"\x30" * 5000,),
    ],
)
def test_broken_chains_are_problems_not_exceptions(pki: PKI, chain: tuple[bytes, ...]) -> None:
    for records in ([record(pki.leaf)], [record(pki.intermediate, 2, 0, 1)], [TLSA(1, 1, 1, b"")]):
        verdict = judge(records, chain)
        assert not verdict.ok and verdict.problems
    text = judge([record(pki.leaf)], chain).problems[0]
    assert "sent no certificate" in text or "cannot be read" in text


def test_a_broken_intermediate_does_not_hide_a_good_match(pki: PKI) -> None:
    assert judge([record(pki.leaf)], (pki.leaf, b"junk")).ok
    verdict = judge([record(pki.intermediate, 2, 0, 1)], (pki.leaf, b"junk"))
    assert not verdict.ok and "no TLSA record matches" in verdict.problems[0]


def test_absurd_records_are_problems_not_exceptions(pki: PKI) -> None:
    huge = TLSA(3, 1, 0, bytes(65535))
    many = [TLSA(3, 1, 1, bytes([i]) * 32) for i in range(256)]
    for records in ([huge], many, [TLSA(2, 0, 0, b"\xff" * 70000)]):
        verdict = judge(records, pki.chain)
        assert not verdict.ok
        assert all(len(p) < 12000 for p in verdict.problems)
    assert judge([*many, record(pki.leaf)], pki.chain).ok


def test_a_long_chain_is_cut(pki: PKI) -> None:
    chain = (pki.leaf, *[pki.intermediate] * 40)
    verdict = judge([record(pki.leaf)], chain)
    assert not verdict.ok and verdict.matched is not None
    assert "41 certificates" in verdict.problems[0]


def test_no_records(pki: PKI) -> None:
    verdict = judge([], pki.chain)
    assert not verdict.ok and verdict.problems == ("there are no TLSA records to check",)


def test_a_naive_now_is_utc(pki: PKI) -> None:
    ta = record(pki.intermediate, 2, 0, 1)
    assert dane.match([ta], pki.chain, HOST, NOW.replace(tzinfo=None)).ok


# -- parsing and presentation ------------------------------------------------------------


def test_parse_and_text_round_trip(pki: PKI) -> None:
    text = dane.record_for(pki.leaf)
    assert dane.parse(text).text() == text
    assert dane.parse(text.upper()).text() == text
    rec = dane.parse("3 1 1 ( " + text[6:38] + " " + text[38:] + " )")
    assert rec.text() == text
    assert dane.parse("DANE-EE SPKI SHA2-256 " + text[6:]) == rec
    assert text == text.lower() and len(text) == 6 + 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a TLSA record"),
        ("3 1 1", "is not a TLSA record"),
        ("x 1 1 abcd", "usage 'x' is not a number"),
        ("3 -1 1 abcd", "selector '-1' is not a number"),
        ("3 1 256 abcd", "matching type '256' is not a number from 0 to 255"),
        ("3 1 1 abcz", "not hex: it has 'z'"),
        ("3 1 1 abc", "odd number (3) of digits"),
        ("3 1 1 ab\x1bcd", "has '\\x1b'"),
    ],
)
def test_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        dane.parse(text)
    assert message in str(info.value)


def test_from_dnspython_rdata(pki: PKI) -> None:
    text = dane.record_for(pki.intermediate, 2, 0, 1)
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text)
    assert dane.from_rdata(rdata) == dane.parse(text)
    assert dane.from_rdata(rdata).text() == rdata.to_text().lower()


def test_record_for_round_trips_through_judge(pki: PKI) -> None:
    for usage, cert in ((3, pki.leaf), (3, pki.ec_leaf), (2, pki.intermediate)):
        for selector in (0, 1):
            for mtype in (0, 1, 2):
                rec = dane.parse(dane.record_for(cert, usage, selector, mtype))
                chain = (cert, pki.intermediate) if usage == 3 else pki.chain
                assert judge([rec], chain).ok, (usage, selector, mtype)


def test_reproduce_gives_an_openssl_command(pki: PKI) -> None:
    ee, ta = record(pki.leaf), record(pki.intermediate, 2, 0, 1)
    command = dane.reproduce(HOST, 25, [ee, TLSA(1, 1, 1, bytes(32)), ta])
    assert command == (
        "openssl s_client -connect mx.example.test:25 -starttls smtp "
        "-servername mx.example.test -dane_tlsa_domain mx.example.test "
        f'-dane_ee_no_namechecks -dane_tlsa_rrdata "{ee.text()}" '
        f'-dane_tlsa_rrdata "{ta.text()}"'
    )
    implicit = dane.reproduce("mx.example.test.", 465, [ee])
    assert "-starttls" not in implicit and "-connect mx.example.test:465 " in implicit
    assert "'" in dane.reproduce("mx.example.test; rm -rf /", 25, [ee])  # quoted for the shell
