"""`mailcheck check` of several domains against the lab: full checks, a line
per check in the order given, JSON Lines valid against the schema, the worst
exit status, and the batch's politeness measured at a server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis

from checks.report import jsonreport
from tests.lab.control import Lab
from tests.lab.zones import ISPDB_URL, NS_ADDRESS
from tests.support.fakeserver import FakeServer

pytestmark = pytest.mark.lab


async def mailcheck(
    lab: Lab, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `mailcheck check` pointed at the lab,
    run without blocking this loop (a test's fake server answers on it)."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot.cli", "check", "--resolver", NS_ADDRESS),
        *("--allow-target", "127.1.0.0/16", "--ca-file", str(lab.ca_file)),
        *("--trust-anchor", str(lab.trust_anchors), *args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "MAILCHECK_DNSBL_ZONES": "bl.test",
            "MAILCHECK_ISPDB_URL": ISPDB_URL,
            "COLUMNS": "200",
            **(env or {}),
        },
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_each_check_is_a_line_in_the_order_given_then_the_summary(lab: Lab) -> None:
    status, out, err = await mailcheck(lab, "healthy.test", "smtp-refused.test", "healthy.test")
    assert status == 1, err  # the worst: smtp-refused.test has an error
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:3]] == [
        "healthy.test",
        "smtp-refused.test",
        "healthy.test",
    ]
    assert "✔ no problems found" in lines[0] and "✔ no problems found" in lines[2]
    assert "✖ 1 error" in lines[1] and "smtp.connect.refused" in lines[1]
    rows = [line for line in lines[3:] if line.startswith("│")]
    assert [row.split()[1] for row in rows] == ["healthy.test", "smtp-refused.test", "healthy.test"]
    assert "✖ error" in rows[1] and "✔ ok" in rows[0]
    assert lines[-1].startswith("3 checks in ")
    assert lines[-1].endswith(": 1 with errors, 2 without problems")


async def test_the_exit_status_follows_fail_on_over_the_whole_batch(lab: Lab) -> None:
    clean, _, err = await mailcheck(lab, "healthy.test", "healthy.test", "--stage", "dns")
    assert clean == 0, err
    strict, out, _ = await mailcheck(lab, "healthy.test", "nomx.test", "--stage", "dns")
    assert strict == 0 and "mx.none" in out  # a warning: below the default --fail-on
    warned, _, _ = await mailcheck(
        lab, "healthy.test", "nomx.test", "--stage", "dns", "--fail-on", "warning"
    )
    assert warned == 1


async def test_a_file_or_stdin_gives_json_lines_in_order_each_valid(
    lab: Lab, tmp_path: Path
) -> None:
    listed = tmp_path / "domains.txt"
    listed.write_text(
        "# our domains\nhealthy.test\n\n   smtp-refused.test   # the old MX\nhealthy.test\n"
    )
    from_file = await mailcheck(lab, "--file", str(listed), "--json")
    from_stdin = await mailcheck(lab, "--file", "-", "--json", stdin=listed.read_text())
    single = await mailcheck(lab, "healthy.test", "--json")
    want = ["healthy.test", "smtp-refused.test", "healthy.test"]
    for status, out, err in (from_file, from_stdin):
        assert status == 1, err
        lines = out.splitlines()
        assert len(lines) == 3  # one report per line, nothing else on stdout
        reports = [json.loads(line) for line in lines]
        for report in reports:
            jsonschema.validate(
                report,
                jsonreport.schema(),
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
            )
        assert [r["domain"] for r in reports] == want
        assert reports[1]["worst"] == "error" and reports[0]["worst"] == "ok"
        assert list(reports[0]) == list(json.loads(single[1]))  # the single check's JSON


async def test_a_batch_opens_at_most_two_connections_at_once_to_one_address_and_port(
    lab: Lab,
) -> None:
    """Eight checks of smtp-stall.test at once, whose MX (127.1.20.3:25) is a
    server here that holds each connection a while before turning it away.
    Each check connects once; without the batch's shared bound all eight
    would be open together."""
    open_now, most = 0, 0

    async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            await asyncio.sleep(0.3)
            writer.write(b"554 5.3.2 too busy, come back later\r\n")
            await writer.drain()
        finally:
            open_now -= 1

    async with FakeServer(busy, "127.1.20.3", 25) as server:
        _, out, err = await mailcheck(
            lab, *["smtp-stall.test"] * 8, "--stage", "connect", "--parallel", "8", "--json"
        )
    reports = [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 8, err
    rejected = [any(f["code"] == "smtp.banner.rejected" for f in r["findings"]) for r in reports]
    assert all(rejected), "every check reached the server"
    assert server.connections == 8
    assert most == 2  # the shared bound held, and was reached: the checks did overlap


async def test_compare_last_says_under_each_line_what_changed(lab: Lab, lab_redis: Any) -> None:
    url = lab_redis.url.rsplit("/", 1)[0] + "/6"  # a database of its own
    redis.Redis.from_url(url).flushdb()
    status, out, err = await mailcheck(
        lab,
        *("healthy.test", "nomx.test", "healthy.test", "--stage", "dns", "--compare-last"),
        *("--parallel", "1"),  # one after the other: the second healthy.test sees the first
        env={"MAILCHECK_REDIS_URL": url},
    )
    assert status == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[0:6:2]] == [
        "healthy.test",
        "nomx.test",
        "healthy.test",
    ]
    assert [line.strip() for line in lines[1:6:2]][:2] == [
        "First check of healthy.test kept in the history.",
        "First check of nomx.test kept in the history.",
    ]
    assert lines[5].startswith("  No changes since the check of ")
