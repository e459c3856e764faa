"""mailcheck's diagnosis engine: a library with no Slack and no Redis in it.

    report = await checks.run(CheckRequest(...), EngineConfig(...))

`checks.engine.runner.stream` yields the same check as events, for live progress.

The names below are imported on first use (PEP 562): every `checks.x` import
runs this file first, and `mailcheck codes` needs the catalog, not the
engine's DNS, TLS and HTTP stacks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from checks.core.config import EngineConfig, Nameserver, Timeouts
    from checks.core.model import CheckRequest, Finding, Report, Severity, Stage, Target
    from checks.core.names import normalize_domain
    from checks.core.targets import TargetPolicy
    from checks.engine.runner import run, stream

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
    "EngineConfig": "checks.core.config",
    "Nameserver": "checks.core.config",
    "Timeouts": "checks.core.config",
    "CheckRequest": "checks.core.model",
    "Finding": "checks.core.model",
    "Report": "checks.core.model",
    "Severity": "checks.core.model",
    "Stage": "checks.core.model",
    "Target": "checks.core.model",
    "normalize_domain": "checks.core.names",
    "run": "checks.engine.runner",
    "stream": "checks.engine.runner",
    "TargetPolicy": "checks.core.targets",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # also how `from checks import catalog` learns to import the submodule
        raise AttributeError(f"module 'checks' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
