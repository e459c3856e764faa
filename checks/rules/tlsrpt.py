"""SMTP TLS Reporting (RFC 8460): the `_smtp._tls` TXT record.

`select` picks the record out of the TXT set, `parse_record` reads it the way
a sending server does: `v=TLSRPTv1; rua=<mailto: or https: URI>[,...]`.
`TLSRPTError` means senders would send no reports at all; problems with only
some of the addresses come back as `warnings`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from checks.core.errors import DocumentError
from checks.core.text import untrusted
from checks.rules.records import select_versioned, version_problem

SCHEMES = ("mailto", "https")
_VERSION = re.compile(r"v=TLSRPTv1[ \t]*(;|$)")
_LOOKALIKE = re.compile(r"\s*v\s*=\s*tlsrpt", re.IGNORECASE)
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


class TLSRPTError(DocumentError):
    """Senders would send no TLS reports with this record; the message says why."""


@dataclass(frozen=True)
class TLSRPTRecord:
    text: str
    rua: tuple[str, ...]  # the usable report URIs, as published
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()


def select(txts: list[str]) -> tuple[str | None, list[str]]:
    """(the one record starting with v=TLSRPTv1, or None; the problems found)."""
    return select_versioned(
        txts, _VERSION, _LOOKALIKE, kind="TLS-RPT", tag="v=TLSRPTv1", readers="senders"
    )


def parse_record(text: str) -> TLSRPTRecord:
    """The record as senders read it. Raises TLSRPTError if they would send no reports."""
    parts = [p.strip() for p in text.split(";")]
    wrong = version_problem(parts[0], "v=TLSRPTv1", "rua=")
    if wrong:
        raise TLSRPTError([wrong])
    warnings: list[str] = []
    fields: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq or not _FIELD_NAME.fullmatch(name) or not value:
            warnings.append(f"'{untrusted(part, 60)}' is not a valid name=value field")
        elif name in fields:
            warnings.append(f"{name}= appears more than once; senders use the first")
        else:
            fields[name] = value
    rua = fields.pop("rua", None)
    if rua is None:
        raise TLSRPTError(["no rua= field: senders have nowhere to send reports", *warnings])
    usable = []
    for entry in (e.strip() for e in rua.split(",")):
        problem = uri_problem(entry)
        if problem:
            warnings.append(f"rua= entry '{untrusted(entry, 80)}' {problem}")
        else:
            usable.append(entry)
    if not usable:
        raise TLSRPTError(["rua= has no usable mailto: or https: URI", *warnings])
    return TLSRPTRecord(text, tuple(usable), tuple(fields.items()), tuple(warnings))


def uri_problem(entry: str) -> str:
    """What keeps a sender from reporting to this rua= entry ("" if nothing)."""
    scheme, colon, rest = entry.partition(":")
    if not colon:
        hint = f" (write mailto:{untrusted(entry, 60)})" if "@" in entry else ""
        return f"is not a URI{hint}"
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        return f"uses {untrusted(scheme, 20)}:; reports go only to mailto: or https: URIs"
    if scheme == "mailto":
        local, at, domain = rest.split("?", 1)[0].rpartition("@")
        if not (at and local and "." in domain.strip(".")):
            return "is not mailto:local-part@domain"
        return ""
    try:
        host = urlsplit(entry).hostname
    except ValueError:
        host = None
    return "" if host else "has no host name"
