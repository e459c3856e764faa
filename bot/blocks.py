"""The Report as Slack Block Kit messages: a parent line, then one thread reply per stage.

Slack reads `<...>` in mrkdwn as mentions and links, links bare URLs and
addresses by itself, and offers no way to escape `*`, `_`, `~` or backticks.
So text that came from the network (everything in a Finding but its code,
and host names in the reproduce commands) is shown only inside code spans or
blocks, after `escape()`; only our own catalog words are shown as mrkdwn.
Every mrkdwn object is also `verbatim`, so Slack does not link-ify on its own.

Limits are enforced here rather than left to Slack, since a rejected message
loses the whole report: texts are cut (never inside an entity) and a long
stage is paged over several messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.history import Run
from bot.view import Fold, Group, evidence, slack_words, stage_view
from bot.watches import Watch
from checks.core import catalog
from checks.core.model import CheckRequest, Finding, Report, Severity, Stage
from checks.report.diff import ReportDiff

EMOJI: dict[Severity, str] = {
    Severity.OK: ":white_check_mark:",
    Severity.INFO: ":information_source:",
    Severity.INCONCLUSIVE: ":grey_question:",
    Severity.WARNING: ":warning:",
    Severity.ERROR: ":x:",
}

MAX_BLOCKS = 50
MESSAGE_CHARS = 11_000  # Slack answered msg_blocks_too_long near 13k in total
RERUN_ACTION = "mailcheck_rerun"
EVIDENCE_LINES = 15
EVIDENCE_LINE_CHARS = 240  # so one 10 KB banner line cannot crowd out the others
_CONTEXT_ELEMENTS = 10

# Controls, bidi overrides, zero-width and other invisible format characters,
# lone surrogates (which would not even encode as JSON) and Unicode tags.
_INVISIBLE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f]"
)
_BACKTICK_RUN = re.compile("`(?=`)")
_USER_ID = re.compile("[UW][A-Z0-9]{2,31}")  # bounded: the mention is echoed verbatim


@dataclass(frozen=True)
class Message:
    """One chat.postMessage / chat.update payload.

    `text` is the notification and fallback text (plain, escaped, no mention).
    `blocks` are serialised and validated by slack_sdk: at most 50, each within
    Slack's limits, and with `text` under MESSAGE_CHARS characters in total.
    """

    text: str
    blocks: list[dict[str, Any]]


def _clean(text: str, *, newlines: bool = False) -> str:
    text = text.replace("\r\n", "\n").replace("\t", " ")
    if not newlines:
        text = text.replace("\n", " ")
    return _INVISIBLE.sub("", text)


def _entities(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    """Escaped `text` in at most `limit` characters, ending in … when cut."""
    if len(text) <= limit:
        return text
    head = text[: max(limit - 1, 0)]
    amp = head.rfind("&", max(len(head) - 4, 0))  # "&amp" is the longest unfinished entity
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + "…"


def escape(text: str) -> str:
    """`&`, `<`, `>` as entities, so no mention or link can form; control and
    invisible characters removed, line breaks and tabs made spaces."""
    return _entities(_clean(text))


def code_span(text: str, limit: int) -> str:
    """`text` as one inline code span of at most `limit` characters, backticks
    included: escaped, on one line, its own backticks replaced by U+02CB so it
    cannot end early. "" for blank text, which Slack would show as ``."""
    inner = _entities(_clean(text).replace("`", "\u02cb").strip())
    return f"`{_cut(inner, limit - 2)}`" if inner and limit >= 3 else ""


def code_block(lines: Sequence[str], limit: int) -> str:
    """`lines` as one fenced block of at most `limit` characters: escaped, line
    breaks kept, and a zero-width space after every backtick followed by
    another, so no fence can form inside. "" when there is nothing to show."""
    body = "\n".join(_clean(line, newlines=True) for line in lines)
    body = _entities(_BACKTICK_RUN.sub("`\u200b", body))
    return f"```\n{_cut(body, limit - 8)}\n```" if body.strip() and limit >= 9 else ""


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text, verbatim=True)


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=_mrkdwn(text))


def _requester(user_id: str) -> str:
    if _USER_ID.fullmatch(user_id):
        return f"<@{user_id}>"
    return code_span(user_id, 80) or "someone"


def mention(user_id: str) -> str:
    """A Slack user as a mention, or as code if the ID is not one (never a broadcast)."""
    return _requester(user_id)


def _domain(request: CheckRequest) -> str:
    shown = code_span(request.display, 260)
    if request.display != request.domain:
        shown += f" (checked as {code_span(request.domain, 260)})"
    return shown


def _serialise(blocks: Iterable[Block]) -> list[dict[str, Any]]:
    return [b.to_dict() for b in blocks]  # to_dict() runs slack_sdk's validators


def _size(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return 0


def pending_message(
    domain_display: str, requester_id: str, stages: Sequence[str] | None
) -> Message:
    """The parent message while a check runs: "Checking `example.com`… requested
    by <@U123>". An invalid requester id is shown in a code span, not mentioned."""
    line = (
        f":hourglass_flowing_sand: Checking {code_span(domain_display, 300)}… "
        f"requested by {_requester(requester_id)}"
    )
    scope = code_span(", ".join(stages), 500) if stages else "all"
    blocks = [_section(line), ContextBlock(elements=[_mrkdwn(f"Stages: {scope}")])]
    return Message(_cut(escape(f"Checking {domain_display}…"), 300), _serialise(blocks))


