"""Plans a check as a graph of probes, runs it concurrently, streams findings.

A probe (`checks.stages.probe`) is an `async def probe(ctx) -> result` plus
the names of the probes whose results it needs. Every probe starts the moment its dependencies are
done, so a check lasts as long as its longest chain of lookups, not their sum.
A probe may also follow another without waiting for it (it reads that one's
result when it must), and name the DNS questions it will ask: the runner asks
them all at the start, so a lookup waits for no unrelated one before it.
Events stream out as probes start and finish; the last event is the Report.

A probe that raises is a bug in mailcheck, not a fact about the domain: the
runner turns it into an `engine.probe.failed` finding (its dependents are
skipped) and the check goes on. One deadline bounds the whole check; probes
still running then are cancelled and reported as `engine.deadline`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from checks.core import catalog
from checks.core.config import EngineConfig
from checks.core.model import CheckRequest, Finding, ProbeTiming, Report, Severity, Stage, Target
from checks.net.budget import charging
from checks.net.door import Network, Politeness, recording
from checks.stages import default_probes
from checks.stages.probe import Outcome, Probe, ProbeContext

log = logging.getLogger(__name__)


# -- events ------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeStarted:
    probe: str
    stage: Stage


@dataclass(frozen=True)
class ProbeFinished:
    timing: ProbeTiming
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class StageDone:
    """No probe of this stage, or of an earlier one, is still running: its
    findings (deduplicated, in report order) are final. Comes once per stage,
    in stage order, stages without probes included."""

    stage: Stage
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class CheckDone:
    report: Report


Event = ProbeStarted | ProbeFinished | StageDone | CheckDone


# -- planning ------------------------------------------------------------------


def plan(probes: Sequence[Probe], request: CheckRequest) -> list[Probe]:
    """The probes of the requested stages plus everything they need, in a valid order."""
    by_name = {p.name: p for p in probes}
    if len(by_name) != len(probes):
        raise ValueError("two probes share a name")
    wanted: dict[str, Probe] = {}

    def add(probe: Probe, path: tuple[str, ...]) -> None:
        if probe.name in path:
            raise ValueError(f"probe dependency cycle: {' -> '.join((*path, probe.name))}")
        for dep in probe.needs:
            if dep not in by_name:
                raise ValueError(f"probe {probe.name} needs unknown probe {dep}")
            add(by_name[dep], (*path, probe.name))
        wanted.setdefault(probe.name, probe)
        for other in probe.follows:
            if other not in by_name:
                raise ValueError(f"probe {probe.name} follows unknown probe {other}")
            add(by_name[other], ())

    for probe in probes:
        if request.wants(probe.stage):
            add(probe, ())
    return list(wanted.values())


# -- running -------------------------------------------------------------------


class _Check:
    """One check under way: its probes' tasks, and what they have found so far.
    Events wait in `events` until the stream yields them; `arrived` is set by
    each new one and by the end of `supervise`."""

    def __init__(
        self, request: CheckRequest, config: EngineConfig, selected: list[Probe], net: Network
    ) -> None:
        self.request, self.config, self.selected, self.net = request, config, selected, net
        self.started_at = datetime.now(UTC)
        self.t0 = time.monotonic()
        self.events: deque[Event] = deque()
        self.arrived = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[Outcome]] = {}
        self.starts: dict[str, float] = {}
        self.timings: dict[str, ProbeTiming] = {}
        self.transcripts: dict[str, tuple[str, ...]] = {}
        self.facts: dict[str, Any] = {}
        self.findings: list[Finding] = []
        self.unfinished = Counter(p.stage for p in selected)  # probes per stage
        self.stages_done = 0  # how many of _STAGES have had their StageDone
        # Secrets of the test accounts never leave the engine: every finding,
        # transcript and fact is passed through the redactor (the probes already
        # write placeholders; this is the net under them).
        self.redact = config.accounts.secrets() if config.accounts is not None else None

    def _event(self, event: Event) -> None:
        self.events.append(event)
        self.arrived.set()

    def _scrub(self, finding: Finding) -> Finding:
        redact = self.redact
        if redact is None:
            return finding
        return replace(
            finding,
            summary=redact(finding.summary),
            detail=redact(finding.detail),
            evidence=tuple(redact(e) for e in finding.evidence),
            reproduce=redact(finding.reproduce) if finding.reproduce else finding.reproduce,
            data=redact.deep(dict(finding.data)),
        )

    def _finish(self, probe: Probe, outcome: str, found: list[Finding]) -> None:
        found = [self._scrub(f) for f in found]
        now = time.monotonic() - self.t0
        begun = self.starts.get(probe.name, now)
        timing = ProbeTiming(probe.name, probe.stage, begun, now - begun, outcome)
        self.timings[probe.name] = timing
        if not self.request.wants(probe.stage):
            # Run only to feed a requested stage: keep what the user must know.
            found = [f for f in found if f.severity >= Severity.WARNING or f.code in _ALWAYS]
        self.findings.extend(found)
        self._event(ProbeFinished(timing, tuple(found)))
        self.unfinished[probe.stage] -= 1
        self._stages_over()

    def _stages_over(self) -> None:
        """A StageDone for each stage, in order, once its probes have finished
        (the earlier stages' have: they had their StageDone first)."""
        while self.stages_done < len(_STAGES) and not self.unfinished[_STAGES[self.stages_done]]:
            stage = _STAGES[self.stages_done]
            found = [f for f in self.findings if f.stage is stage]
            self._event(StageDone(stage, tuple(sort_findings(dedupe(found)))))
            self.stages_done += 1

    async def _run_one(self, probe: Probe) -> Outcome:
        request, tasks = self.request, self.tasks
        deps = [await tasks[d] for d in probe.needs]
        if any(d.status != "done" for d in deps):
            self._finish(probe, "skipped", [])
            return Outcome("skipped")
        self.starts[probe.name] = time.monotonic() - self.t0
        self._event(ProbeStarted(probe.name, probe.stage))
        results = {d: tasks[d].result().value for d in probe.needs}
        ctx = ProbeContext(request, self.net, results, {f: tasks[f] for f in probe.follows})
        try:
            with recording(ctx.transcript), charging(probe.name, probe.stage):
                value = await probe.run(ctx)
        except Exception as exc:  # a bug in a probe must not sink the check
            log.exception("probe %s failed", probe.name)
            ctx.emit(
                catalog.finding(
                    "engine.probe.failed",
                    target=Target(host=request.domain),
                    summary=f"probe {probe.name} failed: {type(exc).__name__}",
                    evidence=[str(exc)[:500]],
                    stage=probe.stage,
                )
            )
            status, value = "failed", None
        else:
            status = "done"
        for hit in self.net.budget.findings(request.domain, probe.name):  # once per budget
            ctx.emit(hit)
        redact = self.redact
        lines = ctx.transcript if redact is None else [redact(line) for line in ctx.transcript]
        self.transcripts[probe.name] = tuple(lines)
        self.facts.update(ctx.facts if redact is None else redact.deep(ctx.facts))
        self._finish(probe, status, ctx.findings)
        return Outcome(status, value)

    async def supervise(self) -> None:
        """Start every probe, wait for them within the check's deadline, and
        cancel (and report) what is still running then."""
        request, config, selected = self.request, self.config, self.selected
        self.net.prefetch(
            q for p in selected if p.asks is not None for q in p.asks(request, config)
        )
        for probe in selected:
            self.tasks[probe.name] = asyncio.create_task(
                self._run_one(probe), name=f"probe:{probe.name}"
            )
        pending: set[asyncio.Task[Outcome]] = set()
        if self.tasks:  # asyncio.wait refuses an empty plan (a stage with no probe of its own)
            _done, pending = await asyncio.wait(self.tasks.values(), timeout=config.timeouts.check)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for probe in selected:
            if probe.name not in self.timings:
                late = catalog.finding(
                    "engine.deadline",
                    target=Target(host=request.domain),
                    summary=(
                        f"probe {probe.name} did not finish within the "
                        f"{config.timeouts.check:g} s deadline"
                    ),
                    stage=probe.stage,
                )
                hits = self.net.budget.findings(request.domain, probe.name)
                self._finish(probe, "deadline", [late, *hits])
        self._stages_over()  # a plan without probes has stages too

    def report(self) -> Report:
        """The finished check: every finding once, in a stable order."""
        budget, selected = self.net.budget, self.selected
        self.findings.extend(budget.findings(self.request.domain))  # any hit no probe reported
        if budget.exceeded:
            self.facts["budgets"] = budget.usage()
        return Report(
            request=self.request,
            started_at=self.started_at,
            duration=time.monotonic() - self.t0,
            findings=tuple(sort_findings(dedupe(self.findings))),
            timings=tuple(self.timings[p.name] for p in selected),
            transcripts={
                p.name: self.transcripts[p.name] for p in selected if p.name in self.transcripts
            },
            facts=self.facts,
        )


async def stream(
    request: CheckRequest,
    config: EngineConfig,
    *,
    probes: Sequence[Probe] | None = None,
    network: Network | None = None,
    politeness: Politeness | None = None,
) -> AsyncIterator[Event]:
    """Run the check, yielding events as probes start and finish, then CheckDone.
    Checks run side by side share a `politeness` (a batch's bound on the
    connections open at once to one address:port)."""
    selected = plan(probes if probes is not None else default_probes(request.stages), request)
    net = network or Network(config, politeness=politeness)
    check = _Check(request, config, selected, net)
    supervisor = asyncio.create_task(check.supervise())
    supervisor.add_done_callback(lambda _: check.arrived.set())
    try:
        while True:
            while check.events:
                yield check.events.popleft()
            if supervisor.done():
                break
            check.arrived.clear()  # no await since the queue was seen empty: nothing is missed
            await check.arrived.wait()
        supervisor.result()  # re-raise a bug in the runner itself
    finally:
        supervisor.cancel()
        for task in check.tasks.values():
            task.cancel()
        if network is None:
            net.close()
    yield CheckDone(check.report())


async def run(
    request: CheckRequest,
    config: EngineConfig,
    *,
    probes: Sequence[Probe] | None = None,
    network: Network | None = None,
    politeness: Politeness | None = None,
) -> Report:
    """Run the check to the end and return its Report."""
    events = stream(request, config, probes=probes, network=network, politeness=politeness)
    async for event in events:
        if isinstance(event, CheckDone):
            return event.report
    raise RuntimeError("check ended without a report")  # pragma: no cover


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """Drop findings that repeat one already seen (same code, target and summary)."""
    seen: set[tuple[str, Target, str]] = set()
    kept = []
    for f in findings:
        key = (f.code, f.target, f.summary)
        if key not in seen:
            seen.add(key)
            kept.append(f)
    return kept


_STAGES = tuple(Stage)
_STAGE_ORDER = {s: i for i, s in enumerate(Stage)}
# Kept even from a stage the user did not ask for: a check cut short says so.
_ALWAYS = frozenset({"engine.budget.exceeded"})


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Stage order, worst first, then by code and target: stable for diffs."""
    return sorted(
        findings,
        key=lambda f: (_STAGE_ORDER[f.stage], -f.severity.rank, f.code, f.target.label()),
    )
