"""DKIM key records (RFC 6376 3.6.1, RFC 8463, RFC 8301)."""

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from checks.core.errors import MailcheckError
from checks.rules.dkim import (
    COMMON_SELECTORS,
    DKIMError,
    DKIMKey,
    key_bits,
    parse_key_record,
    parse_tags,
    selector_name,
)


def rsa_key(bits: int, fmt: PublicFormat = PublicFormat.SubjectPublicKeyInfo) -> str:
    """A base64 RSA public key of exactly `bits` bits (a modulus, not a usable key pair)."""
    key = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 1).public_key()
    return base64.b64encode(key.public_bytes(Encoding.DER, fmt)).decode()


ED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
ED_RAW = base64.b64encode(ED_KEY.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
ED_SPKI = base64.b64encode(
    ED_KEY.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).decode()
RSA2048 = rsa_key(2048)


def test_common_selectors_include_the_providers_names() -> None:
    for selector in ("default", "google", "k1", "k2", "s1", "s2", "mail", "dkim"):
        assert selector in COMMON_SELECTORS
    # Microsoft 365 publishes two and rotates between them: both must be tried.
    assert {"selector1", "selector2"} <= set(COMMON_SELECTORS)
    assert len(set(COMMON_SELECTORS)) == len(COMMON_SELECTORS)


def test_selector_name() -> None:
    assert selector_name("selector1", "example.com.") == "selector1._domainkey.example.com"


# -- the tag list ---------------------------------------------------------------------


def test_parse_tags_allows_folding_whitespace_and_a_trailing_semicolon() -> None:
    assert parse_tags(" v = DKIM1 ;\tk=rsa;\r\n p=ab cd ; ") == {
        "v": "DKIM1",
        "k": "rsa",
        "p": "ab cd",
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=DKIM1; p=x; p=y", "tag p= appears more than once; verifiers reject the record"),
        ("v=DKIM1; garbage; p=x", "'garbage' is not a tag=value pair"),
        ("v=DKIM1; =x; p=x", "'=x' is not a tag=value pair"),
        ("v=DKIM1; 1k=rsa; p=x", "'1k=rsa' is not a tag=value pair"),
    ],
)
def test_broken_tag_lists_raise(text: str, fragment: str) -> None:
    with pytest.raises(DKIMError) as caught:
        parse_key_record(text)
    assert fragment in str(caught.value)


def test_tag_names_are_case_sensitive() -> None:
    tags = parse_tags("P=abc; p=def")
    assert tags == {"P": "abc", "p": "def"}


# -- records verifiers reject -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=DKIM2; p=" + RSA2048, "v=DKIM2: the version must be DKIM1"),
        ("v=dkim1; p=" + RSA2048, "v=dkim1: the version must be DKIM1"),
        ("v=DKIM1; k=rsa", "no p= tag: the record holds no public key"),
        ("", "no p= tag"),
    ],
)
def test_records_verifiers_reject_raise(text: str, fragment: str) -> None:
    with pytest.raises(DKIMError) as caught:
        parse_key_record(text)
    assert fragment in str(caught.value)


def test_the_error_belongs_to_the_engine_tree() -> None:
    assert issubclass(DKIMError, MailcheckError) and issubclass(DKIMError, ValueError)


# -- good keys ----------------------------------------------------------------------------


def test_a_2048_bit_rsa_key_is_fine() -> None:
    text = f"v=DKIM1; k=rsa; p={RSA2048}"
    key = parse_key_record(text)
    assert key == DKIMKey(text=text, key_type="rsa", public_key=RSA2048, bits=2048)
    assert not key.revoked and not key.testing


def test_defaults_when_only_p_is_given() -> None:
    key = parse_key_record(f"p={RSA2048}")
    assert (key.key_type, key.bits, key.hashes, key.services, key.flags) == (
        "rsa",
        2048,
        None,
        ("*",),
        (),
    )


def test_whitespace_inside_p_is_folding_and_ignored() -> None:
    folded = " ".join(RSA2048[i : i + 64] for i in range(0, len(RSA2048), 64))
    key = parse_key_record(f"v=DKIM1; p={folded}")
    assert key.public_key == RSA2048 and key.bits == 2048 and key.errors == ()


def test_pkcs1_rsa_keys_are_accepted_too() -> None:
    key = parse_key_record("p=" + rsa_key(2048, PublicFormat.PKCS1))
    assert key.bits == 2048 and key.errors == ()


