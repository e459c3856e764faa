"""Picking the one policy record among a name's TXT records.

DMARC, MTA-STS and TLS-RPT share the rule: exactly one TXT record may start
with the version tag; several means none applies, and a near miss (`v=dmarc1`,
`v = STSv1` without the semicolon) is silently ignored by mail software, so it
is worth saying so.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from checks.core.text import untrusted


def select_versioned(
    txts: list[str],
    version: re.Pattern[str],
    lookalike: re.Pattern[str],
    *,
    kind: str,
    tag: str,
    readers: str,
    near_miss: Callable[[str], str] | None = None,
) -> tuple[str | None, list[str]]:
    """(the one record `version` matches, or None; the problems found)."""
    found = [t for t in txts if version.match(t)]
    problems = [
        f"TXT record '{untrusted(t, 80)}' looks like {kind} but "
        + (near_miss(t) if near_miss else f"does not start with exactly {tag}; {readers} ignore it")
        for t in txts
        if not version.match(t) and lookalike.match(t)
    ]
    if len(found) > 1:
        problems.append(
            f"multiple {kind} records ({len(found)}): {readers} use none of them "
            f"when more than one TXT record starts with {tag}"
        )
        return None, problems
    return (found[0] if found else None), problems


def version_problem(first: str, tag: str, following: str) -> str | None:
    """Why a record's first field is not exactly `tag`, or None if it is.
    `following` names what should come after the semicolon."""
    if first == tag:
        return None
    start = untrusted(first, 40)
    if first.startswith(tag):
        return f"{tag} must be followed by ';' before {following}: '{start}'"
    return f"the record must start with {tag}; it starts with '{start}'"
