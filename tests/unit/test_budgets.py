"""Budgets: a hostile zone cannot turn one check into a flood.

The attacks of issue 16, run for real on loopback: a counting DNS server
(tests/support/nanodns.py) serves the hostile zone, a listener on 3,000
loopback addresses counts the connections it accepts, and the check runs
end to end. Each test counts at the server, never in the engine.

A DNS budget counts questions. The resolver sends a question again when its
answer is late (every `timeouts.dns / 2` s, within `timeouts.dns`: at most
twice here), so packets at the server are bounded by twice the budget, and
distinct questions by the budget itself.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import dns.name
import dns.rdatatype
import pytest
from redis.asyncio import Redis

from bot import poster, worker
from bot.outbox import Delivery
from bot.queue import POST_QUEUE_NAME, CheckJob, make_queue
from bot.settings import Settings
from checks.core.config import Budgets, EngineConfig
from checks.core.errors import InputError
from checks.core.model import CheckRequest, Report, Stage, Target
from checks.engine.runner import run, stream
from checks.stages.probe import Probe, ProbeContext
from tests.support.floods import (
    SMTPListener,
    flood_addresses,
    flood_config,
    mx_flood_zone,
    served,
    spf_flood_zone,
)
from tests.support.nanodns import NanoDNS
from tests.support.redisdb import empty_db
from tests.support.slackapi import SlackAPIStandIn

DEFAULT = Budgets()
RESENT = 2  # attempts per question within the DNS lifetime (see above)


def config(server: NanoDNS, budgets: Budgets = DEFAULT) -> EngineConfig:
    return flood_config(server, budgets)


def questions(server: NanoDNS, under: str = ".") -> set[tuple[str, int]]:
    """The distinct questions the server was asked about names under `under`."""
    top = dns.name.from_text(under)
    return {
        (q.question[0].name.to_text().lower(), q.question[0].rdtype)
        for q in server.queries
        if q.question[0].name.is_subdomain(top)
    }


def budget_findings(report: Report) -> list:
    return [f for f in report.findings if f.code == "engine.budget.exceeded"]


# -- the settings -------------------------------------------------------------------------


def test_budget_settings_reach_the_engine() -> None:
    settings = Settings.from_env({"MAILCHECK_MAX_MX_HOSTS": "3", "MAILCHECK_MAX_DNS_QUERIES": "50"})
    budgets = settings.engine_config().budgets
    assert (budgets.mx_hosts, budgets.dns_queries, budgets.addresses) == (3, 50, 8)


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"MAILCHECK_MAX_CONNECTIONS": "0"}, "MAILCHECK_MAX_CONNECTIONS must be at least 1, not 0"),
        ({"MAILCHECK_MAX_DNS_QUERIES": "lots"}, "MAILCHECK_MAX_DNS_QUERIES='lots' is not a whole"),
        ({"MAILCHECK_MAX_PREFIX_CONNECTIONS": "1"}, "must be at least 2"),
        ({"MAILCHECK_SLACK_MAX_REPLIES": "1"}, "MAILCHECK_SLACK_MAX_REPLIES must be at least 2"),
    ],
)
def test_bad_budget_settings_are_named(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(InputError, match=complaint):
        Settings.from_env(env)


# -- one MX host with 3,000 addresses ------------------------------------------------------

needs_port_25 = pytest.mark.skipif(os.geteuid() != 0, reason="binds port 25 (run as root)")


@needs_port_25
async def test_an_mx_host_with_3000_addresses_is_tried_on_a_few() -> None:
    addresses = flood_addresses(3000)
    with NanoDNS(served(mx_flood_zone(addresses))) as dns_server:
        async with SMTPListener(addresses) as listener:
            report = await run(CheckRequest("flood.test", "flood.test"), config(dns_server))
    # One SMTP conversation per address tried (the listener offers no STARTTLS).
    assert listener.connections <= DEFAULT.addresses
    [hit] = [f for f in budget_findings(report) if f.data["budget"] == "addresses"]
    assert "MAILCHECK_MAX_ADDRESSES" in hit.summary
    assert hit.data["skipped"] == 3000 - DEFAULT.addresses
    assert hit.target.host == "flood.test"
    # Nor are the others looked up: reverse DNS, blocklists.
    ptr = {q for q in questions(dns_server) if q[1] == dns.rdatatype.PTR}
    assert len(ptr) <= DEFAULT.addresses
    assert len(questions(dns_server, "bl.flood.test.")) <= DEFAULT.addresses


@needs_port_25
async def test_the_connection_budget_caps_a_whole_check() -> None:
    addresses = flood_addresses(3000)
    budgets = Budgets(addresses=1000, connections=5)
    with NanoDNS(served(mx_flood_zone(addresses))) as dns_server:
        async with SMTPListener(addresses) as listener:
            report = await run(
                CheckRequest("flood.test", "flood.test", stages=frozenset({Stage.CONNECT})),
                config(dns_server, budgets),
            )
    assert listener.connections <= 5
    [hit] = [f for f in budget_findings(report) if f.data["budget"] == "connections"]
    assert "MAILCHECK_MAX_CONNECTIONS" in hit.summary
    assert hit.data["limit"] == 5 and hit.data["skipped"] >= 995
    # One finding for the budget, none per address it kept us from.
    assert not [f for f in report.findings if f.code.startswith("smtp.connect")]


@needs_port_25
async def test_a_budget_hit_by_a_stage_not_asked_for_is_still_reported() -> None:
    addresses = flood_addresses(20)
    with NanoDNS(served(mx_flood_zone(addresses))) as dns_server:
        async with SMTPListener(addresses) as listener:
            report = await run(
                CheckRequest("flood.test", "flood.test", stages=frozenset({Stage.CONNECT})),
                config(dns_server),
            )
    assert listener.connections == DEFAULT.addresses
    # The DNS stage ran only to feed the connect stage; its inconclusive
    # findings are dropped, but not the news that the check was cut short.
    [hit] = budget_findings(report)
    assert hit.stage is Stage.DNS and hit.data["budget"] == "addresses"


@needs_port_25
async def test_one_24_gets_a_few_connections_at_a_time() -> None:
    addresses = flood_addresses(40)  # 127.77.0.1 to .40: one /24
    with NanoDNS(served(mx_flood_zone(addresses))) as dns_server:
        async with SMTPListener(addresses, hold=0.2) as listener:
            await run(
                CheckRequest("flood.test", "flood.test", stages=frozenset({Stage.CONNECT})),
                config(dns_server, Budgets(addresses=40)),
            )
    assert listener.connections == 40  # every address tried, a few at a time
    assert listener.most_open <= DEFAULT.prefix_connections


# -- an SPF record that fans out under a victim's domain -------------------------------------


async def test_an_spf_record_cannot_fan_out_under_a_victims_domain() -> None:
    with NanoDNS(served(spf_flood_zone(45, 400))) as dns_server:
        report = await run(
            CheckRequest("attacker.test", "attacker.test", stages=frozenset({Stage.POLICY})),
            config(dns_server),
        )
        packets = len(dns_server.queries)
        victim = questions(dns_server, "victim.test.")
    assert len(victim) <= DEFAULT.spf_queries
    assert packets <= RESENT * DEFAULT.dns_queries
    [hit] = [f for f in budget_findings(report) if f.data["budget"] == "spf_queries"]
    assert "MAILCHECK_MAX_SPF_QUERIES" in hit.summary
    assert hit.data["skipped"] > 0
    # The RFC 7208 verdicts stand: the record is over the 10-lookup limit.
    assert "spf.lookups.exceeded" in {f.code for f in report.findings}


async def test_the_dns_budget_caps_a_whole_check() -> None:
    budgets = Budgets(spf_queries=100_000, dns_queries=200)
    with NanoDNS(served(spf_flood_zone(45, 400))) as dns_server:
        report = await run(
            CheckRequest("attacker.test", "attacker.test", stages=frozenset({Stage.POLICY})),
            config(dns_server, budgets),
        )
        packets = len(dns_server.queries)
        asked = questions(dns_server)
    assert len(asked) <= 200
    assert packets <= RESENT * 200
    [hit] = [f for f in budget_findings(report) if f.data["budget"] == "dns_queries"]
    assert "MAILCHECK_MAX_DNS_QUERIES" in hit.summary
    # Each question it kept us from is in the one finding, not a finding of its own.
    assert len([f for f in report.findings if f.code == "dns.resolver.failure"]) == 0


# -- Slack: a report of thousands of findings is a short thread ------------------------------

SLACK_TOKEN = "xoxb-test-token"
MAX_REPLIES = 20  # MAILCHECK_SLACK_MAX_REPLIES by default
FLOOD_PTR = 5000  # more than 20 replies hold, even with a code's findings grouped


async def flood_dns(ctx: ProbeContext) -> None:
    for i in range(FLOOD_PTR):
        ctx.add(
            "ptr.missing",
            target=Target(host="mx.flood.test", address=f"127.77.{i // 250}.{i % 250 + 1}"),
            summary=f"127.77.{i // 250}.{i % 250 + 1} (mx.flood.test) has no PTR record",
        )


async def flood_connect(ctx: ProbeContext) -> None:
    for i in range(1000):
        ctx.add(
            "smtp.connect.refused",
            target=Target(
                host="mx.flood.test", address=f"127.78.{i // 250}.{i % 250 + 1}", port=25
            ),
            summary=f"mx.flood.test [127.78.{i // 250}.{i % 250 + 1}]:25: connection refused",
        )
    ctx.add("smtp.ok", target=Target(host="mx.flood.test"), summary="one that worked")


FLOOD_PROBES = (
    Probe("flood.dns", Stage.DNS, flood_dns),
    Probe("flood.connect", Stage.CONNECT, flood_connect),
)


@pytest.fixture
async def redis(lab_redis: Any) -> AsyncIterator[Redis]:
    async with empty_db(lab_redis.url, 11) as client:
        yield client


def thread(slack: SlackAPIStandIn, parent: str) -> list[Any]:
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.ok and c.params.get("thread_ts") == parent
    ]


def strings(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(strings(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(strings(v) for v in value)
    return ""


@pytest.fixture
async def flood(
    redis: Redis, lab_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SlackAPIStandIn, dict[str, Any], Settings]]:
    """A worker's context posting to a Slack stand-in, its checks the flood probes."""
    monkeypatch.setattr(poster, "PACE_MS", 1)  # Slack's pace is not what is tested here
    monkeypatch.setattr(worker, "run_stream", functools.partial(stream, probes=FLOOD_PROBES))
    async with SlackAPIStandIn(token=SLACK_TOKEN) as slack:
        settings = Settings(
            slack_bot_token=SLACK_TOKEN,
            slack_api_url=slack.url,
            redis_url=f"{lab_redis.url.rsplit('/', 1)[0]}/11",
        )
        post_queue = make_queue(settings, POST_QUEUE_NAME)
        ctx = {
            "redis": redis,
            "poster": poster.Poster(poster.slack_client(settings), redis),
            "post_queue": post_queue,
            "settings": settings,
        }
        try:
            yield slack, ctx, settings
        finally:
            await post_queue.disconnect()


