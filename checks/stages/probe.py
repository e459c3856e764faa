"""The probe API: what a stage module gives the runner, and what a probe may use.

A probe is an `async def probe(ctx) -> result` plus the names of the probes
whose results it needs (`Probe`). The runner hands each one a `ProbeContext`:
the request, the network door, its dependencies' results, and `emit` for
findings. This module sits below the stages and the runner alike, so a stage
never imports the runner that runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from checks.core import catalog
from checks.core.config import EngineConfig
from checks.core.model import CheckRequest, Finding, Stage
from checks.net.door import Network

T = TypeVar("T")


T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Key(Generic[T_co]):
    """A probe's name with the type of the value it returns, so that mypy
    checks what passes between probes: the producing stage module declares
    `MX_SET: Key[MXSet | None] = Key("dns.mx")`, names its Probe `MX.name`, and a
    consumer reads `ctx.result(MX_SET)`."""

    name: str


@dataclass
class Outcome:
    """How a probe ended, and its value for the probes that need it."""

    status: str  # done | failed | skipped
    value: Any = None
    findings: list[Finding] = field(default_factory=list)


class ProbeContext:
    """What a probe may use: the request, the network door, its dependencies'
    results, and `emit` for findings."""

    def __init__(
        self,
        request: CheckRequest,
        net: Network,
        results: Mapping[str, Any],
        followed: Mapping[str, asyncio.Task[Outcome]] | None = None,
    ) -> None:
        self.request = request
        self.net = net
        self.domain = request.domain
        self._results = results
        self._followed = followed or {}
        self.findings: list[Finding] = []
        self.facts: dict[str, Any] = {}
        self.transcript: list[str] = []

    def result(self, probe: Key[T]) -> T:
        """The value returned by a dependency (declared in `needs`)."""
        value: T = self._results[probe.name]
        return value

    async def followed(self, probe: Key[T]) -> T | None:
        """The value of a probe this one follows (declared in `follows`) once
        it is done; None when it failed or was skipped."""
        outcome = await asyncio.shield(self._followed[probe.name])
        value: T | None = outcome.value if outcome.status == "done" else None
        return value

    def emit(self, finding: Finding) -> None:
        self.findings.append(finding)

    def add(self, code: str, **fields: Any) -> None:
        """Emit a finding for catalogued `code`; `fields` as for `catalog.finding`."""
        self.emit(catalog.finding(code, **fields))

    def fact(self, key: str, value: Any) -> None:
        """Record a JSON-serialisable fact (an MX set, a serial) for reports and diffs."""
        self.facts[key] = value


ProbeFunc = Callable[[ProbeContext], Awaitable[Any]]


@dataclass(frozen=True)
class Probe:
    name: str
    stage: Stage
    run: ProbeFunc
    needs: tuple[str, ...] = ()
    # Planned with this probe and run beside it, not before it: see ProbeContext.followed.
    follows: tuple[str, ...] = ()
    # The (name, type) questions it will ask of DNS: asked at the start of the check.
    asks: Callable[[CheckRequest, EngineConfig], Iterable[tuple[str, str]]] | None = None
