"""A host that drops every packet costs a check one connect timeout, not one per probe.

blackhole.test puts its MX, its web and autoconfig names and every name
Thunderbird guesses on the lab's filtered address (iptables DROP). Before,
the autoconfig stage waited a timeout for the client's configuration, then
another for its guesses, and Outlook's http redirect probe a third before its
POSTs. Now the first timeout on the address is remembered for the check:
later connects to it get that outcome at once, named as such. (The time it
saves is printed by bench/silent_host.py; here the behaviour is asserted.)
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import pytest

from checks.core.config import EngineConfig
from checks.core.model import CheckRequest, Report
from checks.engine.runner import run

pytestmark = pytest.mark.lab
SILENT = "127.1.20.2"


@pytest.fixture
def config(lab_config: EngineConfig, mail_lab: str) -> EngineConfig:
    timeouts = replace(lab_config.timeouts, connect=2.0)
    return replace(lab_config, timeouts=timeouts, ca_file=mail_lab)


def dials(report: Report) -> tuple[Counter[int], Counter[int]]:
    """Per port of the silent address: connects that waited out the timeout,
    and connects answered from the check's memory of it."""
    waited: Counter[int] = Counter()
    remembered: Counter[int] = Counter()
    pattern = re.compile(rf"\[{re.escape(SILENT)}\]:(\d+)\S*: (no answer to connect|not tried)")
    for lines in report.transcripts.values():
        for line in lines:
            if m := pattern.search(line):
                (waited if m[2].startswith("no answer") else remembered)[int(m[1])] += 1
    return waited, remembered


async def test_a_silent_host_is_waited_for_once_per_check(config: EngineConfig) -> None:
    report = await run(CheckRequest("blackhole.test", "blackhole.test", "blackhole.test"), config)
    waited, remembered = dials(report)
    # Port 25 times out on its own (a checker's network may block it alone);
    # the first other port that times out speaks for the whole host.
    assert waited[25] == 1, (waited, remembered)
    web = {p for p in waited if p != 25}
    assert web and web <= {80, 443}, waited  # the discovery's first, concurrent round
    assert all(n == 1 for n in waited.values()), waited  # no port dialled twice
    # Thunderbird's guesses (IMAP, POP3, submission ports) and the later
    # autoconfig fetches were answered from memory, not dialled.
    assert {143, 993, 110, 995, 587, 465} <= set(remembered), remembered
    codes = {f.code for f in report.findings}
    assert {"smtp.connect.timeout", "autoconfig.missing"} <= codes
    timeouts = [f for f in report.findings if f.code == "smtp.connect.timeout"]
    assert all(SILENT in (f.target.address or "") for f in timeouts)
    told = [e for f in report.findings for e in (f.summary, *f.evidence) if "not tried again" in e]
    assert told, "a remembered outcome is named as such"
