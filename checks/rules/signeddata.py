"""CMS SignedData (RFC 5652) as Apple configuration profiles are signed: who
signed, if that can be shown.

A profile names its signer by carrying a certificate, and anyone can copy a
certificate. So "signed by X" is said only once X's key is shown to have
signed this very content (the signature over the signed attributes, whose
message digest is the content's, or over the content itself when there are
none) and X's certificate leads, through the certificates the profile carries,
to a root in the system store or the operator's CA file: the store
`checks.rules.tls` judges servers' chains with. Anything short of that is a reason,
never an exception.

Pure: the caller parsed the structure with asn1crypto; this reads it (lazily
parsed, so anything odd surfaces here and becomes a reason) and verifies with
`cryptography` and OpenSSL. The work is bounded: one signer is verified, and a
profile carrying more than MAX_CERTIFICATES certificates is not verified at all.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from checks.core.text import untrusted
from checks.rules import tls

MAX_CERTIFICATES = 20  # a signer, its intermediates, perhaps a root: real profiles carry 1 to 4

# Digests a signature may use. MD5 is left out: a collision is cheap enough to
# make two profiles with one signature.
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class Verdict:
    signer: str | None  # the signing certificate's subject (RFC 4514), once all verified
    unverified: str | None  # otherwise why not: "the signer's certificate (…) is self-signed…"
    notes: tuple[str, ...] = ()  # what was left unchecked, for the profile's warnings


def verify(
    signed_data: Any, content: bytes, ca_file: str | None, now: datetime | None = None
) -> Verdict:
    """Who signed `content` (the encapsulated content of `signed_data`, an
    asn1crypto cms.SignedData), judged against the system roots plus `ca_file`."""
    try:
        return _verify(signed_data, content, ca_file, now or datetime.now(UTC))
    except Exception as exc:  # asn1crypto parses lazily; cryptography refuses odd keys
        return Verdict(
            None, f"the signature cannot be read ({untrusted(str(exc) or type(exc).__name__, 80)})"
        )


def _verify(signed_data: Any, content: bytes, ca_file: str | None, now: datetime) -> Verdict:
    choices = list(signed_data["certificates"] or [])
    if len(choices) > MAX_CERTIFICATES:
        return Verdict(
            None,
            f"the signature carries {len(choices)} certificates; this check reads at most "
            f"{MAX_CERTIFICATES}, so it did not verify the signature",
        )
    certificates = [choice.chosen for choice in choices if choice.name == "certificate"]
    signer_infos = list(signed_data["signer_infos"])
    if not signer_infos:
        return Verdict(None, "the signature names no signer")
    notes: tuple[str, ...] = ()
    if len(signer_infos) > 1:
        notes = (f"the profile has {len(signer_infos)} signatures; this check verified the first",)
    signer_info = signer_infos[0]
    found = _find_signer(signer_info["sid"], certificates)
    if found is None:
        return Verdict(
            None, "the signer's certificate is not in the profile, so who signed it is unknown"
        )
    try:
        certificate = x509.load_der_x509_certificate(found.dump())
    except ValueError:
        return Verdict(None, "the signer's certificate cannot be read, so who signed it is unknown")
    subject = untrusted(certificate.subject.rfc4514_string(), 500)
    content_type = signed_data["encap_content_info"]["content_type"].native
    why = _signature_problem(signer_info, content, content_type, certificate, subject)
    if why is None:
        why = _certificate_problem(found.dump(), certificates, found, ca_file, subject, now)
    return Verdict(subject if why is None else None, why, notes)


def _signature_problem(
    signer_info: Any, content: bytes, content_type: str, certificate: x509.Certificate, subject: str
) -> str | None:
    """Why the signature does not show that `certificate`'s key signed `content`, or None."""
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    digest = _DIGESTS.get(digest_name)
    if digest is None:
        name = untrusted(str(digest_name), 40)
        return f"the signature uses the digest {name}, which this check does not accept"
    signed_attrs = signer_info["signed_attrs"]
    if len(signed_attrs):
        # RFC 5652 5.4: the signature covers the attributes, DER-encoded as a
        # SET OF (tag 0x31), not as the [0] IMPLICIT they travel in; the content
        # is bound to them by the message-digest attribute.
        attributes = {attr["type"].native: attr["values"] for attr in signed_attrs}
        if "message_digest" not in attributes or not len(attributes["message_digest"]):
            return "the signed attributes carry no message digest, so they do not cover the profile"
        signed_type = attributes.get("content_type")
        if signed_type is not None and len(signed_type) and signed_type[0].native != content_type:
            return "the signed attributes name another content type than the profile's"
        hasher = hashes.Hash(digest())
        hasher.update(content)
        if not hmac.compare_digest(hasher.finalize(), attributes["message_digest"][0].native):
            return (
                "the profile was changed after it was signed: its digest is not the one the "
                f"signer's certificate ({subject}) signed"
            )
        data = b"\x31" + signed_attrs.dump()[1:]
    else:
        data = content
    algorithm = signer_info["signature_algorithm"]
    signature = signer_info["signature"].native
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pss":
            key.verify(signature, data, _pss(algorithm["parameters"]), digest())
        elif isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pkcs1v15":
            key.verify(signature, data, padding.PKCS1v15(), digest())
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm.signature_algo == "ecdsa":
            key.verify(signature, data, ec.ECDSA(digest()))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            name = untrusted(str(algorithm["algorithm"].native), 40)
            return f"the signature's algorithm ({name}) is not one this check verifies"
    except InvalidSignature:
        return (
            f"the signature does not match the signer's certificate ({subject}): the profile "
            "was changed after it was signed, or signed with another key"
        )
    return None


