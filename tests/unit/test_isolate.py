"""checks.core.isolate: work in a child process that ends at its deadline, whoever
gives up first: the deadline, the awaiting task's cancellation, or the child's
own CPU limit."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from checks.core import isolate
from tests.support.lagprobe import LagProbe


def double(values: list[int]) -> dict[str, list[int]]:
    return {"doubled": [v * 2 for v in values]}


def spin(pidfile: str) -> None:
    """Burn CPU, in one C call that keeps the GIL, for far longer than any deadline."""
    Path(pidfile).write_text(str(os.getpid()))
    sum(range(10**12))


def crash() -> None:
    raise ValueError("no good")


def suicide() -> None:
    os._exit(3)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _written(pidfile: Path) -> int | None:
    text = pidfile.read_text() if pidfile.exists() else ""
    return int(text) if text else None


async def _pid(pidfile: Path) -> int:
    for _ in range(200):
        pid = _written(pidfile)
        if pid is not None:
            return pid
        await asyncio.sleep(0.025)
    raise AssertionError("the child never started")


async def test_the_answer_comes_back_as_plain_data() -> None:
    assert await isolate.run(double, [1, 2, 3], seconds=30) == {"doubled": [2, 4, 6]}


async def test_an_overrun_kills_the_child_and_leaves_the_loop_free(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    async with LagProbe() as lag:
        with pytest.raises(isolate.Overrun, match=r"did not finish within 1\.5 s"):
            await isolate.run(spin, str(pidfile), seconds=1.5)
    assert lag.worst < 0.1, str(lag)
    assert _gone(int(pidfile.read_text()))


async def test_cancelling_the_caller_kills_the_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(isolate.run(spin, str(pidfile), seconds=60))
    pid = await _pid(pidfile)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(pid)


async def test_failures_in_the_child_are_reported_not_raised_raw() -> None:
    with pytest.raises(isolate.ChildFailed, match="failed: ValueError: no good"):
        await isolate.run(crash, seconds=30)
    with pytest.raises(isolate.ChildFailed, match=r"without an answer \(exit code 3\)"):
        await isolate.run(suicide, seconds=30)


async def test_the_child_caps_its_own_cpu_time(tmp_path: Path) -> None:
    # The deadline is far away; the child's RLIMIT_CPU ends it first, as it
    # would if its parent had died before the deadline.
    pidfile = tmp_path / "pid"
    started = time.process_time()
    with pytest.raises(isolate.ChildFailed, match="without an answer"):
        await isolate.run(spin, str(pidfile), seconds=30, cpu_seconds=1)
    assert _gone(int(pidfile.read_text()))
    assert time.process_time() - started < 1  # the parent did not do the spinning


def environment() -> dict[str, str]:
    return dict(os.environ)


async def test_the_child_inherits_no_secret_from_the_environment(monkeypatch) -> None:
    """The child reads a stranger's bytes: no token or password may be within its reach."""
    monkeypatch.setenv("MAILCHECK_ACCOUNT_WORK_PASSWORD", "correct horse battery")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-not-a-token")
    seen = await isolate.run(environment, seconds=20)
    assert "MAILCHECK_ACCOUNT_WORK_PASSWORD" not in seen and "SLACK_BOT_TOKEN" not in seen
