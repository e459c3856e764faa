"""Per-check budgets: spent at the door, capped in the probes, reported once.

A hostile zone can name thousands of MX hosts, addresses or SPF terms, and a
check that follows them all becomes a flood against whoever those names point
at. So each check has a `Ledger` (one per `Network`, hence per check) holding
its `Budgets`:

- the network door spends the connection and DNS query budgets on every TCP
  connection and every new DNS question, and once one is spent raises
  ConnectBudgetExceeded / QueryBudgetExceeded (which probes already handle as
  a refused target and a failed lookup);
- probes that follow a list a zone controls (MX hosts, addresses, SRV
  targets, DKIM selectors, blocklists, the SPF diagnosis' questions) keep the
  first items with `cap` and the ledger records the rest;
- the runner turns each budget hit into ONE `engine.budget.exceeded` finding,
  at the end of the probe that hit it first (`charging` says which probe is
  running), and puts every budget's use in the report's facts.

The door also keeps a few connections at a time per /24 (IPv4) or /64 (IPv6):
many addresses of one network are usually one operator's servers.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from checks.core import catalog
from checks.core.config import Budgets
from checks.core.errors import ConnectBudgetExceeded, QueryBudgetExceeded
from checks.core.model import Finding, Stage, Target
from checks.core.text import untrusted

T = TypeVar("T")

EXAMPLES = 5  # skipped items named in a finding's evidence
_SEEN = 10_000  # skipped items remembered to count each once; past that, all are counted


@dataclass(frozen=True)
class Spec:
    setting: str  # the environment variable that sets it (bot.settings)
    unit: str  # what the limit counts
    skipped: str  # what one skipped item is, as "N <skipped>"
    least: int = 1  # the smallest value that makes sense


BUDGETS: dict[str, Spec] = {
    "mx_hosts": Spec("MAILCHECK_MAX_MX_HOSTS", "MX hosts", "MX hosts not checked"),
    "addresses": Spec(
        "MAILCHECK_MAX_ADDRESSES", "addresses per host and family", "addresses not tried"
    ),
    "srv_targets": Spec(
        "MAILCHECK_MAX_SRV_TARGETS", "targets per SRV name", "SRV targets not tried"
    ),
    "redirects": Spec("MAILCHECK_MAX_REDIRECTS", "redirects", "redirects not followed"),
    "dkim_selectors": Spec(
        "MAILCHECK_MAX_DKIM_SELECTORS", "DKIM selectors", "selectors not looked up"
    ),
    "dnsbl_zones": Spec("MAILCHECK_MAX_DNSBL_ZONES", "blocklists", "blocklists not asked"),
    "connections": Spec(
        "MAILCHECK_MAX_CONNECTIONS", "TCP connections per check", "connections not made"
    ),
    "dns_queries": Spec(
        "MAILCHECK_MAX_DNS_QUERIES", "DNS queries per check", "DNS questions not asked"
    ),
    "spf_queries": Spec(
        "MAILCHECK_MAX_SPF_QUERIES",
        "DNS queries for the SPF diagnosis",
        "SPF diagnosis questions not asked",
    ),
    # Two at least: the delivery round trip holds its IMAP connection while it
    # submits the message, often to the same network.
    "prefix_connections": Spec(
        "MAILCHECK_MAX_PREFIX_CONNECTIONS", "connections open at once to one /24 or /64", "", 2
    ),
}
# Spent by the door as the check goes: whoever hits them first reports them,
# so their count is "at least" (the report's facts have the total).
_RUNNING = frozenset({"connections", "dns_queries"})

# The probe running in this context, and its stage (set by the runner).
_probe: ContextVar[tuple[str, Stage] | None] = ContextVar("mailcheck_budget_probe", default=None)


@contextmanager
def charging(probe: str, stage: Stage) -> Iterator[None]:
    """Budget hits in this context (and the tasks it starts) are `probe`'s."""
    token = _probe.set((probe, stage))
    try:
        yield
    finally:
        _probe.reset(token)


def spent(name: str, budgets: Budgets) -> str:
    """'the budget of 8 addresses per host and family (MAILCHECK_MAX_ADDRESSES)'."""
    spec = BUDGETS[name]
    return f"the budget of {getattr(budgets, name)} {spec.unit} ({spec.setting})"


