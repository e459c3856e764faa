"""DANE for SMTP (RFC 6698, RFC 7671, RFC 7672): TLSA records against a chain.

Pure rules, no network: the caller looks up `_25._tcp.<mx>` TLSA records
(DNSSEC-validated) and shakes hands with the MX; `match` says whether a
DANE-verifying sender would accept the certificates the server sent, and if
not, what the server's certificates would need the records to say.

SMTP uses only DANE-TA(2) and DANE-EE(3) (RFC 7672 §3.1.3). A DANE-EE match
is the whole verdict: names and dates do not count (§3.1.1). A DANE-TA match
needs the server's certificate to chain to the matched certificate, to carry
the host name and to be within its dates (§3.1.2, §3.2). Nothing here raises
on what a server or a zone can send: bad input becomes a problem in the verdict.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from checks.core.text import untrusted
from checks.rules.tls import CertInfo, match_hostname, parse_cert, validity_problem

PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
CERT, SPKI = 0, 1
FULL, SHA256, SHA512 = 0, 1, 2

USAGES = {PKIX_TA: "PKIX-TA", PKIX_EE: "PKIX-EE", DANE_TA: "DANE-TA", DANE_EE: "DANE-EE"}
SELECTORS = {CERT: "Cert", SPKI: "SPKI"}
MTYPES = {FULL: "Full", SHA256: "SHA2-256", SHA512: "SHA2-512"}
DIGEST_SIZES = {SHA256: 32, SHA512: 64}
MAX_CHAIN = 16  # certificates considered; real chains hold 2 to 4
SHORT_HEX = 16  # hex characters shown of a digest in a sentence
_MAX_SHOWN_HEX = 160  # never more, even where values share a long prefix

_WHAT = {
    (CERT, FULL): "full certificate",
    (SPKI, FULL): "full public key",
    (CERT, SHA256): "SHA-256 of the certificate",
    (SPKI, SHA256): "SHA-256 of the public key",
    (CERT, SHA512): "SHA-512 of the certificate",
    (SPKI, SHA512): "SHA-512 of the public key",
}
# RFC 7218 acronyms, accepted by `parse` in place of the numbers.
_MNEMONICS = (
    {name.lower(): n for n, name in USAGES.items()} | {"privcert": 255},
    {name.lower(): n for n, name in SELECTORS.items()} | {"privsel": 255},
    {name.lower(): n for n, name in MTYPES.items()} | {"privmatch": 255},
)
_FIELDS = ("usage", "selector", "matching type")


@dataclass(frozen=True)
class TLSA:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def text(self) -> str:
        """Presentation form, as dig shows it (hex in lower case, in one piece)."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}".rstrip()

    def short(self, others: Sequence[bytes] = ()) -> str:
        """Presentation form with the data cut to a readable, unambiguous prefix."""
        return f"{self.usage} {self.selector} {self.mtype} {_short(self.data, others)}".rstrip()

    @property
    def usable(self) -> bool:
        """RFC 7672 §3.1.3: senders use only DANE-TA(2) and DANE-EE(3) records
        with a known selector and matching type and a digest of the right size."""
        return not self.why_unusable

    @property
    def why_unusable(self) -> str:
        """Why SMTP senders ignore this record ("" if they use it)."""
        if self.usage in (PKIX_TA, PKIX_EE):
            return (
                f"{self.kind}: SMTP senders treat PKIX usages as unusable "
                "(no CA list is agreed on for SMTP, RFC 7672 §3.1.3)"
            )
        if self.usage not in (DANE_TA, DANE_EE):
            return f"certificate usage {self.usage} is not defined"
        if self.selector not in SELECTORS:
            return f"selector {self.selector} is not defined (0 certificate, 1 public key)"
        if self.mtype not in MTYPES:
            return f"matching type {self.mtype} is not defined (0 full, 1 SHA-256, 2 SHA-512)"
        size = DIGEST_SIZES.get(self.mtype)
        if size is not None and len(self.data) != size:
            return (
                f"a {MTYPES[self.mtype]} digest is {size} bytes ({2 * size} hex digits); "
                f"this record carries {len(self.data)}"
            )
        if not self.data:
            return "the record carries no data"
        return ""

    @property
    def kind(self) -> str:
        """The usage as RFC 7218 writes it: "DANE-EE(3)"."""
        return f"{USAGES.get(self.usage, 'usage')}({self.usage})"


