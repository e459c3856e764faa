"""DMARC policy records (RFC 7489, with DMARCbis's np, psd and t tags).

Pure rules, no network: `select` picks the record out of the TXT set at
`_dmarc.<domain>`, `parse_record` reads it the way a receiver does,
`weaknesses` says where a valid policy is weak, and `external_destinations`
names the authorisation records a report address at another organisation
needs (RFC 7489 7.1), which `authorizes` judges.

`parse_record` raises `DMARCError` only when receivers would ignore the whole
record; otherwise the record comes back with `errors` (a tag receivers discard
or read differently from what the publisher meant) and `warnings` (works, but
odd). Every message names the tag and value at fault.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from publicsuffixlist import PSLFILE, PublicSuffixList

from checks.core.errors import MailcheckError
from checks.core.text import untrusted
from checks.rules.records import select_versioned

POLICIES = ("none", "quarantine", "reject")  # weakest first
TAGS = frozenset(
    {"v", "p", "sp", "np", "pct", "rua", "ruf", "adkim", "aspf", "fo", "rf", "ri", "psd", "t"}
)
_VERSION = re.compile(r"v[ \t]*=[ \t]*DMARC1[ \t]*(;|$)")  # the value is case-sensitive
_LOOKALIKE = re.compile(r"\s*v\s*=\s*dmarc", re.IGNORECASE)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SIZE = re.compile(r"(\d+)([kmgt]?)", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_FO = frozenset({"0", "1", "d", "s"})
MAX_URIS = 2  # receivers must send to at least two rua/ruf addresses, may stop there


class DMARCError(MailcheckError, ValueError):
    """Receivers would ignore this record altogether; the message says why."""


@dataclass(frozen=True)
class ReportURI:
    uri: str  # as published, size limit included: "mailto:d@example.com!10m"
    scheme: str  # lower case: "mailto"
    address: str  # the URI without its size limit
    domain: str  # where reports go: the mailbox's domain or the URL's host, lower case
    max_size: int | None = None  # bytes; None when the publisher set no limit


@dataclass(frozen=True)
class DMARCRecord:
    text: str
    p: str  # what receivers apply: "none", "quarantine" or "reject"
    sp: str | None = None  # as published; see subdomain_policy
    np: str | None = None  # DMARCbis: non-existent subdomains
    pct: int = 100
    rua: tuple[ReportURI, ...] = ()
    ruf: tuple[ReportURI, ...] = ()
    adkim: str = "r"
    aspf: str = "r"
    fo: tuple[str, ...] = ("0",)
    rf: tuple[str, ...] = ("afrf",)
    ri: int = 86400
    psd: str = "u"  # DMARCbis: y (a public suffix's record), n, u (unknown)
    t: str = "n"  # DMARCbis: y = testing mode
    p_assumed: bool = False  # p= missing or invalid; applied as p=none because rua= is valid
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def subdomain_policy(self) -> str:
        return self.sp or self.p

    @property
    def nonexistent_policy(self) -> str:
        return self.np or self.subdomain_policy


def is_dmarc(txt: str) -> bool:
    """Whether a TXT record starts with v=DMARC1, the test receivers apply."""
    return _VERSION.match(txt) is not None


def select(txts: list[str]) -> tuple[str | None, list[str]]:
    """(the one DMARC record among the TXT records, or None; the problems found).

    More than one record is a problem receivers answer by applying none.
    """
    return select_versioned(
        txts,
        _VERSION,
        _LOOKALIKE,
        kind="DMARC",
        tag="v=DMARC1",
        readers="receivers",
        near_miss=lambda t: f"receivers ignore it: {_version_problem(t)}",
    )


def parse_record(text: str) -> DMARCRecord:
    """The record as a receiver reads it. Raises DMARCError if they would ignore it."""
    if not is_dmarc(text):
        raise DMARCError(_version_problem(text))
    parts = [part.strip() for part in text.split(";")]
    errors: list[str] = []
    warnings: list[str] = []
    tags: dict[str, str] = {"v": "DMARC1"}
    for part in parts[1:]:
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq or not name:
            errors.append(f"'{untrusted(part, 60)}' is not a tag=value pair; receivers ignore it")
        elif name in tags:
            errors.append(
                f"{name}= appears more than once ({name}={untrusted(tags[name], 40)}, then "
                f"{name}={untrusted(value, 40)}); receivers may use either or ignore the record"
            )
        else:
            tags[name] = value
            if name not in TAGS:
                warnings.append(f"unknown tag {untrusted(name, 30)}= (receivers ignore it)")

    if "p" in tags and list(tags)[1] != "p":
        warnings.append(
            "p= is not the tag right after v=DMARC1; RFC 7489 requires that order "
            "and some strict receivers ignore the record"
        )
    rua = _uris(tags, "rua", errors, warnings)
    ruf = _uris(tags, "ruf", errors, warnings)
    p = _policy(tags, "p")
    sp = _policy(tags, "sp")
    np = _policy(tags, "np")
    fallback = [
        *(["no p= tag"] if "p" not in tags else []),
        *(_not_policy(tags, t) for t in ("p", "sp") if t in tags and _policy(tags, t) is None),
    ]
    assumed = bool(fallback)
    if fallback and not rua:  # RFC 7489 6.6.3 step 6
        rua_errors = [e for e in errors if e.startswith("rua=")]
        raise DMARCError(
            "; ".join(
                [
                    f"{' and '.join(fallback)}, and no valid rua= address: "
                    "receivers ignore the whole record",
                    *rua_errors,
                ]
            )
        )
    if fallback:
        errors.append(
            f"{' and '.join(fallback)}: receivers act as if the record were p=none "
            "(monitoring only), because rua= is valid"
        )
        p, sp, np = "none", None, None
    elif "np" in tags and np is None:
        errors.append(f"{_not_policy(tags, 'np')}; receivers ignore it")

    return DMARCRecord(
        text=text,
        p=p or "none",
        sp=sp,
        np=np,
        pct=_number(tags, "pct", 100, 100, errors),
        rua=rua,
        ruf=ruf,
        adkim=_choice(tags, "adkim", ("r", "s"), errors),
        aspf=_choice(tags, "aspf", ("r", "s"), errors),
        fo=_fo(tags, errors),
        rf=_rf(tags, warnings),
        ri=_number(tags, "ri", 86400, 2**32 - 1, errors),
        psd=_choice(tags, "psd", ("u", "y", "n"), errors),
        t=_choice(tags, "t", ("n", "y"), errors),
        p_assumed=assumed,
        errors=tuple(errors),
        warnings=tuple(warnings),
    )


def _version_problem(text: str) -> str:
    start = text.split(";", 1)[0]
    version = re.match(r"\s*v\s*=\s*(dmarc\S*)", start, re.IGNORECASE)
    if version is None or text[:1].isspace():
        return f"the record must start with v=DMARC1; it starts with '{untrusted(start, 40)}'"
    if not version.group(1).startswith("DMARC1"):
        return f"the version must be exactly DMARC1 (capitals); it is '{untrusted(version[1], 20)}'"
    return f"v=DMARC1 must be followed by ';' before the next tag: '{untrusted(start, 40)}'"


def _policy(tags: dict[str, str], name: str) -> str | None:
    value = tags.get(name, "").lower()
    return value if value in POLICIES else None


def _not_policy(tags: dict[str, str], name: str) -> str:
    return f"{name}={untrusted(tags[name], 40)} is not none, quarantine or reject"


def _number(tags: dict[str, str], name: str, default: int, top: int, errors: list[str]) -> int:
    value = tags.get(name)
    if value is None:
        return default
    if value.isascii() and value.isdigit() and int(value) <= top:
        return int(value)
    errors.append(
        f"{name}={untrusted(value, 40)} is not a whole number from 0 to {top}; "
        f"receivers use {name}={default}"
    )
    return default


def _choice(tags: dict[str, str], name: str, allowed: tuple[str, ...], errors: list[str]) -> str:
    value = tags.get(name)
    if value is None:
        return allowed[0]
    if value.lower() in allowed:
        return value.lower()
    errors.append(
        f"{name}={untrusted(value, 40)} must be {' or '.join(allowed)}; "
        f"receivers use {name}={allowed[0]}"
    )
    return allowed[0]


def _fo(tags: dict[str, str], errors: list[str]) -> tuple[str, ...]:
    items = [i.strip().lower() for i in tags.get("fo", "0").split(":")]
    bad = [i for i in items if i not in _FO]
    if bad:
        shown = ", ".join(f"'{untrusted(b, 20)}'" for b in bad)
        errors.append(
            f"fo={untrusted(tags['fo'], 40)} contains {shown}; only 0, 1, d and s are "
            "defined, so receivers ignore it"
        )
    return tuple(i for i in items if i in _FO) or ("0",)


def _rf(tags: dict[str, str], warnings: list[str]) -> tuple[str, ...]:
    items = tuple(i.strip().lower() for i in tags.get("rf", "afrf").split(":"))
    if any(i != "afrf" for i in items):
        warnings.append(
            f"rf={untrusted(tags['rf'], 40)}: afrf is the only failure-report format defined"
        )
    return items


def _uris(
    tags: dict[str, str], name: str, errors: list[str], warnings: list[str]
) -> tuple[ReportURI, ...]:
    if name not in tags:
        return ()
    entries = [e.strip() for e in tags[name].split(",")]
    if not any(entries):
        errors.append(f"{name}= is empty; give a mailto: address or leave the tag out")
        return ()
    found = []
    for entry in entries:
        uri, problem = parse_uri(entry)
        if uri is None:
            errors.append(f"{name}= entry '{untrusted(entry, 80)}' {problem}; receivers skip it")
            continue
        found.append(uri)
        if uri.scheme != "mailto":
            warnings.append(
                f"{name}= entry '{untrusted(entry, 80)}' is not a mailto: URI; receivers "
                "only send reports by email (DMARCbis allows nothing else)"
            )
    if len(found) > MAX_URIS:
        warnings.append(
            f"{name}= lists {len(found)} addresses; "
            f"receivers need only send to the first {MAX_URIS}"
        )
    return tuple(found)


def parse_uri(entry: str) -> tuple[ReportURI | None, str]:
    """One rua/ruf entry, `URI[!size[k|m|g|t]]`: (the URI, "") or (None, what is wrong)."""
    address, bang, size_text = entry.rpartition("!") if "!" in entry else (entry, "", "")
    max_size = None
    if bang:
        size = _SIZE.fullmatch(size_text)
        if size is None:
            return None, f"has size limit '{size_text}', which is not digits and k, m, g or t"
        max_size = int(size.group(1)) * _UNITS[size.group(2).lower()]
    scheme, colon, rest = address.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        hint = f" (write mailto:{address})" if "@" in address else ""
        return None, f"is not a URI{hint}"
    scheme = scheme.lower()
    if scheme == "mailto":
        local, at, domain = rest.split("?", 1)[0].rpartition("@")
        domain = domain.lower().rstrip(".")
        if not at or not local or not _hostlike(domain):
            return None, "is not mailto:local-part@domain"
    else:
        domain = (urlsplit(address).hostname or "").rstrip(".")
        if not _hostlike(domain):
            return None, "has no host name"
    return ReportURI(entry, scheme, address, domain, max_size), ""


def _hostlike(domain: str) -> bool:
    labels = domain.split(".")
    return bool(domain) and all(labels) and not any(c.isspace() for c in domain)


# -- policy strength ---------------------------------------------------------------


@dataclass(frozen=True)
class Weakness:
    """Where a valid policy lets spoofed mail through or leaves its owner
    blind: a catalog code and what the record at `name` says."""

    code: str
    summary: str


def weaknesses(record: DMARCRecord, name: str) -> list[Weakness]:
    """The record's weaknesses, worst first; `name` is where it was found."""
    p, strength = record.p, POLICIES.index
    found = []
    if p == "none":
        found.append(
            Weakness(
                "dmarc.policy.none",
                f"p=none at {name}: mail that fails DMARC is delivered as usual",
            )
        )
    else:
        weaker = POLICIES[strength(p) - 1]  # what a receiver applies instead (RFC 7489 6.6.4)
        if record.pct < 100:
            found.append(
                Weakness(
                    "dmarc.pct.partial",
                    f"pct={record.pct} at {name}: p={p} applies to {record.pct}% of the mail "
                    f"that fails DMARC; receivers treat the rest as p={weaker}",
                )
            )
        if record.t == "y":
            found.append(
                Weakness(
                    "dmarc.testing",
                    f"t=y at {name}: testing mode; receivers apply p={weaker}, not p={p}",
                )
            )
    if record.sp is not None and strength(record.sp) < strength(p):
        found.append(
            Weakness(
                "dmarc.subdomain.weaker",
                f"sp={record.sp} at {name} is weaker than p={p}: mail that fails DMARC "
                "from any subdomain, real or made up, is treated more leniently",
            )
        )
    elif record.np is not None and strength(record.np) < strength(record.subdomain_policy):
        found.append(
            Weakness(
                "dmarc.subdomain.weaker",
                f"np={record.np} at {name} is weaker than the subdomain policy "
                f"{record.subdomain_policy}: mail from subdomains that do not exist "
                "is treated more leniently",
            )
        )
    if not record.rua:
        found.append(
            Weakness(
                "dmarc.rua.missing",
                f"no rua= at {name}: no aggregate reports, so nobody sees who sends mail "
                "as this domain or whether it passes",
            )
        )
    if record.fo != ("0",) and not record.ruf:
        found.append(
            Weakness(
                "dmarc.reporting.odd",
                f"fo={':'.join(record.fo)} at {name} asks for failure reports, but no ruf= "
                "says where to send them",
            )
        )
    if record.ri != 86400:
        found.append(
            Weakness(
                "dmarc.reporting.odd",
                f"ri={record.ri} at {name}: receivers need only report once a day "
                "(RFC 7489 6.3), and most do whatever ri= asks",
            )
        )
    return found