def verdict_message(report: Report, requester_id: str, rerun_value: str) -> Message:
    """The parent message once the check is done: worst severity, counts of
    errors, warnings and inconclusive findings, duration, and a "Re-run" button
    (action_id `mailcheck_rerun`, value `rerun_value`). ValueError unless
    `rerun_value` has 1 to 2,000 characters."""
    worst, words = report_verdict(report)
    line = (
        f"{EMOJI[worst]} {_domain(report.request)}: *{words}* · {report.duration:.1f} s · "
        f"requested by {_requester(requester_id)}"
    )
    blocks = [_section(line), _rerun(rerun_value)]
    return Message(_cut(escape(f"{report.request.display}: {words}"), 300), _serialise(blocks))


def failure_message(
    domain_display: str, requester_id: str, reason: str, rerun_value: str
) -> Message:
    """The parent message of a check that gave up (retries spent, deadline, a
    bug): that it failed, why in a few words, and the "Re-run" button, so the
    thread never stays at "Checking…"."""
    line = (
        f":x: {code_span(domain_display, 300)}: *the check failed*: "
        f"{_cut(escape(reason), 500)} · requested by {_requester(requester_id)}"
    )
    blocks = [_section(line), _rerun(rerun_value)]
    text = _cut(escape(f"{domain_display}: the check failed"), 300)
    return Message(text, _serialise(blocks))


def sendtest_pending_message(domain_display: str, requester_id: str) -> Message:
    """The parent message of a send test while it waits for its message."""
    line = (
        f":incoming_envelope: Send test of {code_span(domain_display, 300)}: waiting for a "
        f"message… requested by {_requester(requester_id)}"
    )
    return Message(
        _cut(escape(f"Send test of {domain_display}: waiting…"), 300),
        _serialise([_section(line)]),
    )


def sendtest_address_message(address: str, expires_at: float, account: str | None) -> Message:
    """The thread reply that hands out the test address and its deadline."""
    until = datetime.fromtimestamp(expires_at, UTC).strftime("%H:%M UTC")
    if account:
        how = f"mailcheck sends it now with the test account {code_span(account, 64)}."
    else:
        how = "Send any message from an address of the domain, through its usual mail server."
    line = (
        f"Send a message to {code_span(address, 300)} before *{until}*. {how} "
        "The first message that arrives is judged; it is deleted afterwards."
    )
    return Message(
        _cut(f"Send a message to {address} before {until}", 300), _serialise([_section(line)])
    )


def sendtest_verdict_message(report: Report, requester_id: str) -> Message:
    """The parent message once the send test is judged (or timed out)."""
    worst, words = report_verdict(report)
    line = (
        f"{EMOJI[worst]} Send test of {_domain(report.request)}: *{words}* · "
        f"requested by {_requester(requester_id)}"
    )
    return Message(
        _cut(escape(f"Send test of {report.request.display}: {words}"), 300),
        _serialise([_section(line)]),
    )


