"""Issue 18: each `mailcheck` command imports what it uses, and no more.

Asserted on `sys.modules` of a fresh interpreter, not on the clock (the
figures are bench/startup.py's): `--help` and `codes` load neither the
engine's stacks nor the services', and a check, run to its report against a
stand-in resolver on loopback, loads none of Redis, saq, Slack, the send
test's SMTP receiver or DKIM.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from checks.model import CHECK_STAGES
from checks.runner import available_stages
from tests.support.nanodns import NanoDNS, zone

SERVICES = {"redis", "saq", "slack_sdk", "slack_bolt", "aiohttp", "aiosmtpd", "dkim"}
ENGINE = {"rich", "cryptography", "OpenSSL", "dns", "asyncio", "checks.runner"}

# Runs `mailcheck ARGS...` in-process, then writes what it loaded as stderr's last line.
_RUN = """
import json, sys
from bot import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
sys.stderr.write("\\n" + json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def mailcheck(*args: str) -> tuple[int, set[str], str]:
    """Exit status, loaded modules (and their top-level packages), and stdout."""
    result = subprocess.run(
        [sys.executable, "-c", _RUN, *args], capture_output=True, text=True, timeout=60
    )
    last = json.loads(result.stderr.rsplit("\n", 1)[-1])
    modules = set(last["modules"])
    return last["status"], modules | {m.split(".")[0] for m in modules}, result.stdout


@pytest.mark.parametrize(
    "args", [("--help",), ("codes",), ("codes", "--markdown"), ("check", "--help")]
)
def test_help_and_codes_load_no_engine_and_no_services(args: tuple[str, ...]) -> None:
    status, loaded, stdout = mailcheck(*args)
    assert status == 0 and stdout
    assert loaded.isdisjoint(SERVICES | ENGINE), sorted(loaded & (SERVICES | ENGINE))


def test_a_check_loads_the_engine_and_no_services() -> None:
    with NanoDNS(zone({})) as resolver:  # NXDOMAIN for every name: a short check
        status, loaded, stdout = mailcheck(
            "check", "example.test", "--json", "--resolver", f"{resolver.address}:{resolver.port}"
        )
        assert resolver.queries
    assert status == 1 and json.loads(stdout)["domain"] == "example.test"
    assert {"checks.runner", "dns", "rich"} <= loaded  # the path was walked, to its report
    assert loaded.isdisjoint(SERVICES), sorted(loaded & SERVICES)


def test_stage_choices_are_the_stages_the_engine_runs() -> None:
    """`--stage` takes its choices from the model, so that `--help` needs no probes."""
    assert list(CHECK_STAGES) == available_stages()


def test_the_package_names_still_import() -> None:
    code = (
        "import sys, checks.catalog; engine = 'checks.runner' in sys.modules\n"
        "from checks import CheckRequest, EngineConfig, TargetPolicy, run, stream\n"
        "import checks.runner, checks.model\n"
        "assert (run, stream) == (checks.runner.run, checks.runner.stream)\n"
        "assert CheckRequest is checks.model.CheckRequest\n"
        "print(engine)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"  # the catalog alone does not start the engine
