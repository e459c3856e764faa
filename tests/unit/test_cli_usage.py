"""Bad input gets a message naming the problem and exit status 2, never a traceback."""

import subprocess
import sys

import pytest

from checks.core import catalog


def mailcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ((), "required"),
        (("check",), "DOMAIN"),
        (("check", "exa mple.com"), "contains spaces"),
        (("check", "192.0.2.1"), "is an IP address"),
        (("check", "localhost"), "single label"),
        (("check", "example.test", "--frobnicate"), "unrecognized arguments: --frobnicate"),
        (("check", "example.test", "--stage", "nonsense"), "invalid choice: 'nonsense'"),
        (("check", "example.test", "--allow-target", "10.0.0.0/99"), "'10.0.0.0/99'"),
        (("check", "example.test", "--resolver", "resolver.example"), "IP address"),
        (("check", "example.test", "--timeout", "abc"), "invalid float value"),
        (("check", "example.test", "--timeout", "0"), "timeout must be between 0 and 3600"),
        (("check", "example.test", "--fail-on", "ok"), "invalid choice"),
        (("frob",), "invalid choice"),
        (("check", "example.test", "--dkim-selector", "bad sel!"), "is not a DNS label"),
        (("check", "example.test", "--sender-ip", "mx.example"), "'mx.example' is not an IPv4"),
        (("check", "example.test", "--account", "nobody"), "no test account named 'nobody'"),
        (("check", "example.test", "--trust-anchor", "/nonexistent/anchors"), "No such file"),
    ],
)
def test_usage_errors(args: tuple[str, ...], complaint: str) -> None:
    result = mailcheck(*args)
    assert result.returncode == 2, result.stderr
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def test_codes_lists_the_catalog() -> None:
    result = mailcheck("codes")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == list(catalog.CATALOG)


def test_bad_environment_setting_is_a_usage_error() -> None:
    import os

    env = {**os.environ, "MAILCHECK_TIMEOUT": "later"}
    result = mailcheck("check", "example.test", env=env)
    assert result.returncode == 2
    assert "MAILCHECK_TIMEOUT='later'" in result.stderr and "Traceback" not in result.stderr
