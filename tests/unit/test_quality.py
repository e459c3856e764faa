"""Project rules that are cheap to check on every run."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_engine_imports_no_chat_or_queue_libraries() -> None:
    banned = ("slack_bolt", "slack_sdk", "redis", "saq", "bot")
    for path in (ROOT / "checks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


HANGING_TEST = """
import asyncio

import pytest


@pytest.fixture
async def stuck():
    yield
    await asyncio.sleep(3600)  # a teardown that never ends


async def test_fails_then_hangs(stuck):
    assert False  # pytest cancels faulthandler's timer on a failure
"""


def test_the_watchdog_ends_a_run_that_hangs_after_a_failure(tmp_path: Path) -> None:
    """A failed test whose teardown hangs must not eat CI's time limit (it
    did once: pytest's faulthandler plugin cancelled the old watchdog)."""
    (tmp_path / "test_hang.py").write_text(HANGING_TEST)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            "--rootdir",
            str(tmp_path),
            "-o",
            "asyncio_mode=auto",
            str(tmp_path / "test_hang.py"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MAILCHECK_TEST_WATCHDOG": "3"},
        timeout=60,
    )
    assert result.returncode == 70, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert "test_hang.py::test_fails_then_hangs still running after 3 s" in shown
    assert "async_finalizer" in shown  # where it hung