@dataclass
class _Hit:
    probe: str | None
    stage: Stage
    skipped: int = 0
    examples: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    reported: bool = False


class Ledger:
    """One check's budgets and what it has spent of them."""

    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets
        self.connections = 0
        self.queries = 0
        self._hits: dict[str, _Hit] = {}
        self._prefixes: dict[str, asyncio.Semaphore] = {}

    # -- spent by the door -------------------------------------------------------------

    def spend_connection(self, address: str, port: int) -> None:
        """Count one TCP connection; ConnectBudgetExceeded once the budget is spent."""
        where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        if self.connections >= self.budgets.connections:
            self.skip("connections", [where])
            raise ConnectBudgetExceeded(
                "connections",
                address,
                f"not connected to {where}: {spent('connections', self.budgets)} is spent",
            )
        self.connections += 1

    def spend_query(self, qname: str, rdtype: str) -> None:
        """Count one new DNS question; QueryBudgetExceeded once the budget is spent."""
        if self.queries >= self.budgets.dns_queries:
            self.skip("dns_queries", [f"{rdtype} {qname}"])
            raise QueryBudgetExceeded(
                "dns_queries",
                qname,
                rdtype,
                f"not asked: {spent('dns_queries', self.budgets)} is spent",
            )
        self.queries += 1

    def prefix_slot(self, address: str) -> asyncio.Semaphore:
        """The semaphore of the address' /24 (IPv4) or /64 (IPv6)."""
        ip = ipaddress.ip_address(address)
        network = ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False)
        return self._prefixes.setdefault(
            str(network), asyncio.Semaphore(self.budgets.prefix_connections)
        )

    # -- capped by the probes ---------------------------------------------------------------

    def cap(self, name: str, items: Sequence[T], label: Callable[[T], str] = str) -> list[T]:
        """The first items the budget allows; the rest are recorded as skipped."""
        limit: int = getattr(self.budgets, name)
        if len(items) > limit:
            self.skip(name, (label(item) for item in items[limit:]))
        return list(items[:limit])

    def skip(self, name: str, items: Iterable[str]) -> None:
        """Record items left out for budget `name` (each counted once)."""
        items = list(items)
        if not items:
            return
        hit = self._hits.get(name)
        if hit is None:
            probe, stage = _probe.get() or (None, Stage.DNS)
            hit = self._hits[name] = _Hit(probe, stage)
        for item in items:
            if item in hit.seen:
                continue
            if len(hit.seen) < _SEEN:
                hit.seen.add(item)
            hit.skipped += 1
            if len(hit.examples) < EXAMPLES:
                hit.examples.append(untrusted(item, 300))

    # -- reported by the runner ---------------------------------------------------------------

    def findings(self, domain: str, probe: str | None = None) -> list[Finding]:
        """One `engine.budget.exceeded` per budget hit first by `probe` (None:
        by any probe) and not reported yet."""
        found = []
        for name, hit in self._hits.items():
            if hit.reported or (probe is not None and hit.probe != probe):
                continue
            hit.reported = True
            found.append(self._finding(name, hit, domain))
        return found

    def _finding(self, name: str, hit: _Hit, domain: str) -> Finding:
        spec = BUDGETS[name]
        count = f"{'at least ' if name in _RUNNING else ''}{hit.skipped:,} {spec.skipped}"
        more = hit.skipped - len(hit.examples)
        data: dict[str, Any] = {
            "budget": name,
            "setting": spec.setting,
            "limit": getattr(self.budgets, name),
            "skipped": hit.skipped,
        }
        return catalog.finding(
            "engine.budget.exceeded",
            target=Target(host=domain),
            summary=f"{spent(name, self.budgets)} was reached: {count}",
            evidence=[*hit.examples, *([f"... and {more:,} more"] if more > 0 else [])],
            stage=hit.stage,
            data=data,
        )

    def usage(self) -> dict[str, Any]:
        """The budgets used and hit, for the report's facts."""
        return {
            "connections": self.connections,
            "dns_queries": self.queries,
            "exceeded": {name: hit.skipped for name, hit in self._hits.items()},
        }

    @property
    def exceeded(self) -> bool:
        return bool(self._hits)
