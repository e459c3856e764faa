"""`mailcheck check` of many domains in one process (issue 18).

    mailcheck check a.example b.example c.example
    mailcheck check --file domains.txt --parallel 50 --json > reports.jsonl

Each line of output is one check, in the order the domains were given (a
domain listed twice is checked twice), printed once it and every check before
it are done. Order over immediacy: a terminal then reads like the input file,
so the engineer finds the domain they look for where they listed it, and a
script pairs JSON line k with input line k. Meanwhile the progress bar
(stderr, on a terminal) counts the checks done, and the summary table at the
end gives the totals; a check that finished early waits at most for the
deadline of the ones before it.

Finished checks may run ahead of the output by LOOKAHEAD times `parallel`
checks at most: one stuck check must not make thousands of finished reports
pile up in memory. What waits is the printed form only (the line, or the JSON
text), never the Report.

Each check keeps its own budgets and its one connection at a time per
address:port; the batch adds one Politeness for them all, so that a list of
domains hosted by one provider does not open `parallel` connections at once
to its MX.

The checks share one core, and a batch is CPU-bound long before it is
network-bound (bench/batch.py). The live objects of `parallel` checks make
every full garbage collection long, and CPython's default thresholds run one
every dozen checks or so: a fifth of the CPU at --parallel 100. For the
batch's duration GC_THRESHOLDS lets young objects die before they are
scanned, yet still collects the old ones often: each check leaves some 3,000
objects in reference cycles (a memoised failed lookup's exception holds its
own task through its traceback) that only a collection frees, so collecting
rarer still would trade the CPU for memory.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bot import terminal
from checks.core.config import EngineConfig
from checks.core.errors import InputError
from checks.core.model import CheckRequest, Report, Severity
from checks.engine.runner import run
from checks.net.door import Politeness
from checks.report import jsonreport

GC_THRESHOLDS = (20_000, 5, 3)  # CPython's defaults: (700, 10, 10)
LOOKAHEAD = 4  # finished checks waiting for the output, in multiples of `parallel`
_NAME_WIDTH = 40  # the domain column's widest padding; longer names overflow it
_CODES = 3  # problem codes named on a check's line


def read_domains(path: str) -> list[tuple[str, str]]:
    """The domains of a file (`-`: stdin), with where each was: [(text,
    "FILE line N")]. One per line; blank lines and `#` comments are skipped."""
    where = "stdin" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as file:
                data = file.read()
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"--file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        number = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{where} line {number}: not UTF-8 text") from None
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        domain = raw.split("#", 1)[0].strip()
        if domain:
            found.append((domain, f"{where} line {number}"))
    if not found:
        raise InputError(f"{where} names no domain (one per line; # starts a comment)")
    return found


@dataclass(frozen=True)
class Row:
    """A finished check, as the summary table shows it."""

    display: str
    worst: Severity  # OK when nothing reached inconclusive
    errors: int
    warnings: int
    duration: float


@dataclass(frozen=True)
class _Done:
    row: Row
    shown: RenderableType | str  # the line, the full report, or the JSON text
    changes: str | None  # --compare-last's account of what changed
    failed: bool  # a finding reached --fail-on


async def run_batch(
    requests: Sequence[CheckRequest],
    config: EngineConfig,
    *,
    parallel: int,
    fail_on: Severity,
    json_lines: bool = False,
    verbose: bool = False,
    resolver: str = "",
    keep: Callable[[Report], Awaitable[str]] | None = None,
) -> bool:
    """Check every request, `parallel` at once, printing each in the order
    given, then the summary. True when any check reached `fail_on`. `keep`
    stores a report in the history and says what changed (--compare-last)."""
    out, err = Console(), Console(stderr=True)
    politeness = Politeness()
    slots = asyncio.Semaphore(parallel)
    width = min(max(cell_len(terminal.clean(r.display)) for r in requests), _NAME_WIDTH)

    async def check(request: CheckRequest) -> _Done:
        async with slots:
            report = await run(request, config, politeness=politeness)
            changes = await keep(report) if keep else None
        counts = report.counts()
        worst = report.worst if report.worst >= Severity.INCONCLUSIVE else Severity.OK
        row = Row(
            report.request.display,
            worst,
            counts[Severity.ERROR],
            counts[Severity.WARNING],
            report.duration,
        )
        shown: RenderableType | str
        if json_lines:
            shown = json.dumps(jsonreport.report_to_dict(report), ensure_ascii=False)
        elif verbose:
            shown = terminal.render(report, resolver=resolver, verbose=True)
        else:
            shown = line(report, width)
        return _Done(row, shown, changes, bool(report.at_least(fail_on)))

    # JSON printed to a terminal would tear the bar; so would lines printed on
    # stdout beside it, which therefore go above it, through its console.
    progress = None
    if err.is_terminal and not (json_lines and out.is_terminal):
        progress = Progress(
            TextColumn("Checking"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
    screen = progress.console if progress and out.is_terminal else out

    def show(done: _Done) -> None:
        if isinstance(done.shown, str):
            sys.stdout.write(done.shown + "\n")
            sys.stdout.flush()
        else:
            screen.print(done.shown, soft_wrap=not verbose, highlight=False)
        if done.changes is not None:
            text = Text("\n".join(f"  {x}" for x in done.changes.splitlines()))
            (err if json_lines else screen).print(text, soft_wrap=True, highlight=False)
        if verbose and not json_lines:
            screen.print()  # between one full report and the next

    rows: list[Row] = []
    failed = False
    pending: deque[asyncio.Task[_Done]] = deque()
    started = time.monotonic()

    async def next_out() -> None:
        nonlocal failed
        done = await pending.popleft()
        show(done)
        rows.append(done.row)
        failed |= done.failed

    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    if progress:
        progress.start()
        bar = progress.add_task("checks", total=len(requests))
    try:
        for request in requests:
            if len(pending) >= parallel * LOOKAHEAD:
                await next_out()
            task = asyncio.create_task(check(request))
            if progress:
                task.add_done_callback(lambda _: progress.advance(bar))
            pending.append(task)
        while pending:
            await next_out()
    finally:
        gc.set_threshold(*thresholds)
        if progress:
            progress.stop()
        for task in pending:
            task.cancel()
    if not json_lines:
        summarise(out, rows, time.monotonic() - started)
    elif err.is_terminal:
        summarise(err, rows, time.monotonic() - started)
    return failed


def line(report: Report, width: int) -> Text:
    """One check on one line: domain, verdict, its worst problems' codes, duration."""
    name = terminal.clean(report.request.display)
    text = Text.assemble(
        (name, "bold"), " " * max(width - cell_len(name), 0), "  ", terminal.verdict(report)
    )
    problems = sorted(
        (f for f in report.findings if f.severity >= Severity.INCONCLUSIVE),
        key=lambda f: -f.severity.rank,
    )
    codes = list(dict.fromkeys(f.code for f in problems))
    if codes:
        more = f" +{len(codes) - _CODES} more" if len(codes) > _CODES else ""
        text.append(f"  {', '.join(codes[:_CODES])}{more}")
    text.append(f"  {report.duration:.1f} s", style="dim")
    return text


def summarise(console: Console, rows: Sequence[Row], elapsed: float) -> None:
    """The table of every check, in order, and the batch's totals under it."""
    table = Table()
    table.add_column("Domain", overflow="fold")
    table.add_column("Verdict")
    table.add_column("Errors", justify="right")
    table.add_column("Warnings", justify="right")
    table.add_column("Duration", justify="right")
    for row in rows:
        mark, style = terminal.MARKS[row.worst]
        verdict = "ok" if row.worst is Severity.OK else row.worst.value
        table.add_row(
            Text(terminal.clean(row.display)),
            Text(f"{mark} {verdict}", style=style),
            str(row.errors),
            str(row.warnings),
            f"{row.duration:.1f} s",
        )
    console.print()
    console.print(table)
    groups = (
        (Severity.ERROR, "with errors"),
        (Severity.WARNING, "with warnings"),
        (Severity.INCONCLUSIVE, "inconclusive"),
        (Severity.OK, "without problems"),
    )
    tally = [(sum(r.worst is s for r in rows), words) for s, words in groups]
    console.print(
        f"{len(rows)} checks in {elapsed:.1f} s: "
        + ", ".join(f"{n} {words}" for n, words in tally if n),
        highlight=False,
    )