def _rerun(value: str) -> ActionsBlock:
    if not 1 <= len(value) <= 2000:
        raise ValueError(f"rerun_value must have 1 to 2000 characters, not {len(value)}")
    button = ButtonElement(text=PlainTextObject(text="Re-run"), action_id=RERUN_ACTION, value=value)
    return ActionsBlock(elements=[button])


def verdict(worst: str | Severity, counts: Mapping[str, int]) -> tuple[Severity, str]:
    """The severity a run shows and its words ("2 errors, 1 warning" or "no
    problems found"). Like the terminal, `info` alone is not a problem: ok."""
    problems = []
    for s in (Severity.ERROR, Severity.WARNING, Severity.INCONCLUSIVE):
        n = int(counts.get(s.value, 0))
        if n:
            problems.append(
                f"{n} {s.value}{'s' if n != 1 and s is not Severity.INCONCLUSIVE else ''}"
            )
    try:
        shown = Severity(worst) if problems else Severity.OK
    except ValueError:
        shown = Severity.INCONCLUSIVE
    return shown, ", ".join(problems) or "no problems found"


def report_verdict(report: Report) -> tuple[Severity, str]:
    return verdict(report.worst, {s.value: n for s, n in report.counts().items()})


def severity_label(value: str) -> str:
    """A stored severity as emoji and word ("ok" for an ok run)."""
    try:
        severity = Severity(value)
    except ValueError:
        return "unknown"
    return f"{EMOJI[severity]} {severity.value}"


WATCH_REASONS = {
    "first": "First check of this watch: from now on, a message here only when the verdict "
    "changes or a certificate is about to expire.",
    "changed": "The verdict changed: it was {was}.",
    "expiring": "A certificate is about to expire.",
}


def watch_message(
    report: Report,
    setter_id: str,
    every: str,
    reason: str,
    was: str,
    expiring: Sequence[str],
    rerun_value: str,
) -> Message:
    """The parent message of a watch's run worth telling: who set the watch,
    the verdict, why it is posted (`reason`: first, changed, expiring; `was`:
    the severity before), the expiring certificates, and Re-run."""
    worst, words = report_verdict(report)
    head = (
        f":eyes: Watch of {code_span(report.request.display, 260)} every {escape(every)}, "
        f"set by {_requester(setter_id)}"
    )
    line = f"{EMOJI[worst]} {_domain(report.request)}: *{words}* · {report.duration:.1f} s"
    because = WATCH_REASONS.get(reason, WATCH_REASONS["changed"]).format(was=severity_label(was))
    notes = [because]
    notes += [f":hourglass: {code_span(name, 300)}" for name in expiring[:5]]
    blocks: list[Block] = [
        _section(head),
        _section(line),
        ContextBlock(elements=[_mrkdwn("\n".join(notes))]),
        _rerun(rerun_value),
    ]
    text = f"Watch: {report.request.display}: {words}"
    return Message(_cut(escape(text), 300), _serialise(blocks))


def watch_notice(text: str) -> Message:
    """A one-line message about a watch itself (ended, a run skipped): `text`
    is mrkdwn built from escaped parts."""
    plain = re.sub(r"<@([UW][A-Z0-9]+)>", r"@\1", text)  # the fallback mentions nobody
    return Message(_cut(plain, 300), _serialise([_section(text)]))


def _why(text: str, entry: catalog.Entry, limit: int) -> str:
    # The catalog's words are ours and may use mrkdwn; anything else was
    # written by a probe and may quote the server. Both in Slack's words.
    if text == entry.why or text == entry.fix:
        return _cut(escape(slack_words(text)), limit)
    return code_span(slack_words(text), limit)


def _problem(f: Finding, table: Sequence[str] = ()) -> list[Block]:
    entry = catalog.entry(f.code)
    lines = [
        f"{EMOJI[f.severity]} {code_span(f.code, 100)}  {code_span(slack_words(f.summary), 500)}",
        f"*{_cut(escape(entry.title), 150)}.* {_why(f.detail, entry, 1000)}",
    ]
    if f.fix:
        lines.append(f"*Fix:* {_why(f.fix, entry, 700)}")
    blocks: list[Block] = [_section("\n".join(lines))]  # <= 2,500 characters
    more = _proof([f.reproduce or ""], [evidence(f, table)])
    if more:
        blocks.append(_section("\n".join(more)))  # <= 2,500 characters
    return blocks