def from_rdata(rdata: Any) -> TLSA:
    """A dnspython TLSA rdata (`usage`, `selector`, `mtype`, `cert`) as a TLSA."""
    return TLSA(int(rdata.usage), int(rdata.selector), int(rdata.mtype), bytes(rdata.cert))


def parse(text: str) -> TLSA:
    """ "3 1 1 <hex>" (hex may be split by spaces, as in zone files; RFC 7218
    acronyms such as "DANE-EE SPKI SHA2-256" stand for the numbers).
    Raises ValueError saying what is wrong."""
    parts = text.replace("(", " ").replace(")", " ").split()
    if len(parts) < 4:
        raise ValueError(
            f"'{untrusted(text, 80)}' is not a TLSA record: expected usage, selector, "
            "matching type and hex data, as in '3 1 1 <64 hex digits>'"
        )
    numbers = []
    for field, word, mnemonics in zip(_FIELDS, parts[:3], _MNEMONICS, strict=True):
        value = mnemonics.get(word.lower())
        if value is None:
            if not (word.isascii() and word.isdigit() and int(word) <= 255):
                raise ValueError(f"{field} '{untrusted(word, 20)}' is not a number from 0 to 255")
            value = int(word)
        numbers.append(value)
    hexdata = "".join(parts[3:])
    try:
        data = bytes.fromhex(hexdata)
    except ValueError:
        bad = next((c for c in hexdata if c not in "0123456789abcdefABCDEF"), None)
        what = f"has '{untrusted(bad)}'" if bad else f"has an odd number ({len(hexdata)}) of digits"
        raise ValueError(f"the certificate association data is not hex: it {what}") from None
    return TLSA(numbers[0], numbers[1], numbers[2], data)


def association(cert_der: bytes, selector: int, mtype: int) -> bytes:
    """What a TLSA record with this selector and matching type carries for this
    certificate. Selector 1 is the SubjectPublicKeyInfo exactly as encoded in the
    certificate. Raises ValueError for a DER blob that is no certificate, or an
    undefined selector or matching type."""
    cert = _load(cert_der)
    if selector == CERT:
        selected = cert_der
    elif selector == SPKI:
        selected = _spki(cert)
    else:
        raise ValueError(f"selector {selector} is not defined")
    return _digest(selected, mtype)


def record_for(
    cert_der: bytes, usage: int = DANE_EE, selector: int = SPKI, mtype: int = SHA256
) -> str:
    """The TLSA record (presentation form) that pins this certificate: for
    DANE-EE pass the server's certificate, for DANE-TA the CA's."""
    return TLSA(usage, selector, mtype, association(cert_der, selector, mtype)).text()


# -- the verdict ----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    matched: TLSA | None  # the record that matched, None if none did
    depth: int | None  # where in the chain as sent (0 = the server's certificate)
    unusable: tuple[TLSA, ...]  # records senders ignore; `TLSA.why_unusable` says why
    problems: tuple[str, ...]  # sentences for the on-call engineer

    @property
    def ok(self) -> bool:
        """Would a DANE-verifying sender accept the server? (`matched` can be set
        with problems: a DANE-TA digest matched but the name or dates did not.)"""
        return self.matched is not None and not self.problems


@dataclass(frozen=True)
class _Cert:
    depth: int
    der: bytes
    cert: x509.Certificate | None
    info: CertInfo | None
    self_issued: bool
    error: str  # why `cert` is None

    @property
    def label(self) -> str:
        """ "the server's certificate (CN=...)", "the certificate at depth 1 (CN=...)"."""
        where = "the server's certificate" if self.depth == 0 else f"the certificate at {self.tag}"
        return f"{where} ({self.info.subject})" if self.info else where

    @property
    def tag(self) -> str:
        return f"depth {self.depth}"


