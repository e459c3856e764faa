"""The runner's contract, with probes that touch no network."""

import asyncio
from typing import Any

import pytest

from checks.core import catalog
from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.model import CheckRequest, Severity, Stage, Target
from checks.engine.runner import (
    CheckDone,
    ProbeFinished,
    ProbeStarted,
    StageDone,
    dedupe,
    plan,
    run,
    stream,
)
from checks.net.door import Network
from checks.stages.probe import Key, Probe, ProbeContext

CONFIG = EngineConfig(nameservers=(Nameserver("127.1.0.99"),), timeouts=Timeouts(check=5))
REQUEST = CheckRequest(domain="example.test", display="example.test")


def info(code: str = "srv.missing", summary: str = "x", severity: Severity | None = None):
    return catalog.finding(
        code, target=Target(host="example.test"), summary=summary, severity=severity
    )


async def check(probes, request=REQUEST, config=CONFIG):
    return await run(request, config, probes=probes, network=Network(config))


async def test_independent_probes_run_concurrently() -> None:
    # Each probe waits for the other: this finishes only if both run at once.
    a_ready, b_ready = asyncio.Event(), asyncio.Event()

    async def a(ctx: ProbeContext) -> str:
        a_ready.set()
        await b_ready.wait()
        return "a"

    async def b(ctx: ProbeContext) -> str:
        b_ready.set()
        await a_ready.wait()
        return "b"

    report = await check([Probe("a", Stage.DNS, a), Probe("b", Stage.DNS, b)])
    assert [t.outcome for t in report.timings] == ["done", "done"]
    assert report.findings == ()


async def test_a_probe_gets_its_dependencies_results_and_waits_for_them() -> None:
    seen = {}

    async def first(ctx: ProbeContext) -> int:
        await asyncio.sleep(0.05)
        return 42

    async def second(ctx: ProbeContext) -> None:
        seen["value"] = ctx.result(Key[Any]("first"))

    report = await check(
        [Probe("second", Stage.DNS, second, needs=("first",)), Probe("first", Stage.DNS, first)]
    )
    assert seen == {"value": 42}
    timing = {t.probe: t for t in report.timings}
    assert timing["second"].started >= timing["first"].started + timing["first"].duration


async def test_a_crashing_probe_becomes_a_finding_and_skips_its_dependents() -> None:
    async def broken(ctx: ProbeContext) -> None:
        raise ZeroDivisionError("boom")

    async def after(ctx: ProbeContext) -> None:
        raise AssertionError("must not run")

    async def fine(ctx: ProbeContext) -> None:
        ctx.emit(info())

    report = await check(
        [
            Probe("broken", Stage.DNS, broken),
            Probe("after", Stage.DNS, after, needs=("broken",)),
            Probe("fine", Stage.DNS, fine),
        ]
    )
    outcomes = {t.probe: t.outcome for t in report.timings}
    assert outcomes == {"broken": "failed", "after": "skipped", "fine": "done"}
    codes = {f.code: f for f in report.findings}
    assert set(codes) == {"engine.probe.failed", "srv.missing"}
    failed = codes["engine.probe.failed"]
    assert "ZeroDivisionError" in failed.summary and failed.evidence == ("boom",)