def _proof(reproduce: Sequence[str], proofs: Sequence[Sequence[str]]) -> list[str]:
    """The reproduce commands and evidence lines of an entry, bounded (a long
    line cut, at most EVIDENCE_LINES lines and a count of the rest)."""
    lines = [line for proof in proofs for line in proof]
    shown = [
        line if len(line) <= EVIDENCE_LINE_CHARS else line[: EVIDENCE_LINE_CHARS - 1] + "…"
        for line in lines[:EVIDENCE_LINES]
    ]
    more = []
    if block := code_block(reproduce, 600):
        more += ["*Reproduce:*", block]
    if block := code_block(shown, 1800):
        more += ["*Evidence:*", block]
        if len(lines) > EVIDENCE_LINES:
            more.append(f"_{len(lines) - EVIDENCE_LINES} more lines not shown_")
    return more


GROUP_TARGETS = 10  # findings in one entry of a group; more go on in another
ENTRY_CHARS = 8000  # one entry's characters, so it always fits a message


def _about(f: Finding) -> str:
    """A grouped finding's line: its summary, with its target when it does not say it."""
    t = f.target
    named = [x for x in (t.host, t.address) if x]
    if not named or any(x in f.summary for x in named):
        return slack_words(f.summary)
    return f"{t.label()}: {slack_words(f.summary)}"


def _entry(
    group: Group, found: Sequence[Finding], first: bool, table: Sequence[str]
) -> list[Block]:
    """One entry of a group: the code, its title, why and fix once (in the
    first entry), then each finding's target and summary, then their distinct
    reproduce commands and evidence."""
    entry = catalog.entry(group.code)
    n = len(group.findings)
    head = f"{EMOJI[group.severity]} {code_span(group.code, 100)} \u00d7 {n}"
    lines = [head if first else f"{head} _(continued)_"]
    if first:
        detail = group.detail if group.detail is not None else entry.why
        lines.append(f"*{_cut(escape(entry.title), 150)}.* {_why(detail, entry, 1000)}")
        fix = group.fix if group.fix is not None else entry.fix
        if fix:
            lines.append(f"*Fix:* {_why(fix, entry, 700)}")
    items = []
    for f in found:
        item = f"• {EMOJI[f.severity]} {code_span(_about(f), 300)}"
        if group.detail is None and f.detail != entry.why:
            item += f"\n   {code_span(slack_words(f.detail), 300)}"
        if group.fix is None and f.fix and f.fix != entry.fix:
            item += f"\n   *Fix:* {code_span(slack_words(f.fix), 300)}"
        items.append(item)
    blocks: list[Block] = [_section("\n".join(lines)), *sections(items)]
    proofs = _labelled(found, table)
    reproduce = list(dict.fromkeys(f.reproduce for f in found if f.reproduce))
    if more := _proof(reproduce, proofs):
        blocks.append(_section("\n".join(more)))
    return blocks


def _labelled(found: Sequence[Finding], table: Sequence[str]) -> list[tuple[str, ...]]:
    """The findings' distinct evidence, once each; when they differ, each
    under the target it is about."""
    proofs = list(dict.fromkeys(proof for f in found if (proof := evidence(f, table))))
    if len(proofs) <= 1:
        return proofs
    seen: set[tuple[str, ...]] = set()
    out = []
    for f in found:
        proof = evidence(f, table)
        if proof and proof not in seen:
            seen.add(proof)
            out.append((f"# {f.target.label()}", *proof))
    return out


# A unit of a stage's replies, never split between messages: its blocks, and
# the findings they show.
_Unit = tuple[list[dict[str, Any]], tuple[Finding, ...]]


