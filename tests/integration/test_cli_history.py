"""`mailcheck check --compare-last` and `mailcheck history` against the lab's Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import redis

pytestmark = pytest.mark.lab

DB = 5  # a database of its own: other tests flush DB 0


def mailcheck(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def env(lab_redis: Any, lab_dns: str) -> dict[str, str]:
    url = lab_redis.url.rsplit("/", 1)[0] + f"/{DB}"
    redis.Redis.from_url(url).flushdb()
    return {
        **os.environ,
        "MAILCHECK_REDIS_URL": url,
        "MAILCHECK_RESOLVER": lab_dns,
        "MAILCHECK_ALLOW_TARGETS": "127.1.0.0/16",
    }


def test_compare_last_keeps_runs_and_says_what_changed(env: dict[str, str]) -> None:
    check = ("check", "healthy.test", "--stage", "dns", "--compare-last")
    first = mailcheck(*check, env=env)
    assert first.returncode == 0, first.stderr
    assert "First check of healthy.test kept in the history." in first.stdout
    second = mailcheck(*check, env=env)
    assert "No changes since the check of " in second.stdout
    other = mailcheck("check", "nomx.test", "--stage", "dns", "--compare-last", env=env)
    assert "First check of nomx.test" in other.stdout  # per domain
    listed = mailcheck("history", "healthy.test", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2 and all(" UTC  ok " in line for line in lines)
    slack = mailcheck("history", "healthy.test", "--channel", "C0OTHER", env=env)
    assert slack.stdout.strip() == "No checks of healthy.test in C0OTHER's history."


def test_history_needs_the_store(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "MAILCHECK_REDIS_URL"}
    result = mailcheck("history", "healthy.test", env=env)
    assert result.returncode == 2
    assert "needs MAILCHECK_REDIS_URL" in result.stderr and "Traceback" not in result.stderr
