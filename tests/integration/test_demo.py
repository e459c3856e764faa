"""scripts/demo's choice of stages: a lab scenario checked as the demo checks
it shows its own faults and nothing the lab merely leaves out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.lab.control import Lab
from tests.lab.zones import BY_DOMAIN, ISPDB_URL, NS_ADDRESS

pytestmark = pytest.mark.lab


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MAILCHECK_DNSBL_ZONES": "bl.test", "MAILCHECK_ISPDB_URL": ISPDB_URL},
    )


def demo(lab: Lab, domain: str) -> tuple[set[str], str]:
    """The codes above ok of `mailcheck check --json` run with scripts/demo's
    options and the stages it picks for `domain`, and what it said of them."""
    stages = run("-m", "tests.lab", "stages", domain)
    assert stages.returncode == 0, stages.stderr
    check = run(
        *("-m", "bot.cli", "check", "--json", "--resolver", NS_ADDRESS),
        *("--allow-target", "127.1.0.0/16", "--ca-file", str(lab.ca_file)),
        *("--trust-anchor", str(lab.trust_anchors), *stages.stdout.split(), domain),
    )
    report = json.loads(check.stdout)
    return {f["code"] for f in report["findings"] if f["severity"] != "ok"}, stages.stderr


@pytest.mark.parametrize(
    "domain",
    ["mxcname.test", "smtp-refused.test", "dmarc-weak.test", "ac-deadport.test", "healthy.test"],
)
def test_the_demo_shows_a_scenario_s_own_faults_only(lab: Lab, domain: str) -> None:
    found, said = demo(lab, domain)
    assert found == BY_DOMAIN[domain].expect
    if domain != "healthy.test":  # every stage, and nothing to explain
        assert f"lab scenario {domain}: {BY_DOMAIN[domain].about}" in said
        assert "give --stage to choose others" in said