# -- organisational domains and external report addresses ----------------------------


@functools.cache
def _psl() -> PublicSuffixList:
    """The list bundled with the package (no download), parsed once per
    process, its IDN rules in their U-label form only: the library would
    punycode all of them at each start (some 25 ms of a CLI check) so as to
    match A-labels, which `organizational_domain` decodes instead."""
    with open(PSLFILE, encoding="utf-8") as source:
        rules = [line.lower().split(" ")[0].rstrip() for line in source]
    return PublicSuffixList(
        [r for r in rules if r and not r.startswith("//")], accept_encoded_idn=False
    )


def _u_label(label: str) -> str:
    """An A-label's Unicode form (the list's), any other label as it is."""
    if not label.startswith("xn--"):
        return label
    try:
        return label.encode("ascii").decode("idna")
    except UnicodeError:
        return label  # not a valid A-label: no IDN rule can match it


def organizational_domain(domain: str) -> str:
    """The registrable domain (public suffix + one label) from the bundled PSL.

    A name that is itself a public suffix is its own organisational domain.
    """
    name = domain.lower().rstrip(".")
    labels = name.split(".")
    private = _psl().privatesuffix(".".join(_u_label(label) for label in labels))
    if private is None:
        return name
    return ".".join(labels[-(private.count(".") + 1) :])


def external_destinations(domain: str, record: DMARCRecord) -> list[tuple[str, str]]:
    """(report URI, the TXT name that must authorise it) for each rua/ruf address
    outside `domain`'s organisation. `domain` is where the record was found."""
    own = organizational_domain(domain)
    name = domain.lower().rstrip(".")
    found: dict[tuple[str, str], None] = {}
    for uri in (*record.rua, *record.ruf):
        if uri.domain and organizational_domain(uri.domain) != own:
            found[(uri.uri, f"{name}._report._dmarc.{uri.domain}")] = None
    return list(found)


def authorizes(txts: list[str]) -> bool:
    """Whether the TXT records at `<domain>._report._dmarc.<target>` accept reports."""
    return any(is_dmarc(t) for t in txts)