async def test_the_deadline_cancels_what_is_still_running() -> None:
    cancelled = asyncio.Event()

    async def hangs(ctx: ProbeContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def quick(ctx: ProbeContext) -> None:
        ctx.emit(info())

    config = EngineConfig(timeouts=Timeouts(check=0.2), nameservers=CONFIG.nameservers)
    report = await check(
        [Probe("hangs", Stage.DNS, hangs), Probe("quick", Stage.DNS, quick)], config=config
    )
    assert cancelled.is_set()
    assert {t.probe: t.outcome for t in report.timings} == {"hangs": "deadline", "quick": "done"}
    deadline = [f for f in report.findings if f.code == "engine.deadline"]
    assert len(deadline) == 1 and "hangs" in deadline[0].summary
    assert deadline[0].severity is Severity.INCONCLUSIVE


async def test_findings_stream_as_probes_finish() -> None:
    release = asyncio.Event()

    async def slow(ctx: ProbeContext) -> None:
        await release.wait()

    async def fast(ctx: ProbeContext) -> None:
        ctx.emit(info(summary="fast"))

    events = []
    async for event in stream(
        REQUEST, CONFIG, probes=[Probe("slow", Stage.DNS, slow), Probe("fast", Stage.DNS, fast)]
    ):
        events.append(event)
        if isinstance(event, ProbeFinished) and event.timing.probe == "fast":
            # The fast probe's findings arrive while the slow one is still running.
            assert event.findings[0].summary == "fast"
            release.set()
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("ProbeStarted") == 2
    finished = [e.timing.probe for e in events if isinstance(e, ProbeFinished)]
    assert finished == ["fast", "slow"]
    assert isinstance(events[-1], CheckDone)
    assert all(isinstance(e, ProbeStarted | ProbeFinished | StageDone) for e in events[:-1])
    assert [e.stage for e in events if isinstance(e, StageDone)] == list(Stage)


async def test_stage_filter_runs_dependencies_but_keeps_only_their_warnings() -> None:
    async def base(ctx: ProbeContext) -> str:
        ctx.emit(info("mx.found", summary="routine"))
        ctx.emit(info("mx.none", summary="matters"))
        return "base"

    async def tls(ctx: ProbeContext) -> None:
        ctx.emit(info(summary=ctx.result(Key[str]("base"))))

    async def other(ctx: ProbeContext) -> None:
        raise AssertionError("not requested")

    request = CheckRequest("example.test", "example.test", stages=frozenset({Stage.TLS}))
    report = await check(
        [
            Probe("base", Stage.DNS, base),
            Probe("tls", Stage.TLS, tls, ("base",)),
            Probe("other", Stage.POLICY, other),
        ],
        request=request,
    )
    assert [t.probe for t in report.timings] == ["base", "tls"]
    assert sorted(f.summary for f in report.findings) == ["base", "matters"]


def test_plan_rejects_cycles_and_unknown_dependencies() -> None:
    async def noop(ctx: ProbeContext) -> None:
        return None

    with pytest.raises(ValueError, match="cycle"):
        plan([Probe("a", Stage.DNS, noop, ("b",)), Probe("b", Stage.DNS, noop, ("a",))], REQUEST)
    with pytest.raises(ValueError, match="unknown probe"):
        plan([Probe("a", Stage.DNS, noop, ("zzz",))], REQUEST)


def test_dedupe_keeps_the_first_of_identical_findings() -> None:
    one, same, other = info(summary="s"), info(summary="s"), info(summary="t")
    assert dedupe([one, same, other]) == [one, other]


async def test_report_orders_findings_worst_first_within_a_stage() -> None:
    async def emit(ctx: ProbeContext) -> None:
        ctx.emit(info("mx.found", summary="ok"))
        ctx.emit(info("mx.cname", summary="bad"))
        ctx.emit(info("srv.missing", summary="meh"))

    report = await check([Probe("p", Stage.DNS, emit)])
    assert [f.severity for f in report.findings] == [Severity.ERROR, Severity.INFO, Severity.OK]
    assert report.worst is Severity.ERROR


async def test_a_follower_runs_beside_the_probe_it_follows_and_reads_its_result() -> None:
    # The follower starts before the followed probe ends, and reads its value.
    started, release = asyncio.Event(), asyncio.Event()

    async def main(ctx: ProbeContext) -> str:
        await release.wait()
        return "sessions"

    async def follower(ctx: ProbeContext) -> str:
        started.set()
        release.set()
        return f"saw {await ctx.followed(Key[Any]('connect.x'))}"

    async def crash(ctx: ProbeContext) -> None:
        raise RuntimeError("bug")

    async def after_crash(ctx: ProbeContext) -> None:
        seen.append(await ctx.followed(Key[Any]("connect.y")))

    seen: list[object] = []
    request = CheckRequest("example.test", "example.test", stages=frozenset({Stage.TLS}))
    report = await check(
        [
            Probe("connect.x", Stage.CONNECT, main),
            Probe("tls.x", Stage.TLS, follower, follows=("connect.x",)),
            Probe("connect.y", Stage.CONNECT, crash),
            Probe("tls.y", Stage.TLS, after_crash, follows=("connect.y",)),
        ],
        request,
    )
    # Planned although only the TLS stage was asked for; a failed one reads as None.
    assert {t.probe: t.outcome for t in report.timings} == {
        "connect.x": "done",
        "tls.x": "done",
        "connect.y": "failed",
        "tls.y": "done",
    }
    assert started.is_set() and seen == [None]


def test_plan_rejects_an_unknown_followed_probe() -> None:
    async def noop(ctx: ProbeContext) -> None:
        return None

    with pytest.raises(ValueError, match="follows unknown probe"):
        plan([Probe("a", Stage.DNS, noop, follows=("nope",))], REQUEST)


async def test_the_questions_probes_will_ask_are_asked_at_the_start() -> None:
    # A probe that waits for another still finds its lookup already asked.
    asked: list[tuple[str, str]] = []
    network = Network(CONFIG)

    async def fake_query(name: str, rdtype: str) -> object:
        asked.append((name, rdtype))
        raise AssertionError("never awaited by a probe here")

    network._query = fake_query  # type: ignore[method-assign]

    async def first(ctx: ProbeContext) -> None:
        assert asked == [("example.test", "MX"), ("_dmarc.example.test", "TXT")]

    async def second(ctx: ProbeContext) -> None:
        return None

    await run(
        REQUEST,
        CONFIG,
        probes=[
            Probe("dns.mx", Stage.DNS, first, asks=lambda r, _c: [(r.domain, "MX")]),
            Probe(
                "policy.dmarc",
                Stage.POLICY,
                second,
                needs=("dns.mx",),
                asks=lambda r, _c: [(f"_dmarc.{r.domain}", "TXT"), (r.domain, "MX")],
            ),
        ],
        network=network,
    )
    assert network.budget.queries == 2  # each question once, counted against the budget


async def test_a_stage_with_no_probe_gives_an_empty_report_not_a_crash() -> None:
    # The send test's stage has no probe in a check (it is its own command):
    # a job naming it alone plans nothing, which asyncio.wait refused.
    probe = Probe("dns.only", Stage.DNS, lambda ctx: asyncio.sleep(0))
    report = await check(
        [probe], CheckRequest("example.test", "example.test", stages=frozenset({Stage.SENDTEST}))
    )
    assert report.findings == () and report.timings == ()


async def test_a_stage_is_done_when_its_probes_and_every_earlier_stage_s_are() -> None:
    """StageDone comes in stage order, once per stage, as soon as no probe of
    that stage or an earlier one is running, with that stage's findings: a
    front end posts each stage as it completes without planning the check."""
    slow_dns = asyncio.Event()

    async def dns(ctx: ProbeContext) -> None:
        await slow_dns.wait()
        ctx.emit(info("srv.missing", "late dns"))

    async def connect(ctx: ProbeContext) -> None:
        ctx.emit(info("imap.missing", "connect", severity=Severity.INFO))

    async def policy(ctx: ProbeContext) -> None:
        slow_dns.set()  # DNS ends only after the later stages' probes have run

    probes = [
        Probe("dns.a", Stage.DNS, dns),
        Probe("connect.a", Stage.CONNECT, connect),
        Probe("policy.a", Stage.POLICY, policy),
    ]
    seen: list[tuple[str, ...]] = []
    async for event in stream(REQUEST, CONFIG, probes=probes, network=Network(CONFIG)):
        if isinstance(event, ProbeFinished):
            seen.append(("finished", event.timing.probe))
        elif isinstance(event, StageDone):
            seen.append(("stage", event.stage.value, *(f.summary for f in event.findings)))
    finished = [s for s in seen if s[0] == "finished"]
    assert [s[1] for s in finished][-1] == "dns.a"  # DNS finished last...
    stages = [s for s in seen if s[0] == "stage"]
    assert [s[1] for s in stages] == [s.value for s in Stage]  # ...each stage once, in order
    assert stages[0] == ("stage", "dns", "late dns") and stages[1] == (
        "stage",
        "connect",
        "connect",
    )
    # none before DNS was done: every StageDone follows dns.a's ProbeFinished
    assert seen.index(("finished", "dns.a")) < seen.index(stages[0])