async def checked_and_posted(ctx: dict[str, Any], job: CheckJob, settings: Settings) -> str:
    """The check job, then its post job's delivery, in-process; the parent's ts."""
    await worker._run(ctx, job, settings)
    delivery = Delivery(ctx["poster"], ctx["redis"], job.request_id, job.channel)
    assert await delivery.run(time.monotonic() + 60)
    return await delivery.state.get("parent_ts") or ""


async def test_a_report_of_thousands_of_findings_is_a_short_thread(
    flood: tuple[SlackAPIStandIn, dict[str, Any], Settings],
) -> None:
    slack, ctx, settings = flood
    job = CheckJob("C0FLOOD", "U0FLOOD", "flood.test", "flood.test").with_id()
    parent = await checked_and_posted(ctx, job, settings)
    posted = thread(slack, parent)
    reports = [f for f in slack.files.values() if f.completed and f.thread_ts == parent]

    assert len(posted) == MAX_REPLIES
    summary = strings(posted[-1].params["blocks"])
    # Counts per code, the worst first: the connect stage's errors did not fit at all.
    assert "`smtp.connect.refused` \u00d7 1,000" in summary
    assert summary.index("smtp.connect.refused") < summary.index("ptr.missing")
    assert "MAILCHECK_SLACK_MAX_REPLIES" in summary
    shown = sum(strings(c.params["blocks"]).count("has no PTR record") for c in posted[:-1])
    assert f"`ptr.missing` \u00d7 {FLOOD_PTR - shown:,}" in summary
    # The whole report is attached, every finding in it.
    [report] = reports
    assert report.data is not None
    text = report.data.decode()
    assert text.count("ptr.missing") == FLOOD_PTR and text.count("smtp.connect.refused") == 1000

    # A retry of the finished job posts nothing again.
    await checked_and_posted(ctx, job, settings)
    assert len(thread(slack, parent)) == len(posted)
    assert len([f for f in slack.files.values() if f.thread_ts == parent]) == len(reports)


async def test_a_job_retried_mid_stage_posts_no_page_twice(
    flood: tuple[SlackAPIStandIn, dict[str, Any], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    slack, ctx, settings = flood
    post = poster.Poster.post
    calls = 0

    async def dies_on_the_sixth(self: poster.Poster, *args: Any, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 6:  # the parent and four pages of the DNS stage are up
            raise RuntimeError("the worker died")
        return await post(self, *args, **kwargs)

    job = CheckJob("C0FLOOD", "U0FLOOD", "flood.test", "flood.test").with_id()
    monkeypatch.setattr(poster.Poster, "post", dies_on_the_sixth)
    with pytest.raises(RuntimeError):
        await checked_and_posted(ctx, job, settings)
    monkeypatch.setattr(poster.Poster, "post", post)
    parent = await checked_and_posted(ctx, job, settings)

    posted = [strings(c.params["blocks"]) for c in thread(slack, parent)]
    assert len(posted) == len(set(posted))  # each page once
    assert len(posted) == MAX_REPLIES
