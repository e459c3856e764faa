"""Batch checks (issue 18): the batch's shared politeness at the network door,
and `mailcheck check` of several domains against a stand-in resolver: each
line one check in the order given, a bad line refused before anything runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checks.core.config import EngineConfig, Nameserver, Timeouts
from checks.core.model import Target
from checks.core.targets import TargetPolicy, parse_networks
from checks.net.door import Network, Politeness
from tests.support.fakeserver import FakeServer
from tests.support.nanodns import NanoDNS, zone

CONFIG = EngineConfig(
    nameservers=(Nameserver("127.1.0.99"),),
    policy=TargetPolicy(parse_networks(["127.1.30.0/24"])),
    timeouts=Timeouts(connect=2, check=10),
)


class Gauge:
    """Counts what is open at once, and the most ever open."""

    def __init__(self) -> None:
        self.now = self.most = 0

    def up(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def down(self) -> None:
        self.now -= 1


async def test_politeness_lets_two_in_per_address_and_port_and_forgets_idle_ones() -> None:
    politeness, gauges = Politeness(), {25: Gauge(), 587: Gauge()}

    async def hold(port: int) -> None:
        async with politeness.turn("192.0.2.1", port):
            gauges[port].up()
            await asyncio.sleep(0.02)
            gauges[port].down()

    await asyncio.gather(*(hold(port) for port in (25, 587) for _ in range(6)))
    assert gauges[25].most == 2 and gauges[587].most == 2  # each port its own pair
    assert politeness._slots == {}  # nothing kept once no one holds or waits


async def test_a_waiter_cancelled_gives_its_place_back() -> None:
    politeness = Politeness(per_port=1)
    async with politeness.turn("192.0.2.1", 25):
        waiter = asyncio.create_task(politeness.turn("192.0.2.1", 25).__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert politeness._slots == {}


@pytest.mark.parametrize(("shared", "most"), [(True, 2), (False, 5)])
async def test_networks_sharing_a_politeness_keep_to_it_at_the_server(
    shared: bool, most: int
) -> None:
    """Five checks' doors to one server: a shared Politeness holds them to two
    connections at once; without one, each check's own lock lets all five in."""
    gauge = Gauge()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gauge.up()
        try:
            await reader.read()  # until the client hangs up
        finally:
            gauge.down()

    politeness = Politeness() if shared else None
    async with FakeServer(serve, "127.1.30.7") as server:
        target = Target("mx.example.test", server.address, server.port, "smtp")

        async def talk() -> None:
            async with Network(CONFIG, politeness=politeness).connect(target):
                await asyncio.sleep(0.1)

        await asyncio.gather(*(talk() for _ in range(5)))
        assert server.connections == 5
    assert gauge.most == most


# -- the command line, against a stand-in resolver -------------------------------------------

RECORDS = {("a.test.", "SOA"): ["ns.a.test. h.a.test. 1 3600 900 604800 300"]}


def mailcheck(
    resolver: NanoDNS, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    where = ["--resolver", f"{resolver.address}:{resolver.port}", "--stage", "dns"]
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "check", *where, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def mx_queries(server: NanoDNS) -> list[str]:
    return [
        q.question[0].name.to_text()
        for q in server.queries
        if q.question[0].rdtype == 15  # MX: asked once per check
    ]


def test_a_domain_given_twice_is_checked_twice_each_line_in_the_order_given() -> None:
    with NanoDNS(zone(RECORDS)) as resolver:
        result = mailcheck(resolver, "a.test", "b.test", "A.test", "--json")
        asked = mx_queries(resolver)
    assert result.returncode == 1, result.stderr  # b.test does not exist: an error
    lines = result.stdout.splitlines()
    assert [json.loads(line)["domain"] for line in lines] == ["a.test", "b.test", "a.test"]
    assert sorted(asked) == ["a.test.", "a.test.", "b.test."]


def test_a_domain_after_the_options_is_one_more_check() -> None:
    with NanoDNS(zone(RECORDS)) as resolver:
        result = mailcheck(resolver, "a.test", "--fail-on", "inconclusive", "b.test", "--json")
    assert [json.loads(line)["domain"] for line in result.stdout.splitlines()] == [
        "a.test",
        "b.test",
    ]


def test_a_bad_line_is_named_and_nothing_runs(tmp_path: Path) -> None:
    listed = tmp_path / "domains.txt"
    listed.write_text("a.test\n# ours\n\nexa mple.test\nb.test\n")
    with NanoDNS(zone(RECORDS)) as resolver:
        result = mailcheck(resolver, "--file", str(listed))
        stdin = mailcheck(resolver, "c.test", "--file", "-", stdin="a.test\n192.0.2.1\n")
        assert resolver.queries == []
    assert result.returncode == 2 and result.stdout == ""
    assert f"{listed} line 4: 'exa mple.test' contains spaces" in result.stderr
    assert stdin.returncode == 2 and stdin.stdout == ""
    assert "stdin line 2: '192.0.2.1' is an IP address" in stdin.stderr
    assert "Traceback" not in result.stderr + stdin.stderr


def test_a_file_is_read_as_utf8_comments_and_blank_lines_skipped(tmp_path: Path) -> None:
    listed = tmp_path / "domains.txt"
    listed.write_bytes("\ufeff# ours\r\n\r\n  été.test  # an IDN\r\na.test\r\n".encode())
    with NanoDNS(zone(RECORDS)) as resolver:
        result = mailcheck(resolver, "--file", str(listed), "--json")
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["domain"], r["domain_display"]) for r in reports] == [
        ("xn--t-9fab.test", "été.test"),
        ("a.test", "a.test"),
    ]


@pytest.mark.parametrize(
    ("args", "stdin", "complaint"),
    [
        (("--file", "/nonexistent/list"), "", "--file /nonexistent/list: No such file"),
        (("--file", "-"), "# nothing\n\n", "stdin names no domain"),
        (("a.test", "b.test", "--parallel", "0"), "", "--parallel: must be a whole number"),
        (("a.test", "b.test", "--parallel", "501"), "", "from 1 to 500"),
    ],
)
def test_batch_usage_errors(args: tuple[str, ...], stdin: str, complaint: str) -> None:
    with NanoDNS(zone(RECORDS)) as resolver:
        result = mailcheck(resolver, *args, stdin=stdin)
    assert result.returncode == 2, result.stderr
    assert complaint in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_an_account_is_refused_for_the_batch_if_one_domain_is_not_its_own(
    tmp_path: Path,
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[accounts.work]\naddress = "probe@a.test"\npassword = "long enough"\n')
    accounts.chmod(0o600)
    listed = tmp_path / "domains.txt"
    listed.write_text("a.test\nb.test\n")
    env = {"MAILCHECK_ACCOUNTS_FILE": str(accounts)}
    with NanoDNS(zone(RECORDS)) as resolver:
        result = mailcheck(resolver, "--file", str(listed), "--account", "work", env=env)
        assert resolver.queries == []
    assert result.returncode == 2 and result.stdout == ""
    assert f"{listed} line 2: test account 'work' may be used only" in result.stderr
    assert "not for 'b.test'" in result.stderr
