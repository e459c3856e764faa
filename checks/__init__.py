"""mailcheck's diagnosis engine: a library with no Slack and no Redis in it.

    report = await checks.run(CheckRequest(...), EngineConfig(...))

`checks.runner.stream` yields the same check as events, for live progress.

The names below are imported on first use (PEP 562): every `checks.x` import
runs this file first, and `mailcheck codes` needs the catalog, not the
engine's DNS, TLS and HTTP stacks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "EngineConfig": "checks.config",
    "Nameserver": "checks.config",
    "Timeouts": "checks.config",
    "CheckRequest": "checks.model",
    "Finding": "checks.model",
    "Report": "checks.model",
    "Severity": "checks.model",
    "Stage": "checks.model",
    "Target": "checks.model",
    "normalize_domain": "checks.names",
    "run": "checks.runner",
    "stream": "checks.runner",
    "TargetPolicy": "checks.targets",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # also how `from checks import catalog` learns to import the submodule
        raise AttributeError(f"module 'checks' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