def _group_units(group: Group, table: Sequence[str]) -> list[_Unit]:
    """A group as entries, each with the findings it shows: a lone finding as
    it always was; more in entries of at most GROUP_TARGETS and ENTRY_CHARS."""
    if len(group.findings) == 1:
        return [(_serialise(_problem(group.findings[0], table)), group.findings)]
    units: list[_Unit] = []
    chunk: list[Finding] = []
    done: list[dict[str, Any]] = []
    for f in group.findings:
        trial = _serialise(_entry(group, [*chunk, f], not units, table))
        if chunk and (len(chunk) >= GROUP_TARGETS or _size(trial) > ENTRY_CHARS):
            units.append((done, tuple(chunk)))
            chunk = [f]
            done = _serialise(_entry(group, chunk, False, table))
        else:
            chunk.append(f)
            done = trial
    units.append((done, tuple(chunk)))
    return units


def _oks(folds: Sequence[Fold]) -> list[Block]:
    """The passing checks of a stage as one context block: a line per code."""
    if not folds:
        return []
    lines = [f.line for f in folds]
    if len(lines) > _CONTEXT_ELEMENTS:
        rest = folds[_CONTEXT_ELEMENTS - 1 :]
        count = sum(len(f.findings) for f in rest)
        lines = lines[: _CONTEXT_ELEMENTS - 1]
        lines.append(f"{count} more passing: " + ", ".join(f.code for f in rest))
    return [ContextBlock(elements=[_mrkdwn("✔ " + code_span(line, 280)) for line in lines])]


def _tables(rows: Sequence[str]) -> list[SectionBlock]:
    """The per-server table (checks.stages.consistency) of the stage's findings, if any."""
    return [_section("*Nameservers*\n" + code_block(rows, 2800))] if rows else []


@dataclass(frozen=True)
class Page:
    """One thread reply (of a stage, or of several), and the findings it shows."""

    message: Message
    findings: tuple[Finding, ...]


def stage_messages(report: Report, stage: Stage) -> list[Message]:
    """The thread replies for one stage: a header, every finding above `ok`
    worst first (in full), then the `ok` ones compactly. A finding is never
    split between messages. [] when the stage has no findings."""
    return [page.message for page in stage_pages(report, stage)]


def stage_pages(report: Report, stage: Stage) -> list[Page]:
    """`stage_messages`, each with the findings it shows (so a thread cut
    short can count what it left out)."""
    return report_pages(report, [stage])


def report_pages(report: Report, stages: Sequence[Stage] | None = None) -> list[Page]:
    """Every stage's replies (in `Stage` order; only `stages` when given) in as
    few messages as Slack takes: each stage as `stage_pages` shows it, its
    header and units, the stages one after another in the same message while
    they fit. [] when none of them has findings."""
    shown = [
        (stage.value.upper(), units)
        for stage in Stage
        if (stages is None or stage in stages) and (units := _stage_units(report, stage))
    ]
    titles = ", ".join(title for title, _ in shown)
    text = _cut(escape(f"mailcheck {report.request.display}: {titles}"), 300)
    return _pack(text, shown)


def _stage_units(report: Report, stage: Stage) -> list[_Unit]:
    """A stage's units in the order shown: its groups' entries, the folded oks, the table."""
    view = stage_view(report.findings, stage)
    units = [unit for g in view.groups for unit in _group_units(g, view.table)]
    oks = tuple(f for fold in view.folds for f in fold.findings)
    units += [(_serialise([block]), oks) for block in _oks(view.folds)]
    units += [(_serialise([t]), ()) for t in _tables(view.table)]
    return units


def _pack(text: str, stages: Sequence[tuple[str, Sequence[_Unit]]]) -> list[Page]:
    """Titled stages' units packed into pages within MAX_BLOCKS and MESSAGE_CHARS
    (`text` counted in every page). A stage's header goes with its first unit,
    and again, "(continued)", atop each further page it goes on in."""
    pages: list[Page] = []
    page: list[dict[str, Any]] = []
    shown: list[Finding] = []
    used = len(text)
    for title, units in stages:
        head = _header(title)
        for blocks, covers in units:
            unit = head + blocks
            if page and (len(page) + len(unit) > MAX_BLOCKS or used + _size(unit) > MESSAGE_CHARS):
                pages.append(Page(Message(text, page), tuple(shown)))
                page, shown, used = [], [], len(text)
                if not head:
                    unit = _header(f"{title} (continued)") + blocks
            page += unit
            shown += covers
            used += _size(unit)
            head = []
    if page:
        pages.append(Page(Message(text, page), tuple(shown)))
    return pages


