"""mailcheck's diagnosis engine: a library with no Slack and no Redis in it.

    report = await checks.run(CheckRequest(...), EngineConfig(...))

`checks.runner.stream` yields the same check as events, for live progress.
"""

from checks.config import EngineConfig, Nameserver, Timeouts
from checks.model import CheckRequest, Finding, Report, Severity, Stage, Target
from checks.names import normalize_domain
from checks.runner import run, stream
from checks.targets import TargetPolicy

__all__ = [
    "CheckRequest",
    "EngineConfig",
    "Finding",
    "Nameserver",
    "Report",
    "Severity",
    "Stage",
    "Target",
    "TargetPolicy",
    "Timeouts",
    "normalize_domain",
    "run",
    "stream",
]