def match(records: Sequence[TLSA], chain_der: Sequence[bytes], host: str, now: datetime) -> Verdict:
    """Would a DANE-verifying SMTP sender (RFC 7672) accept this chain, as the
    server sent it, for `host` (the TLSA base domain) at `now`? Any one usable
    record that matches is enough (RFC 6698 §2.1)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    usable = [r for r in records if r.usable]
    unusable = tuple(r for r in records if not r.usable)
    chain = [_read(depth, der) for depth, der in enumerate(chain_der[:MAX_CHAIN])]
    notes: tuple[str, ...] = ()
    if len(chain_der) > MAX_CHAIN:
        notes = (
            f"the server sends {len(chain_der)} certificates; only the first {MAX_CHAIN} "
            "were considered (senders give up on long chains)",
        )

    if not records:
        return Verdict(None, None, (), ("there are no TLSA records to check", *notes))
    if not usable:
        return Verdict(None, None, unusable, (*_all_unusable(unusable, chain), *notes))
    if not chain:
        return Verdict(None, None, unusable, ("the server sent no certificate", *notes))
    if chain[0].cert is None:
        problem = f"the server's certificate cannot be read: {chain[0].error}"
        return Verdict(None, None, unusable, (problem, *notes))

    path = _path(chain)
    first: tuple[TLSA, int, list[str]] | None = None
    for record in usable:
        for cert in _matches(record, chain):
            problems = _after_match(record, cert, chain, path, host, now)
            if not problems:
                return Verdict(record, cert.depth, unusable, notes)
            first = first or (record, cert.depth, problems)
    if first is not None:
        record, depth, problems = first
        return Verdict(record, depth, unusable, (*problems, *notes))
    return Verdict(None, None, unusable, (*_mismatch(usable, unusable, chain), *notes))


def _read(depth: int, der: bytes) -> _Cert:
    try:
        cert = _load(der)
        self_issued = cert.issuer == cert.subject
    except ValueError as exc:
        return _Cert(depth, der, None, None, False, str(exc))
    except Exception as exc:  # a name cryptography reads lazily and chokes on
        error = f"its names cannot be read ({untrusted(str(exc), 120)})"
        return _Cert(depth, der, None, None, False, error)
    try:
        info: CertInfo | None = parse_cert(der)
    except Exception:  # an unknown key type or a broken field: digests still work
        info = None
    return _Cert(depth, der, cert, info, self_issued, "")


def _matches(record: TLSA, chain: list[_Cert]) -> list[_Cert]:
    """The certificates of the chain this record's data matches, where its usage
    allows: DANE-EE only the server's own; DANE-TA any other, and the server's
    own only if it is self-issued (its own trust anchor)."""
    if not chain:
        return []
    if record.usage == DANE_EE:
        candidates = chain[:1]
    elif chain[0].self_issued:
        candidates = chain
    else:
        candidates = chain[1:]
    return [c for c in candidates if _value(c, record.selector, record.mtype) == record.data]


def _after_match(
    record: TLSA, ta: _Cert, chain: list[_Cert], path: list[int], host: str, now: datetime
) -> list[str]:
    """What still keeps a DANE-TA sender from accepting the server once the
    record matched `ta`: the path to it, the name, the dates (RFC 7672 §3.1.2)."""
    if record.usage == DANE_EE:
        return []  # RFC 7672 §3.1.1: no name checks, no dates, no chain
    leaf = chain[0]
    problems = []
    if ta.depth == 0:
        below = [leaf]
    elif ta.depth in path:
        below = [chain[d] for d in path[: path.index(ta.depth)]]
    else:
        top = chain[path[-1]]
        issuer = top.info.issuer if top.info else "an issuer whose name cannot be read"
        problems.append(
            f"{record.short()} matches {ta.label}, but the server's certificate does not "
            f"chain to it: the chain as sent stops at {top.label}, issued by {issuer}; either "
            "the record names the wrong CA or the server must also send the certificates "
            "between them"
        )
        below = [leaf]
    if leaf.info is None:
        return [*problems, "the names and dates of the server's certificate cannot be read"]
    if not match_hostname(host, leaf.info.sans):
        names = ", ".join(leaf.info.sans[:8]) or "none"
        more = f" and {len(leaf.info.sans) - 8} more" if len(leaf.info.sans) > 8 else ""
        name = untrusted(host.rstrip("."), 255)
        problems.append(
            f"the server's certificate is not valid for {name} (its names: {names}{more}); "
            "with DANE-TA records senders check the name (RFC 7672 §3.2.2)"
        )
    for cert in below:
        problem = validity_problem(cert.info, now) if cert.info else None
        if problem and problem.code in ("tls.cert.expired", "tls.cert.not_yet_valid"):
            what = problem.summary.removeprefix("certificate ")
            problems.append(f"{cert.label} {what}; with DANE-TA records senders check the dates")
    return problems


def _path(chain: list[_Cert]) -> list[int]:
    """Depths of the certificates from the server's up through their issuers
    among those sent, in any order (as senders build it), ending at a
    self-issued one or where no issuer was sent."""
    path = [0]
    while len(path) < len(chain):
        current = chain[path[-1]]
        if current.self_issued:
            break
        issuer = next(
            (c for c in chain if c.depth not in path and _issued_by(current, c)),
            None,
        )
        if issuer is None:
            break
        path.append(issuer.depth)
    return path


def _issued_by(cert: _Cert, issuer: _Cert) -> bool:
    if cert.cert is None or issuer.cert is None:
        return False
    try:
        if cert.cert.issuer != issuer.cert.subject:
            return False
        cert.cert.verify_directly_issued_by(issuer.cert)
    except InvalidSignature:
        return False
    except Exception:  # a signature algorithm we cannot check: the names agree
        return True
    return True


# -- explaining a mismatch -----------------------------------------------------------------


def _mismatch(usable: list[TLSA], unusable: tuple[TLSA, ...], chain: list[_Cert]) -> list[str]:
    """Why nothing matched, with what the server's certificates would need the
    records to say, in the records' own shapes, next to what they do say."""
    problems = ["no TLSA record matches the certificates the server sent"]
    hints = _hints([*usable, *unusable], chain)
    for usage, certs in (
        (DANE_EE, chain[:1]),
        (DANE_TA, chain if chain[0].self_issued else chain[1:]),
    ):
        records = [r for r in usable if r.usage == usage]
        if not records:
            continue
        shapes = list(dict.fromkeys((r.selector, r.mtype) for r in records))
        needed = [
            (cert, TLSA(usage, s, m, value))
            for cert in certs
            for s, m in shapes
            if (value := _value(cert, s, m)) is not None
        ]
        shown = [r.data for r in records] + [n.data for _c, n in needed]
        are = ", ".join(r.short(shown) for r in records)
        if usage == DANE_EE:
            need = ", ".join(f"{n.short(shown)} ({_WHAT[n.selector, n.mtype]})" for _c, n in needed)
            problems.append(
                f"the server's certificate would need {need or 'a record nothing can compute'}; "
                f"the DANE-EE records are {are}"
            )
            continue
        if needed:
            need = ", ".join(
                f"{n.short(shown)} ({c.tag}{', ' + c.info.subject if c.info else ''})"
                for c, n in needed
            )
            problems.append(
                f"the CA certificates the server sends would need {need}; "
                f"the DANE-TA records are {are}"
            )
        else:
            problems.append(
                f"the DANE-TA records are {are}, but the server sends no CA certificate "
                "to match them against"
            )
        if all(r in hints for r in records):
            continue
        problems.append(
            "a DANE-TA record must match a certificate the server sends: senders cannot "
            "match a digest against a certificate they never see, so the server must send "
            "the TA certificate in its chain, even a self-signed root (RFC 7672 §3.1.2, "
            "RFC 7671 §5.2.2)"
        )
    problems += hints.values()
    return problems