def _header(title: str) -> list[dict[str, Any]]:
    return _serialise([HeaderBlock(text=PlainTextObject(text=title))])


def left_out_message(left_out: Mapping[tuple[Severity, str], int], replies: int) -> Message:
    """The last thread reply of a report too long for `replies` replies: how
    many findings of each code it did not show, the worst first (`left_out`:
    (severity, code) -> count). The full report goes up beside it as a file."""
    total = sum(left_out.values())
    head = (
        f":scissors: *{total:,} finding{'s' if total != 1 else ''} not shown here*: a report "
        f"posts at most {replies} replies (`MAILCHECK_SLACK_MAX_REPLIES`). "
        "The full report is attached."
    )
    order = sorted(left_out.items(), key=lambda item: (-item[0][0].rank, -item[1], item[0][1]))
    lines = [head] + [
        f"{EMOJI[severity]} {code_span(code, 100)} \u00d7 {count:,}"
        for (severity, code), count in order
    ]
    kept: list[Block] = []
    total_size = 0
    for block in sections(lines)[:MAX_BLOCKS]:
        size = _size(block.to_dict())
        if total_size + size > MESSAGE_CHARS:
            break
        kept.append(block)
        total_size += size
    return Message(f"{total:,} findings not shown; the full report is attached", _serialise(kept))


def report_messages(report: Report) -> list[Message]:
    """Every stage's replies, in the engine's stage order."""
    return [m for stage in Stage for m in stage_messages(report, stage)]


# --- history and changes ---------------------------------------------------------

CHANGES_ITEMS = 20  # per kind of change; the rest is counted
ACK_CHARS = 3500  # a slash command's reply text
_PERMALINK = re.compile(r"https://[^\s<>|\"`]{1,1000}")


def link(url: str | None, label: str) -> str:
    """`label` (our own words, mrkdwn) linked to `url` when it is a plain https
    URL (a Slack permalink); else just the label."""
    if url and _PERMALINK.fullmatch(url):
        return f"<{_entities(url)}|{label}>"
    return label


def when(iso: str) -> str:
    """An ISO 8601 time as "2026-11-25 19:20 UTC" (the text itself when unparsable)."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return _cut(escape(iso), 40)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def run_verdict(worst: str, counts: Mapping[str, int]) -> str:
    """A run's verdict as in its parent message: emoji and counts of problems."""
    shown, words = verdict(worst, counts)
    return f"{EMOJI[shown]} {words}"


def history_text(display: str, runs: Sequence[Run], links: Mapping[str, str | None]) -> str:
    """The reply to `/mailcheck history`: one line per run, newest first, each
    linked to its thread (`links`: request_id -> permalink)."""
    if not runs:
        return f"No checks of {code_span(display, 300)} in this channel yet."
    lines = [
        f"*Last {len(runs)} check{'s' if len(runs) != 1 else ''} of "
        f"{code_span(display, 300)} in this channel*"
    ]
    for run in runs:
        stages = f" · stages {code_span(', '.join(run.stages), 200)}" if run.stages else ""
        who = {"watch": "watch set by", "sendtest": "send test by"}.get(run.trigger, "requested by")
        lines.append(
            f"• {link(links.get(run.request_id), when(run.started_at))} · "
            f"{run_verdict(run.worst, run.counts)} · {who} {_requester(run.user)}{stages}"
        )
    return _join(lines, ACK_CHARS)


