"""DKIM public-key records (RFC 6376 3.6.1; ed25519 keys from RFC 8463).

A key lives in a TXT record at `<selector>._domainkey.<domain>`. Selectors
cannot be listed, so the policy stage tries `COMMON_SELECTORS`.

`parse_key_record` raises `DKIMError` when verifiers would reject the record
as a whole (broken tag list, duplicate tag, wrong version, no p=); otherwise
the key comes back with `errors` (signatures with it fail: revoked, bad key,
too short, not for email) and `warnings` (works, but weak or in testing).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from checks.core.errors import MailcheckError
from checks.core.text import untrusted

# Where providers put their keys. selector1 and selector2 are Microsoft 365's
# pair (CNAMEs to selectorN-<domain>._domainkey.<tenant>.onmicrosoft.com, one
# active at a time, so both are worth a look); google is Google Workspace's,
# k1/k2 Mailchimp's, s1/s2 SendGrid's; default, mail and dkim are what
# OpenDKIM, rspamd and control panels suggest.
COMMON_SELECTORS: tuple[str, ...] = (
    "default",
    "selector1",
    "selector2",
    "google",
    "k1",
    "k2",
    "s1",
    "s2",
    "mail",
    "dkim",
)
KEY_TYPES = ("rsa", "ed25519")
RSA_MINIMUM = 1024  # RFC 8301: verifiers must not accept shorter keys
RSA_RECOMMENDED = 2048
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_FWS = re.compile(r"\s+")


class DKIMError(MailcheckError, ValueError):
    """Verifiers would reject this key record outright; the message says why."""


@dataclass(frozen=True)
class DKIMKey:
    text: str
    key_type: str = "rsa"  # as published in k= (rsa when absent)
    public_key: str = ""  # p= without whitespace; "" = revoked
    bits: int | None = None  # None when there is no usable key
    hashes: tuple[str, ...] | None = None  # h=; None = any
    services: tuple[str, ...] = ("*",)  # s=
    flags: tuple[str, ...] = ()  # t=: y (testing), s (no subdomains in i=)
    notes: str = ""  # n=
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def revoked(self) -> bool:
        return not self.public_key

    @property
    def testing(self) -> bool:
        return "y" in self.flags


def selector_name(selector: str, domain: str) -> str:
    """The TXT name holding a selector's key."""
    return f"{selector}._domainkey.{domain.rstrip('.')}"


def parse_tags(text: str) -> dict[str, str]:
    """An RFC 6376 3.2 tag list. Raises DKIMError on a malformed or repeated tag."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not _TAG_NAME.fullmatch(name):
            raise DKIMError(f"'{untrusted(part.strip(), 60)}' is not a tag=value pair")
        if name in tags:
            raise DKIMError(f"tag {name}= appears more than once; verifiers reject the record")
        tags[name] = value.strip()
    return tags


def parse_key_record(text: str) -> DKIMKey:
    """The key record as a verifier reads it. Raises DKIMError if they would reject it."""
    tags = parse_tags(text)
    errors: list[str] = []
    warnings: list[str] = []
    if "v" in tags:
        if tags["v"] != "DKIM1":
            raise DKIMError(f"v={untrusted(tags['v'], 20)}: the version must be DKIM1")
        if next(iter(tags)) != "v":
            errors.append("v=DKIM1 must be the first tag; strict verifiers reject the record")
    if "p" not in tags:
        raise DKIMError("no p= tag: the record holds no public key")

    key_type = tags.get("k", "rsa")
    public_key = _FWS.sub("", tags["p"])
    bits = None
    if key_type not in KEY_TYPES:
        errors.append(
            f"k={untrusted(key_type, 20)} is not rsa or ed25519; verifiers cannot use this key"
        )
    elif not public_key:
        errors.append("p= is empty: the key is revoked, and signatures with this selector fail")
    else:
        bits, problem = key_bits(key_type, public_key)
        if problem:
            errors.append(problem)
    if key_type == "rsa" and bits is not None and bits < RSA_MINIMUM:
        errors.append(
            f"RSA key is {bits} bits; verifiers reject keys under {RSA_MINIMUM} bits (RFC 8301)"
        )
    elif key_type == "rsa" and bits is not None and bits < RSA_RECOMMENDED:
        warnings.append(f"RSA key is {bits} bits; use {RSA_RECOMMENDED} bits (RFC 8301)")

    hashes = _list(tags["h"]) if "h" in tags else None
    if hashes is not None and "sha256" not in hashes:
        errors.append(
            f"h={untrusted(tags['h'], 30)} does not allow sha256; verifiers reject sha1 "
            "signatures (RFC 8301): use h=sha256 or leave h= out"
        )
    services = _list(tags.get("s", "*"))
    if not {"*", "email"} & set(services):
        errors.append(
            f"s={untrusted(tags['s'], 30)}: the key is not for email (needs s=email or *)"
        )
    flags = _list(tags.get("t", ""))
    if "y" in flags:
        warnings.append(
            "t=y: testing mode; verifiers may treat mail signed with this key as unsigned"
        )
    return DKIMKey(
        text=text,
        key_type=key_type,
        public_key=public_key,
        bits=bits,
        hashes=hashes,
        services=services,
        flags=flags,
        notes=tags.get("n", ""),
        errors=tuple(errors),
        warnings=tuple(warnings),
    )


def key_bits(key_type: str, public_key: str) -> tuple[int | None, str]:
    """(key size in bits, "") or (None, what is wrong with p=)."""
    try:
        der = base64.b64decode(public_key, validate=True)
    except (binascii.Error, ValueError):
        hint = " (paste only the base64 between the PEM lines)" if "-----" in public_key else ""
        return None, f"p= is not valid base64{hint}"
    if key_type == "ed25519":
        if len(der) != 32:  # RFC 8463: the bare key, not a SubjectPublicKeyInfo
            hint = " (a SubjectPublicKeyInfo: publish only its last 32 bytes)" * (len(der) == 44)
            return (
                None,
                f"p= for k=ed25519 must be the bare 32-byte key; it is {len(der)} bytes{hint}",
            )
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(der)
        except ValueError:
            return None, "p= is not a valid ed25519 public key"
        return 256, ""
    try:
        key = load_der_public_key(der)
    except (ValueError, TypeError):
        return None, "p= is not a DER-encoded public key (SubjectPublicKeyInfo)"
    if not isinstance(key, rsa.RSAPublicKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PublicKey")
        return None, f"p= holds a key of type {kind}, not the RSA key k=rsa declares"
    return key.key_size, ""


def _list(value: str) -> tuple[str, ...]:
    return tuple(i.strip() for i in value.split(":") if i.strip())