def test_ed25519_key_is_256_bits() -> None:
    key = parse_key_record(f"v=DKIM1; k=ed25519; p={ED_RAW}")
    assert (key.key_type, key.bits, key.errors, key.warnings) == ("ed25519", 256, (), ())


def test_other_tags() -> None:
    key = parse_key_record(f"v=DKIM1; h=sha1:sha256; s=email; t=s; n=rotated 2024; p={RSA2048}")
    assert key.hashes == ("sha1", "sha256")
    assert (key.services, key.flags, key.notes) == (("email",), ("s",), "rotated 2024")
    assert key.errors == () and key.warnings == ()


# -- key sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "error", "warning"),
    [
        (512, "RSA key is 512 bits; verifiers reject keys under 1024 bits (RFC 8301)", None),
        (1023, "RSA key is 1023 bits", None),
        (1024, None, "RSA key is 1024 bits; use 2048 bits (RFC 8301)"),
        (2047, None, "RSA key is 2047 bits"),
        (2048, None, None),
        (4096, None, None),
    ],
)
def test_rsa_key_size_boundaries(bits: int, error: str | None, warning: str | None) -> None:
    key = parse_key_record("v=DKIM1; p=" + rsa_key(bits))
    assert key.bits == bits
    for found, fragment in ((key.errors, error), (key.warnings, warning)):
        assert len(found) == (1 if fragment else 0), found
        assert fragment is None or found[0].startswith(fragment)


# -- problems -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=DKIM1; p=", "p= is empty: the key is revoked"),
        ("v=DKIM1; k=rsa; p=  ", "the key is revoked"),
        ("v=DKIM1; p=not*base64", "p= is not valid base64"),
        ("v=DKIM1; p=QUJD", "p= is not a DER-encoded public key (SubjectPublicKeyInfo)"),
        (
            "v=DKIM1; p=-----BEGIN PUBLIC KEY-----",
            "p= is not valid base64 (paste only the base64 between the PEM lines)",
        ),
        ("v=DKIM1; k=dsa; p=" + RSA2048, "k=dsa is not rsa or ed25519; verifiers cannot use"),
        ("v=DKIM1; k=RSA; p=" + RSA2048, "k=RSA is not rsa or ed25519"),
        ("v=DKIM1; k=ed25519; p=" + ED_SPKI, "must be the bare 32-byte key; it is 44 bytes"),
        ("v=DKIM1; k=ed25519; p=" + RSA2048, "must be the bare 32-byte key"),
        ("v=DKIM1; k=ed25519; p=QUJD", "it is 3 bytes"),
        ("v=DKIM1; p=" + ED_SPKI, "p= holds a key of type Ed25519, not the RSA key k=rsa"),
        ("v=DKIM1; h=sha1; p=" + RSA2048, "h=sha1 does not allow sha256; verifiers reject sha1"),
        ("v=DKIM1; s=tlsrpt; p=" + RSA2048, "s=tlsrpt: the key is not for email"),
        ("k=rsa; v=DKIM1; p=" + RSA2048, "v=DKIM1 must be the first tag"),
    ],
)
def test_errors_name_what_is_wrong(text: str, fragment: str) -> None:
    key = parse_key_record(text)
    assert any(fragment in e for e in key.errors), key.errors


def test_revoked_key() -> None:
    key = parse_key_record("v=DKIM1; p=")
    assert key.revoked and key.bits is None
    assert key.errors == (
        "p= is empty: the key is revoked, and signatures with this selector fail",
    )


def test_ec_key_in_an_rsa_record() -> None:
    spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    assert key_bits("rsa", base64.b64encode(spki).decode()) == (
        None,
        "p= holds a key of type EC, not the RSA key k=rsa declares",
    )


def test_testing_mode_is_a_warning() -> None:
    key = parse_key_record(f"v=DKIM1; t=y:s; p={RSA2048}")
    assert key.testing and key.flags == ("y", "s") and key.errors == ()
    assert key.warnings == (
        "t=y: testing mode; verifiers may treat mail signed with this key as unsigned",
    )


def test_service_star_and_email_are_fine() -> None:
    assert parse_key_record(f"s=*; p={RSA2048}").errors == ()
    assert parse_key_record(f"s=email:other; p={RSA2048}").errors == ()


def test_unknown_hashes_next_to_sha256_are_fine() -> None:
    assert parse_key_record(f"h=sha256:sha512; p={RSA2048}").errors == ()