def changes_lines(diff: ReportDiff) -> list[str]:
    """Each change as a line of mrkdwn: our words, the remote text in code spans."""
    lines: list[str] = []

    def severity(value: str) -> str:
        try:
            return EMOJI[Severity(value)]
        except ValueError:
            return EMOJI[Severity.INCONCLUSIVE]

    def add(title: str, items: Sequence[str]) -> None:
        if not items:
            return
        lines.append(f"*{title}*")
        lines.extend(items[:CHANGES_ITEMS])
        if len(items) > CHANGES_ITEMS:
            lines.append(f"_{len(items) - CHANGES_ITEMS} more not shown_")

    add(
        "New problems",
        [
            f"{severity(s)} {code_span(c, 100)}  {code_span(slack_words(m), 300)}"
            for s, c, m in diff.new
        ],
    )
    add(
        "Resolved",
        [
            f":heavy_check_mark: {code_span(c, 100)}  {code_span(slack_words(m), 300)}"
            for _, c, m in diff.resolved
        ],
    )
    add("Changed records", [f"• {code_span(r, 500)}" for r in diff.records])
    add("Timing", [f"• {code_span(t, 200)}" for t in diff.latency])
    return lines


SECTION_CHARS = 2900  # Slack's limit for a section's text is 3000
TOO_LONG = "_(a line too long to show)_"


def sections(lines: Sequence[str]) -> list[Block]:
    """Whole lines in as few mrkdwn sections as fit SECTION_CHARS each (a
    longer line is replaced by a note)."""
    out: list[Block] = []
    chunk: list[str] = []
    used = 0
    for line in lines:
        line = line if len(line) <= SECTION_CHARS else TOO_LONG
        if chunk and used + len(line) + 1 > SECTION_CHARS:
            out.append(_section("\n".join(chunk)))
            chunk, used = [], 0
        chunk.append(line)
        used += len(line) + 1
    if chunk:
        out.append(_section("\n".join(chunk)))
    return out


def changes_message(diff: ReportDiff, since: str) -> Message:
    """The thread reply "Changes since <the previous check>" (`since`: mrkdwn,
    such as `link(permalink, when(started_at))`)."""
    lines = [f":arrows_counterclockwise: *Changes since {since}*", *changes_lines(diff)]
    kept: list[Block] = []
    total = 0
    for block in sections(lines)[:MAX_BLOCKS]:
        size = _size(block.to_dict())
        if total + size > MESSAGE_CHARS:
            break
        kept.append(block)
        total += size
    return Message("Changes since the previous check", _serialise(kept))


def diff_text(
    display: str, older: Run, newer: Run, links: Mapping[str, str | None], diff: ReportDiff
) -> str:
    """The reply to `/mailcheck diff`: the changes between two runs."""
    before = link(links.get(older.request_id), when(older.started_at))
    after = link(links.get(newer.request_id), when(newer.started_at))
    head = f"{code_span(display, 300)}: the check of {before} against the one of {after}"
    if diff.empty:
        return f"No changes in {head}."
    return _join([f"*Changes in* {head}", *changes_lines(diff)], ACK_CHARS)


def watches_text(watches: Sequence[Watch], every: Callable[[int], str]) -> str:
    """The reply to `/mailcheck watches`: this channel's watches, one a line."""
    if not watches:
        return "No watches in this channel. Set one with `/mailcheck watch example.com every=6h`."
    lines = [f"*{len(watches)} watch{'es' if len(watches) != 1 else ''} in this channel*"]
    for w in watches:
        lines.append(f"• {watch_line(w, every)}")
    return _join(lines, ACK_CHARS)


def watch_line(w: Watch, every: Callable[[int], str]) -> str:
    """One watch: domain, interval, stages, who set it, its last verdict, the next run."""
    stages = f" · stages {code_span(', '.join(w.stages), 200)}" if w.stages else ""
    if w.last_worst:
        last = f"last {when(_iso(w.last_run_at))}: {severity_label(w.last_worst)}"
    else:
        last = "not run yet"
    if w.skipped_slot > w.last_slot:
        last += " · last run skipped: the domain's hourly limit"
    nxt = w.slot_start(max(w.last_slot, w.skipped_slot) + 1)
    return (
        f"{code_span(w.display, 300)} every {escape(every(w.every))}{stages} · set by "
        f"{_requester(w.user)} · {last} · next {when(_iso(nxt))}"
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _join(lines: Sequence[str], limit: int) -> str:
    """Whole lines up to `limit` characters, then a note of how many were left out."""
    out: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        if used + len(line) + 1 > limit - 40:
            out.append(f"_{len(lines) - index} more lines not shown_")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)
