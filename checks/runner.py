"""Plans a check as a graph of probes, runs it concurrently, streams findings.

A probe is an `async def probe(ctx) -> result` plus the names of the probes
whose results it needs. Every probe starts the moment its dependencies are
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
import importlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from checks import catalog
from checks.budget import charging
from checks.config import EngineConfig
from checks.model import CheckRequest, Finding, ProbeTiming, Report, Severity, Stage, Target
from checks.net import Network, Politeness, recording

log = logging.getLogger(__name__)


class ProbeContext:
    """What a probe may use: the request, the network door, its dependencies'
    results, and `emit` for findings."""

    def __init__(
        self,
        request: CheckRequest,
        net: Network,
        results: Mapping[str, Any],
        followed: Mapping[str, asyncio.Task[_Outcome]] | None = None,
    ) -> None:
        self.request = request
        self.net = net
        self.domain = request.domain
        self._results = results
        self._followed = followed or {}
        self.findings: list[Finding] = []
        self.facts: dict[str, Any] = {}
        self.transcript: list[str] = []

    def result(self, probe: str) -> Any:
        """The value returned by a dependency (declared in `needs`)."""
        return self._results[probe]

    async def followed(self, probe: str) -> Any:
        """The value of a probe this one follows (declared in `follows`) once
        it is done; None when it failed or was skipped."""
        outcome = await asyncio.shield(self._followed[probe])
        return outcome.value if outcome.status == "done" else None

    def emit(self, finding: Finding) -> None:
        self.findings.append(finding)

    def add(self, code: str, **fields: Any) -> None:
        """Emit a finding for catalogued `code`; `fields` as for `catalog.finding`."""
        self.emit(catalog.finding(code, **fields))

    def fact(self, key: str, value: Any) -> None:
        """Record a JSON-serialisable fact (an MX set, a serial) for reports and diffs."""
        self.facts[key] = value


ProbeFunc = Callable[[ProbeContext], Awaitable[Any]]


@dataclass(frozen=True)
class Probe:
    name: str
    stage: Stage
    run: ProbeFunc
    needs: tuple[str, ...] = ()
    # Planned with this probe and run beside it, not before it: see ProbeContext.followed.
    follows: tuple[str, ...] = ()
    # The (name, type) questions it will ask of DNS: asked at the start of the check.
    asks: Callable[[CheckRequest, EngineConfig], Iterable[tuple[str, str]]] | None = None


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
class CheckDone:
    report: Report


Event = ProbeStarted | ProbeFinished | CheckDone


# -- planning ------------------------------------------------------------------


# The modules of the probes, in planning order, with the stages of their probes.
PROBE_MODULES: tuple[tuple[str, frozenset[Stage]], ...] = (
    ("checks.dns", frozenset({Stage.DNS})),
    ("checks.consistency", frozenset({Stage.DNS, Stage.POLICY})),
    ("checks.smtp", frozenset({Stage.CONNECT})),
    ("checks.mailbox", frozenset({Stage.CONNECT})),
    ("checks.tlsprobe", frozenset({Stage.TLS})),
    ("checks.policy.probes", frozenset({Stage.POLICY})),
    ("checks.policy.transport", frozenset({Stage.POLICY, Stage.TLS})),
    ("checks.autoconfig", frozenset({Stage.AUTOCONFIG})),
    ("checks.auth", frozenset({Stage.AUTH})),
    ("checks.delivery", frozenset({Stage.DELIVERY})),
)


def default_probes(stages: Iterable[Stage] | None = None) -> tuple[Probe, ...]:
    """The engine's probes, in planning order; with `stages`, only those of the
    modules holding probes of these stages or of the stages they need, so that
    a DNS-only check imports no TLS, HTTP or mail-protocol stack (issue 18).
    A probe's name starts with its stage ("connect.smtp"): a probe needed but
    not yet imported names the stage to import next (every one, failing that).
    The stage modules import this one, so they are imported here, late."""
    wanted = set(Stage) if stages is None else set(stages)
    while True:
        probes = tuple(
            probe
            for module, held in PROBE_MODULES
            if held & wanted
            for probe in importlib.import_module(module).PROBES
        )
        known = {p.name for p in probes}
        missing = {n for p in probes if p.stage in wanted for n in (*p.needs, *p.follows)} - known
        if not missing or wanted == set(Stage):
            return probes
        named = {s for s in Stage if any(n.startswith(f"{s.value}.") for n in missing)}
        wanted |= named if named - wanted else set(Stage)


def available_stages(probes: Iterable[Probe] | None = None) -> list[Stage]:
    present = {p.stage for p in (probes if probes is not None else default_probes())}
    return [s for s in Stage if s in present]


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


@dataclass
class _Outcome:
    status: str  # done | failed | skipped
    value: Any = None
    findings: list[Finding] = field(default_factory=list)


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
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    events: deque[Event] = deque()  # not yet yielded
    arrived = asyncio.Event()  # set by each new event and by the supervisor's end
    tasks: dict[str, asyncio.Task[_Outcome]] = {}
    starts: dict[str, float] = {}
    timings: dict[str, ProbeTiming] = {}
    transcripts: dict[str, tuple[str, ...]] = {}
    facts: dict[str, Any] = {}
    findings: list[Finding] = []

    # Secrets of the test accounts never leave the engine: every finding,
    # transcript and fact is passed through the redactor (the probes already
    # write placeholders; this is the net under them).
    redact = config.accounts.secrets() if config.accounts is not None else None

    def scrub(finding: Finding) -> Finding:
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

    def finish(probe: Probe, outcome: str, found: list[Finding]) -> None:
        found = [scrub(f) for f in found]
        begun = starts.get(probe.name, time.monotonic() - t0)
        timing = ProbeTiming(probe.name, probe.stage, begun, time.monotonic() - t0 - begun, outcome)
        timings[probe.name] = timing
        if not request.wants(probe.stage):
            # Run only to feed a requested stage: keep what the user must know.
            found = [f for f in found if f.severity >= Severity.WARNING or f.code in _ALWAYS]
        findings.extend(found)
        events.append(ProbeFinished(timing, tuple(found)))
        arrived.set()

    async def run_one(probe: Probe) -> _Outcome:
        deps = [await tasks[d] for d in probe.needs]
        if any(d.status != "done" for d in deps):
            finish(probe, "skipped", [])
            return _Outcome("skipped")
        starts[probe.name] = time.monotonic() - t0
        events.append(ProbeStarted(probe.name, probe.stage))
        arrived.set()
        results = {d: tasks[d].result().value for d in probe.needs}
        ctx = ProbeContext(request, net, results, {f: tasks[f] for f in probe.follows})
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
        for hit in net.budget.findings(request.domain, probe.name):  # once per budget
            ctx.emit(hit)
        lines = ctx.transcript if redact is None else [redact(line) for line in ctx.transcript]
        transcripts[probe.name] = tuple(lines)
        facts.update(ctx.facts if redact is None else redact.deep(ctx.facts))
        finish(probe, status, ctx.findings)
        return _Outcome(status, value)

    async def supervise() -> None:
        net.prefetch(q for p in selected if p.asks is not None for q in p.asks(request, config))
        for probe in selected:
            tasks[probe.name] = asyncio.create_task(run_one(probe), name=f"probe:{probe.name}")
        pending: set[asyncio.Task[_Outcome]] = set()
        if tasks:  # asyncio.wait refuses an empty plan (a stage with no probe of its own)
            _done, pending = await asyncio.wait(tasks.values(), timeout=config.timeouts.check)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for probe in selected:
            if probe.name not in timings:
                finish(
                    probe,
                    "deadline",
                    [
                        catalog.finding(
                            "engine.deadline",
                            target=Target(host=request.domain),
                            summary=(
                                f"probe {probe.name} did not finish within the "
                                f"{config.timeouts.check:g} s deadline"
                            ),
                            stage=probe.stage,
                        ),
                        *net.budget.findings(request.domain, probe.name),
                    ],
                )

    supervisor = asyncio.create_task(supervise())
    supervisor.add_done_callback(lambda _: arrived.set())
    try:
        while True:
            while events:
                yield events.popleft()
            if supervisor.done():
                break
            arrived.clear()  # no await since the queue was seen empty: nothing is missed
            await arrived.wait()
        supervisor.result()  # re-raise a bug in the runner itself
    finally:
        supervisor.cancel()
        for task in tasks.values():
            task.cancel()
        if network is None:
            net.close()

    findings.extend(net.budget.findings(request.domain))  # any hit no probe reported
    if net.budget.exceeded:
        facts["budgets"] = net.budget.usage()
    report = Report(
        request=request,
        started_at=started_at,
        duration=time.monotonic() - t0,
        findings=tuple(sort_findings(dedupe(findings))),
        timings=tuple(timings[p.name] for p in selected),
        transcripts={p.name: transcripts[p.name] for p in selected if p.name in transcripts},
        facts=facts,
    )
    yield CheckDone(report)


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


_STAGE_ORDER = {s: i for i, s in enumerate(Stage)}
# Kept even from a stage the user did not ask for: a check cut short says so.
_ALWAYS = frozenset({"engine.budget.exceeded"})


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Stage order, worst first, then by code and target: stable for diffs."""
    return sorted(
        findings,
        key=lambda f: (_STAGE_ORDER[f.stage], -f.severity.rank, f.code, f.target.label()),
    )
