"""The engine's value types: what a check is asked, what it finds, what it reports.

Everything here is a frozen dataclass or an enum, so a report can be shared
between tasks, cached, serialised and compared without defensive copies.
Renderers (terminal, JSON, Slack) read these types and never add meaning.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@functools.total_ordering
class Severity(enum.Enum):
    """How bad a finding is, ordered: ok < info < inconclusive < warning < error.

    `inconclusive` sits below `warning` on purpose: a server that rate-limits
    us, or a resolver that times out, tells us nothing about the domain, and
    must not raise an alarm, yet it must not pass for "fine" either.
    """

    OK = "ok"
    INFO = "info"
    INCONCLUSIVE = "inconclusive"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


_RANK = {s: i for i, s in enumerate(Severity)}


class Stage(enum.Enum):
    """The expert's order, from DNS outwards."""

    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    POLICY = "policy"
    AUTH = "auth"
    AUTOCONFIG = "autoconfig"
    DELIVERY = "delivery"
    SENDTEST = (
        "sendtest"  # a message the domain sent us (checks.engine.sendtest), not a check stage
    )


# The stages a check (`mailcheck check`, `/mailcheck DOMAIN stage=`) can run;
# the send test's is its own command.
CHECK_STAGES: tuple[Stage, ...] = tuple(s for s in Stage if s is not Stage.SENDTEST)


@dataclass(frozen=True)
class Target:
    """What a finding is about. Every part is optional: a domain-level finding
    has only a host; a socket-level one has all four."""

    host: str | None = None
    address: str | None = None
    port: int | None = None
    protocol: str | None = None

    def label(self) -> str:
        """A short human label such as `mx1.example.com [192.0.2.1]:25/smtp`."""
        parts = self.host or ""
        if self.address and self.address != self.host:
            parts += f" [{self.address}]" if parts else self.address
        if self.port is not None:
            parts += f":{self.port}"
        if self.protocol:
            parts += f"/{self.protocol}"
        return parts


@dataclass(frozen=True)
class Finding:
    """One observation about the domain, with everything needed to act on it.

    `code` is a stable dotted name registered in `checks.core.catalog`; build
    findings with `catalog.finding()`, which fills in the defaults and refuses
    unknown codes. `evidence` holds the transcript lines that prove it;
    `reproduce` the command an admin would type to see it by hand.
    """

    code: str
    severity: Severity
    stage: Stage
    target: Target
    summary: str
    detail: str = ""
    evidence: tuple[str, ...] = ()
    fix: str = ""
    reproduce: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckRequest:
    """What the user asked for. `domain` is the A-label (ASCII) form used on
    the wire; `display` the form to show people (U-labels for an IDN)."""

    domain: str
    display: str
    original: str = ""
    stages: frozenset[Stage] | None = None  # None: every stage
    dkim_selectors: tuple[str, ...] = ()  # tried before the common ones
    sender_ips: tuple[str, ...] = ()  # addresses the domain's mail is sent from (SPF verdicts)
    mobileconfig_url: str | None = None  # an Apple configuration profile to validate
    account: str | None = None  # a test account's name (the secrets stay server-side)

    def wants(self, stage: Stage) -> bool:
        return self.stages is None or stage in self.stages


@dataclass(frozen=True)
class ProbeTiming:
    """When a probe ran, in seconds from the start of the check."""

    probe: str
    stage: Stage
    started: float
    duration: float
    outcome: str  # "done", "failed", "skipped", "deadline"


@dataclass(frozen=True)
class Report:
    request: CheckRequest
    started_at: datetime
    duration: float
    findings: tuple[Finding, ...]
    timings: tuple[ProbeTiming, ...] = ()
    transcripts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.OK)

    def at_least(self, severity: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity >= severity)

    def counts(self) -> dict[Severity, int]:
        counts = dict.fromkeys(Severity, 0)
        for f in self.findings:
            counts[f.severity] += 1
        return counts