def _all_unusable(unusable: tuple[TLSA, ...], chain: list[_Cert]) -> list[str]:
    fallback = "SMTP senders treat them as unusable and fall back to unauthenticated TLS"
    if all(r.usage in (PKIX_TA, PKIX_EE) for r in unusable):
        kinds = " and ".join(sorted({r.kind for r in unusable}))
        first = f"only {kinds} records: {fallback} (RFC 7672 §3.1.3)"
    else:
        reasons = "; ".join(f"{r.short()}: {r.why_unusable}" for r in unusable[:6])
        more = f"; and {len(unusable) - 6} more" if len(unusable) > 6 else ""
        first = f"no usable TLSA record ({reasons}{more}): {fallback} (RFC 7672 §2.2)"
    problems = [first, *_hints(unusable, chain).values()]
    if len(problems) == 1 and chain and chain[0].cert is not None:
        with contextlib.suppress(ValueError):
            problems.append(f"to pin the server's current key, publish {record_for(chain[0].der)}")
    return problems


def _hints(records: Sequence[TLSA], chain: list[_Cert]) -> dict[TLSA, str]:
    """Records whose data is right but whose usage is wrong: PKIX-EE(1) or
    PKIX-TA(0) records (SMTP ignores them), a DANE-TA record naming the
    server's own certificate, a DANE-EE record naming a CA's."""
    found: dict[TLSA, str] = {}
    for record in records:
        if record.selector not in SELECTORS or record.mtype not in MTYPES:
            continue
        ee_first = record.usage in (PKIX_EE, DANE_TA)
        for usage in (DANE_EE, DANE_TA) if ee_first else (DANE_TA, DANE_EE):
            fixed = TLSA(usage, record.selector, record.mtype, record.data)
            if usage == record.usage or not fixed.usable or not _matches(fixed, chain):
                continue
            if record.usage in (PKIX_TA, PKIX_EE):
                why = f"SMTP senders ignore {record.kind} records"
            elif usage == DANE_EE:
                why = "it is the server's own certificate, not a CA's"
            else:
                why = "it is a CA certificate the server sends, not the server's own"
            found[record] = (
                f"{record.short()} has the right data, but {why}: publish {fixed.short()}"
            )
            break
        if len(found) >= 4:
            break
    return found