def _pss(parameters: Any) -> padding.PSS:
    """RSASSA-PSS as the signature says (RFC 4055): its MGF1 hash and salt length."""
    mgf_hash = _DIGESTS.get(parameters["mask_gen_algorithm"]["parameters"]["algorithm"].native)
    if mgf_hash is None:
        raise ValueError("unsupported RSASSA-PSS mask generation hash")
    return padding.PSS(padding.MGF1(mgf_hash()), parameters["salt_length"].native)


def _certificate_problem(
    leaf_der: bytes,
    certificates: list[Any],
    leaf: Any,
    ca_file: str | None,
    subject: str,
    now: datetime,
) -> str | None:
    """Why the signer's certificate is not to be trusted now, or None."""
    others = tuple(c.dump() for c in certificates if c is not leaf and _readable(c.dump()))
    error = tls.chain_error((leaf_der, *others), ca_file)
    if error is not None:
        code, message = error
        if code == tls.V_DEPTH_ZERO_SELF_SIGNED:
            return (
                f"the signer's certificate ({subject}) is self-signed, so anyone could have made it"
            )
        return (
            f"the signer's certificate ({subject}) does not lead to a trusted root "
            f"({untrusted(message, 120)})"
        )
    certificate = x509.load_der_x509_certificate(leaf_der)
    if now < certificate.not_valid_before_utc:
        return (
            f"the signer's certificate ({subject}) is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d}"
        )
    if now > certificate.not_valid_after_utc:
        return (
            f"the signer's certificate ({subject}) expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}"
        )
    return None


def _readable(der: bytes) -> bool:
    """Whether OpenSSL can use a certificate the profile carries; one it cannot
    is no help in building the chain, and must not stop the verdict."""
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return True


def _find_signer(sid: Any, certificates: list[Any]) -> Any:
    for certificate in certificates:
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            if (
                certificate.issuer == wanted["issuer"]
                and certificate.serial_number == wanted["serial_number"].native
            ):
                return certificate
        elif sid.name == "subject_key_identifier" and certificate.key_identifier == sid.native:
            return certificate
    return None
