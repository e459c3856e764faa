"""A report as a reader takes it in: the renderer-neutral view the front ends format.

A report is findings, one per target, which reads well in a terminal and
repeats itself in a chat thread: four blocklist hits carry one why/fix
paragraph four times, every healthy endpoint its own line, and every
nameserver finding the whole per-server table. The view says it once:

- the problems of one code are one `Group`, listing its findings (targets);
- a stage's passing findings of one code are one `Fold` line;
- the nameserver table is the stage's `table`, and dropped from evidence.

Nothing here formats: `bot.blocks` turns a StageView into Block Kit. The
full listing, every finding on its own, is `bot.terminal.plain_text` (the
terminal, and the file a thread too long for its replies attaches).
`slack_words` rewrites our own command-line hints the way Slack users type them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from checks.core import catalog
from checks.core.model import Finding, Severity, Stage
from checks.stages.consistency import table_of


@dataclass(frozen=True)
class Group:
    """The problems of one code in one stage, in the report's order.

    `detail` and `fix` are shared by all of them (None when they differ:
    each finding then says its own)."""

    code: str
    severity: Severity  # the worst of them
    findings: tuple[Finding, ...]
    detail: str | None
    fix: str | None


@dataclass(frozen=True)
class Fold:
    """The passing findings of one code in one stage, as one line (plain text;
    remote words in it, so a renderer escapes it)."""

    code: str
    findings: tuple[Finding, ...]
    line: str


@dataclass(frozen=True)
class StageView:
    stage: Stage
    groups: tuple[Group, ...]  # worst first
    folds: tuple[Fold, ...]
    table: tuple[str, ...]  # the per-server nameserver table, shown once


def stage_view(findings: Iterable[Finding], stage: Stage) -> StageView:
    found = [f for f in findings if f.stage is stage]
    by_code: dict[str, list[Finding]] = {}
    passed: dict[str, list[Finding]] = {}
    for f in found:
        (by_code if f.severity > Severity.OK else passed).setdefault(f.code, []).append(f)
    groups = [_group(code, fs) for code, fs in by_code.items()]
    groups.sort(key=lambda g: -g.severity.rank)  # stable: same severity, report order
    folds = tuple(Fold(code, tuple(fs), fold_line(code, fs)) for code, fs in passed.items())
    return StageView(stage, tuple(groups), folds, tuple(table_of(found)))


def _group(code: str, findings: Sequence[Finding]) -> Group:
    details = {f.detail for f in findings}
    fixes = {f.fix for f in findings}
    return Group(
        code,
        max(f.severity for f in findings),
        tuple(findings),
        details.pop() if len(details) == 1 else None,
        fixes.pop() if len(fixes) == 1 else None,
    )


def evidence(f: Finding, table: Sequence[str]) -> tuple[str, ...]:
    """A finding's evidence, without the nameserver table the stage shows once."""
    return () if table and tuple(f.evidence) == tuple(table) else f.evidence


_TLS_VERSION = re.compile(r": ((?:TLS|SSL)v[0-9.]+) ")


def fold_line(code: str, findings: Sequence[Finding]) -> str:
    """One line for the passing findings of one code: a lone finding is its
    summary; TLS its endpoints, versions and the earliest certificate expiry
    ("tls.ok: 7 endpoints, TLSv1.3, certificates valid until 2027-12-07 or
    later"); any other code its count, title and hosts."""
    if len(findings) == 1:
        return f"{code}: {findings[0].summary}"
    n = len(findings)
    if code == "tls.ok":
        return f"{code}: {n} endpoints, {_tls_line(findings)}"
    hosts = [h for h in dict.fromkeys(f.target.host or f.target.address for f in findings) if h]
    on = ", ".join(hosts[:3]) + (f" and {len(hosts) - 3} more" if len(hosts) > 3 else "")
    return f"{code} \u00d7 {n}: {catalog.entry(code).title}" + (f" ({on})" if on else "")


def _tls_line(findings: Sequence[Finding]) -> str:
    # The dates come from the certificates the finding carries.
    versions = sorted({v for f in findings if (v := _version(f))})
    ends = sorted(d for f in findings if (d := _not_after(f)))
    words = ", ".join(versions) or "TLS"
    if ends:
        words += f"; certificates valid until {ends[0]}" + (
            " or later" if ends[-1] != ends[0] else ""
        )
    return words


def _version(f: Finding) -> str | None:
    # tlsprobe's summary: "LABEL: TLSv1.3 CIPHER; certificate for ..."; the
    # label comes first and holds no ": TLSv", so the first match is ours.
    match = _TLS_VERSION.search(f.summary)
    return match.group(1) if match else None


def _not_after(f: Finding) -> str | None:
    certificates = f.data.get("certificates")
    if isinstance(certificates, list) and certificates and isinstance(certificates[0], dict):
        value = certificates[0].get("not_after")
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", value):
            return value[:10]
    return None


# Our command-line hints, as Slack users say them: the options a slash command
# takes, and the settings of the bot for what only its operator can change.
# Longest first, so "--account NAME" is not read as "--account".
_SLACK_WORDS: tuple[tuple[str, str], ...] = (
    ("`mailcheck check --account NAME`", "`/mailcheck DOMAIN account=NAME`"),
    ("`mailcheck check --json`", "`mailcheck check --json` in a terminal"),
    ("`mailcheck check` on the domain", "`/mailcheck DOMAIN`"),
    ("--account NAME", "account=NAME"),
    ("--account", "account=NAME"),
    ("--dkim-selector", "selector=NAME"),
    ("--sender-ip", "sender-ip=ADDRESS"),
    ("`--trust-anchor`", "the bot's `MAILCHECK_TRUST_ANCHORS` setting"),
    ("`--timeout`", "`MAILCHECK_TIMEOUT` (a setting of the bot)"),
    ("--allow-target", "the bot's MAILCHECK_ALLOW_TARGETS setting"),
)


def slack_words(text: str) -> str:
    """`text` with our command-line hints in the slash command's words."""
    if "mailcheck" not in text and "--" not in text:
        return text
    for cli, slack in _SLACK_WORDS:
        text = text.replace(cli, slack)
    return text
