"""Right under load: many checks at once report what one check reports.

A hundred concurrent checks of healthy.test make the lab's Postfix answer
`421 too many connections`, Dovecot `-ERR Connection queue full`, hang up
mid-handshake or list SASL without mechanisms, and nginx reset connections.
Each of those is the server being busy: it must come out as an inconclusive
finding that quotes it, never as a mismatch, an invalid file, a missing
STARTTLS or a missing login method (all of which it was).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import pytest

from checks.core.config import EngineConfig
from checks.core.model import CheckRequest, Report, Severity
from checks.engine.runner import run

pytestmark = pytest.mark.lab
CHECKS = 100
NAMED = ("421", "-ERR", "closed the connection", "no login method", "no answer within")


def above_info(report: Report) -> set[tuple[str, str]]:
    return {(f.code, f.severity.value) for f in report.findings if f.severity > Severity.INFO}


async def test_a_hundred_checks_at_once_report_what_one_does(
    lab_config: EngineConfig, mail_lab: str
) -> None:
    # DNS gets time to answer a hundred checks at once: the busy mail and web
    # servers are what this is about.
    timeouts = replace(lab_config.timeouts, dns=10.0)
    config = replace(lab_config, ca_file=mail_lab, timeouts=timeouts)
    request = CheckRequest("healthy.test", "healthy.test", "healthy.test")
    alone = await run(request, config)
    expected = above_info(alone)
    reports = await asyncio.gather(*(run(request, config) for _ in range(CHECKS)))
    busy: Counter[str] = Counter()
    for report in reports:
        for f in report.findings:
            if f.severity <= Severity.INFO or (f.code, f.severity.value) in expected:
                continue
            text = " ".join((f.summary, *f.evidence))
            assert f.severity is Severity.INCONCLUSIVE, (f.code, f.summary, f.evidence[-3:])
            busy[f.code] += 1
            # Named as what it is: the server's own words, the hang-up, the silence.
            assert any(word in text for word in NAMED), (f.code, text[:300])
    print(f"\n{CHECKS} concurrent checks of healthy.test; busy findings: {dict(busy)}")