# -- digests and DER ----------------------------------------------------------------------


def _value(cert: _Cert, selector: int, mtype: int) -> bytes | None:
    if cert.cert is None:
        return None
    try:
        selected = cert.der if selector == CERT else _spki(cert.cert)
        return _digest(selected, mtype)
    except Exception:  # a certificate cryptography loads but cannot take apart
        return None


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == FULL:
        return data
    if mtype == SHA256:
        return hashlib.sha256(data).digest()
    if mtype == SHA512:
        return hashlib.sha512(data).digest()
    raise ValueError(f"matching type {mtype} is not defined")


def _load(der: bytes) -> x509.Certificate:
    if not der:
        raise ValueError("it is empty")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ValueError(
            f"it is not a DER X.509 certificate ({untrusted(str(exc), 120)})"
        ) from None


def _spki(cert: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo as the certificate encodes it: the seventh
    element of TBSCertificate (sixth without the [0] version). Taken as sent
    rather than re-encoded from the key, which `cryptography` cannot do for
    every key type and which would change the digest for RSA-PSS keys."""
    tbs = cert.tbs_certificate_bytes
    _tag, start, end = _tlv(tbs, 0)
    pos = start
    index = 0
    while pos < end:
        tag, _body, after = _tlv(tbs, pos)
        if index == 0 and tag == 0xA0:  # the explicit version: skip it
            pos = after
            continue
        if index == 5:
            if tag != 0x30:
                break
            return tbs[pos:after]
        index += 1
        pos = after
    raise ValueError("the certificate's public key cannot be found")


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at pos."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, first = der[pos], der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _short(value: bytes, others: Sequence[bytes] = ()) -> str:
    """Hex of value cut to SHORT_HEX digits plus "…", longer where needed to
    tell it apart from the other values shown with it; where even
    _MAX_SHOWN_HEX digits do not (full keys differing only near the end), the
    length and SHA-256 of the whole value are added."""
    full = value.hex()
    rivals = [o.hex() for o in others if o != value]
    n = SHORT_HEX
    while n < len(full) and any(r[:n] == full[:n] for r in rivals):
        if n >= _MAX_SHOWN_HEX:
            sha = hashlib.sha256(value).hexdigest()[:SHORT_HEX]
            return f"{full[:SHORT_HEX]}… ({len(value)} bytes, SHA-256 {sha}…)"
        n += 8
    return full if n >= len(full) else full[:n] + "…"


# -- by hand ------------------------------------------------------------------------------


def reproduce(host: str, port: int, records: Sequence[TLSA]) -> str:
    """An openssl command that repeats the DANE check by hand: STARTTLS except
    on port 465, DANE-EE without name checks (RFC 7672 §3.1.1), one
    -dane_tlsa_rrdata per usable record. Look for "Verification: OK" and the
    "DANE TLSA ... matched" line."""
    name = shlex.quote(host.rstrip("."))
    words = [f"openssl s_client -connect {name}:{port}"]
    if port != 465:
        words.append("-starttls smtp")
    words += [f"-servername {name}", f"-dane_tlsa_domain {name}", "-dane_ee_no_namechecks"]
    words += [f'-dane_tlsa_rrdata "{r.text()}"' for r in records if r.usable]
    return " ".join(words)
