"""MTA-STS (RFC 8461): the `_mta-sts` TXT record and the HTTPS policy file.

Pure rules, no network: `select` and `parse_txt` read the TXT record,
`parse_policy` the body of `https://mta-sts.<domain>/.well-known/mta-sts.txt`,
and `uncovered` lists the MX hosts a policy would make senders refuse.

Parsers raise `MTASTSError` when senders would treat the domain as having no
policy (every such problem in one message, so all can be fixed at once);
otherwise the result carries `warnings`. Field names and values are
case-sensitive, as in the RFC's grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from checks.core.errors import DocumentError
from checks.core.text import untrusted
from checks.rules.records import select_versioned, version_problem

MODES = ("enforce", "testing", "none")
MAX_AGE_LIMIT = 31557600  # one year, RFC 8461 3.2
MAX_AGE_ADVISED = 604800  # "weeks or greater" (RFC 8461 3.2) for an enforced policy
MAX_POLICY_BYTES = 64 * 1024  # senders bound what they read; 64 KiB is the usual cap
_VERSION = re.compile(r"v=STSv1[ \t]*(;|$)")
_LOOKALIKE = re.compile(r"\s*v\s*=\s*sts", re.IGNORECASE)
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_TXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})+")
_FIELDS = ("version", "mode", "max_age", "mx")


class MTASTSError(DocumentError):
    """Senders would act as if the domain had no MTA-STS policy; the message says why."""


@dataclass(frozen=True)
class STSRecord:
    text: str
    id: str
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    mode: str  # enforce, testing or none
    max_age: int  # seconds
    mx: tuple[str, ...]  # patterns as published, lower case; may be empty in mode none
    version: str = "STSv1"
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()


# -- the TXT record ------------------------------------------------------------------


def select(txts: list[str]) -> tuple[str | None, list[str]]:
    """(the one `_mta-sts` record starting with v=STSv1, or None; the problems found)."""
    return select_versioned(
        txts, _VERSION, _LOOKALIKE, kind="MTA-STS", tag="v=STSv1", readers="senders"
    )


def parse_txt(text: str) -> STSRecord:
    """`v=STSv1; id=...;` as senders read it. Raises MTASTSError if they would ignore it."""
    parts = [p.strip() for p in text.split(";")]
    wrong = version_problem(parts[0], "v=STSv1", "the next field")
    if wrong:
        raise MTASTSError([wrong])
    problems: list[str] = []
    warnings: list[str] = []
    fields: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        name, eq, value = part.partition("=")
        valid_value = name == "id" or _TXT_VALUE.fullmatch(value)  # id: checked below
        if not eq or not _FIELD_NAME.fullmatch(name) or not valid_value:
            problems.append(f"'{untrusted(part, 60)}' is not a valid name=value field")
        elif name in fields:
            warnings.append(f"{name}= appears more than once; senders use the first")
        else:
            fields[name] = value
    record_id = fields.pop("id", None)
    if record_id is None:
        problems.append("no id= field (senders use it to notice a new policy)")
    elif not _ID.fullmatch(record_id):
        bad = sorted({c for c in record_id if not (c.isascii() and c.isalnum())})
        what = (
            f"it has {len(record_id)} characters"
            if not bad
            else "it contains " + " ".join(f"'{untrusted(c)}'" for c in bad)
        )
        problems.append(f"id={untrusted(record_id, 40)} must be 1 to 32 letters and digits; {what}")
    if problems or record_id is None:
        raise MTASTSError(problems)
    return STSRecord(text, record_id, tuple(fields.items()), tuple(warnings))


# -- the policy file ------------------------------------------------------------------


def parse_policy(body: str) -> Policy:
    """The policy as senders read it (LF or CRLF lines). Raises MTASTSError if invalid."""
    size = len(body.encode("utf-8"))
    if size > MAX_POLICY_BYTES:
        raise MTASTSError([f"the policy is {size} bytes; senders read at most {MAX_POLICY_BYTES}"])
    problems: list[str] = []
    warnings: list[str] = []
    fields: dict[str, str] = {}
    mx: list[str] = []
    lines = body.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    for number, raw in enumerate(lines, 1):
        line = raw.removesuffix("\r")
        if not line.strip():
            warnings.append(f"line {number} is empty; strict senders reject the policy")
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _FIELD_NAME.fullmatch(name):
            problems.append(f"line {number} '{untrusted(line, 60)}' is not 'name: value'")
        elif name == "mx":
            mx.append(value.lower())
            if not _PATTERN.fullmatch(value.lower()):
                warnings.append(
                    f"mx: {untrusted(value, 60)} is not a host name or *.domain; it matches no MX"
                )
        elif name in fields:
            warnings.append(
                f"{name}: appears more than once; senders use the first "
                f"({name}: {untrusted(fields[name], 40)})"
            )
        else:
            fields[name] = value
    extensions = {k: v for k, v in fields.items() if k not in _FIELDS}
    warnings += [f"unknown field '{untrusted(k, 40)}' (senders ignore it)" for k in extensions]

    version = fields.get("version")
    if version is None:
        problems.append(_missing("version", extensions))
    elif version != "STSv1":
        problems.append(f"version: {untrusted(version, 20)} must be STSv1")
    mode = fields.get("mode")
    if mode is None:
        problems.append(_missing("mode", extensions))
    elif mode not in MODES:
        problems.append(f"mode: {untrusted(mode, 20)} must be enforce, testing or none")
    max_age = _max_age(fields, extensions, problems)
    if not mx and mode != "none":
        problems.append(_missing("mx", extensions) + "; enforce and testing need at least one")
    if problems or mode is None or max_age is None:
        raise MTASTSError(problems)
    if mode == "enforce" and max_age < MAX_AGE_ADVISED:
        warnings.append(
            f"max_age: {max_age} is under a week; senders forget the policy soon, and an "
            f"attacker who blocks the fetch can then strip TLS (use {MAX_AGE_ADVISED} or more)"
        )
    return Policy(mode, max_age, tuple(mx), "STSv1", tuple(extensions.items()), tuple(warnings))


def _max_age(fields: dict[str, str], extensions: dict[str, str], problems: list[str]) -> int | None:
    value = fields.get("max_age")
    if value is None:
        problems.append(_missing("max_age", extensions))
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 10):
        problems.append(f"max_age: {untrusted(value, 20)} is not a whole number of seconds")
        return None
    if int(value) > MAX_AGE_LIMIT:
        problems.append(f"max_age: {value} is over the limit of {MAX_AGE_LIMIT} (one year)")
        return None
    return int(value)


def _missing(field: str, extensions: dict[str, str]) -> str:
    """'no X: field', naming a near miss such as 'Mode' or 'max-age'."""
    near = [k for k in extensions if k.lower().replace("-", "_") == field]
    hint = f" ('{untrusted(near[0], 20)}' is not it: names are lower case, with _)" if near else ""
    return f"no {field}: field{hint}"


# -- MX coverage ------------------------------------------------------------------------


def mx_covered(pattern: str, host: str) -> bool:
    """Whether an mx pattern allows a host; `*.example.com` stands for exactly one label."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label and dot) and rest == pattern[2:]
    return host == pattern


def uncovered(policy: Policy, mx_hosts: list[str]) -> list[str]:
    """The MX hosts no pattern allows: senders honouring an enforced policy refuse them.

    Meaningless in mode none, whose mx list may be empty.
    """
    return [h for h in mx_hosts if not any(mx_covered(p, h) for p in policy.mx)]
