"""The Report for a person at a terminal: grouped by stage, worst first.

Every string that came from the network (TXT records, host names, later
banners and certificate fields) is shown through `Text`, never as rich
markup, and with control characters made visible, so a hostile record can
neither restyle the report nor drive the terminal.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from bot.view import evidence
from checks.core import catalog
from checks.core.model import Finding, Report, Severity, Stage
from checks.core.text import visible
from checks.stages.consistency import table_of

MARKS: dict[Severity, tuple[str, str]] = {
    Severity.OK: ("✔", "green"),
    Severity.INFO: ("ℹ", "blue"),  # noqa: RUF001 - the symbol is meant
    Severity.INCONCLUSIVE: ("?", "magenta"),
    Severity.WARNING: ("⚠", "yellow"),
    Severity.ERROR: ("✖", "bold red"),
}

clean = visible  # remote text, with control characters made visible


def verdict(report: Report) -> Text:
    counts = report.counts()
    problems = [
        f"{counts[s]} {s.value}{'s' if counts[s] != 1 and s is not Severity.INCONCLUSIVE else ''}"
        for s in (Severity.ERROR, Severity.WARNING, Severity.INCONCLUSIVE)
        if counts[s]
    ]
    mark, style = MARKS[report.worst if problems else Severity.OK]
    words = ", ".join(problems) if problems else "no problems found"
    return Text.assemble((f"{mark} ", style), (words, style))


def render(report: Report, *, resolver: str, verbose: bool = False) -> Group:
    req = report.request
    head = Text.assemble(("mailcheck ", "bold"), (clean(req.display), "bold cyan"))
    if req.display != req.domain:
        head.append(f"  (IDN, checked as {req.domain})", style="dim")
    parts: list[RenderableType] = [
        head,
        Text(f"resolver {resolver} · {report.duration:.2f} s · ", style="dim") + verdict(report),
    ]
    for stage in Stage:
        found = [f for f in report.findings if f.stage is stage]
        if not found:
            continue
        parts.append(Text(""))
        parts.append(Text(stage.value.upper(), style="bold underline"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=3, justify="right")
        grid.add_column()
        rows = table_of(found)  # shown once, below the findings that carry it
        for f in found:
            mark, style = MARKS[f.severity]
            lines = _finding(f, verbose=verbose, table=rows)
            grid.add_row(Text(mark, style=style), Group(*lines))
        parts.append(grid)
        if rows:
            parts.append(Text("  Nameservers", style="bold"))
            parts.extend(Text(f"    {clean(str(row))}") for row in rows)
    return Group(*parts)


def _finding(f: Finding, *, verbose: bool, table: Sequence[str] = ()) -> list[Text]:
    style = MARKS[f.severity][1]
    lines = [Text.assemble((f.code, style), "  ", clean(f.summary))]
    if f.severity >= Severity.INCONCLUSIVE or (verbose and f.severity > Severity.OK):
        title = catalog.entry(f.code).title
        lines.append(Text(f"{title}. {clean(f.detail)}", style="dim"))
        if f.fix:
            lines.append(Text.assemble(("Fix: ", "bold"), clean(f.fix)))
    if f.reproduce and f.severity > Severity.OK:
        lines.append(Text.assemble(("Reproduce: ", "bold"), (clean(f.reproduce), "cyan")))
    proof = evidence(f, table)
    if proof and (verbose or f.severity >= Severity.WARNING):
        lines.append(Text("Evidence:", style="bold"))
        lines.extend(Text(f"  {clean(line)}", style="dim") for line in proof[:20])
    return lines


def print_report(console: Console, report: Report, *, resolver: str, verbose: bool) -> None:
    console.print(render(report, resolver=resolver, verbose=verbose), soft_wrap=False)


def plain_text(report: Report, *, resolver: str) -> str:
    """The report as `mailcheck check -v` prints it, without colour: the file
    a Slack thread too long to show every finding attaches."""
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None, force_terminal=False)
    print_report(console, report, resolver=resolver, verbose=True)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"
