"""The stages: the modules whose probes a check runs, and the registry the
runner reads to find them.

A stage module lists its probes in `PROBES`. It is imported only when a check
wants one of its stages (or a stage that needs them), so that a DNS-only check
imports no TLS, HTTP or mail-protocol stack (issue 18).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from checks.core.model import Stage
from checks.stages.probe import Probe

# The modules of the probes, in planning order, with the stages of their probes.
PROBE_MODULES: tuple[tuple[str, frozenset[Stage]], ...] = (
    ("checks.stages.dns", frozenset({Stage.DNS})),
    ("checks.stages.consistency", frozenset({Stage.DNS, Stage.POLICY})),
    ("checks.stages.smtp", frozenset({Stage.CONNECT})),
    ("checks.stages.mailbox", frozenset({Stage.CONNECT})),
    ("checks.stages.tls", frozenset({Stage.TLS})),
    ("checks.stages.policy", frozenset({Stage.POLICY})),
    ("checks.stages.mtasts", frozenset({Stage.POLICY})),
    ("checks.stages.dnssec", frozenset({Stage.POLICY})),
    ("checks.stages.dane", frozenset({Stage.POLICY})),
    ("checks.stages.tlspolicy", frozenset({Stage.TLS})),
    ("checks.stages.autoconfig", frozenset({Stage.AUTOCONFIG})),
    ("checks.stages.auth", frozenset({Stage.AUTH})),
    ("checks.stages.delivery", frozenset({Stage.DELIVERY})),
)


def default_probes(stages: Iterable[Stage] | None = None) -> tuple[Probe, ...]:
    """The engine's probes, in planning order; with `stages`, only those of the
    modules holding probes of these stages or of the stages they need, so that
    a DNS-only check imports no TLS, HTTP or mail-protocol stack (issue 18).
    A probe's name starts with its stage ("connect.smtp"): a probe needed but
    not yet imported names the stage to import next (every one, failing that).
    Each is imported on first use."""
    wanted = set(Stage) if stages is None else set(stages)
    while True:
        probes = tuple(
            probe
            for module, held in PROBE_MODULES
            if held & wanted
            for probe in importlib.import_module(module).PROBES
        )
        known = {p.name for p in probes}
        missing = {n for p in probes if p.stage in wanted for n in (*p.needs, *p.follows)} - known
        if not missing or wanted == set(Stage):
            return probes
        named = {s for s in Stage if any(n.startswith(f"{s.value}.") for n in missing)}
        wanted |= named if named - wanted else set(Stage)


def available_stages(probes: Iterable[Probe] | None = None) -> list[Stage]:
    present = {p.stage for p in (probes if probes is not None else default_probes())}
    return [s for s in Stage if s in present]
