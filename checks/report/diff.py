"""What changed between two reports of the same domain.

Works on the JSON form (`checks.report.jsonreport`), which is what is stored: new
and resolved problems (findings above ok, matched by code and target), the
records an admin watches (MX set, SPF and DMARC records, each certificate's
serial and expiry, the DNSSEC status, the MTA-STS mode), and large changes
in how long the check or a probe took. Lines are plain text: renderers
escape them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Problem = tuple[str, str, str]  # severity, code, summary

# A probe is "much slower" when it takes this factor longer and this many seconds more.
SLOWER_FACTOR = 2.0
SLOWER_SECONDS = 1.0


@dataclass(frozen=True)
class ReportDiff:
    new: tuple[Problem, ...] = ()
    resolved: tuple[Problem, ...] = ()
    records: tuple[str, ...] = ()
    latency: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.new or self.resolved or self.records or self.latency)

    def lines(self) -> list[str]:
        out = [f"new {sev}: {code}: {summary}" for sev, code, summary in self.new]
        out += [f"resolved {sev}: {code}: {summary}" for sev, code, summary in self.resolved]
        out += list(self.records) + list(self.latency)
        return out


def _stages(report: dict[str, Any]) -> set[str] | None:
    stages = report.get("stages")
    return None if stages is None else set(stages)


def _problems(report: dict[str, Any], stages: set[str] | None) -> dict[tuple[str, str], Problem]:
    found: dict[tuple[str, str], Problem] = {}
    for f in report.get("findings", []):
        if f.get("severity") == "ok" or (stages is not None and f.get("stage") not in stages):
            continue
        t = f.get("target") or {}
        where = f"{t.get('host')}|{t.get('address')}|{t.get('port')}"
        found.setdefault((f["code"], where), (f["severity"], f["code"], f.get("summary", "")))
    return found


def _records(facts: dict[str, Any]) -> dict[str, str]:
    """The watched records of a report, as comparable one-line texts."""
    out: dict[str, str] = {}
    if "mx" in facts:
        out["MX"] = ", ".join(f"{p} {h}" for p, h in facts["mx"]) or "(none)"
    spf = facts.get("spf")
    if isinstance(spf, dict) and spf.get("record"):
        out["SPF"] = str(spf["record"])
    dmarc = facts.get("dmarc")
    if isinstance(dmarc, dict) and dmarc.get("record"):
        out["DMARC"] = str(dmarc["record"])
    if isinstance(facts.get("dnssec"), dict):
        out["DNSSEC"] = str(facts["dnssec"].get("status"))
    if isinstance(facts.get("mtasts"), dict):
        out["MTA-STS"] = f"mode {facts['mtasts'].get('mode')} (id {facts['mtasts'].get('id')})"
    for endpoint, seen in (facts.get("tls") or {}).items():
        certs = seen.get("certificates") or []
        if certs:
            leaf = certs[0]
            out[f"certificate {endpoint}"] = (
                f"serial {leaf.get('serial')}, expires {str(leaf.get('not_after'))[:10]}"
            )
    return out


def _durations(report: dict[str, Any]) -> dict[str, float]:
    times = {t["probe"]: float(t["duration"]) for t in report.get("timings", [])}
    times["the whole check"] = float(report.get("duration") or 0.0)
    return times


def diff_reports(before: dict[str, Any], after: dict[str, Any]) -> ReportDiff:
    # Problems count only in stages both runs checked: a narrower run resolves nothing.
    a, b = _stages(before), _stages(after)
    common = b if a is None else a if b is None else a & b
    old, now = _problems(before, common), _problems(after, common)
    new = tuple(now[k] for k in now if k not in old)
    resolved = tuple(old[k] for k in old if k not in now)
    was, is_ = _records(before.get("facts") or {}), _records(after.get("facts") or {})
    records = tuple(
        f"{name}: {was.get(name, '(not seen)')} -> {is_.get(name, '(not seen)')}"
        for name in sorted(set(was) | set(is_))
        # Only what both runs looked at: a narrower check is no removal.
        if name in was and name in is_ and was[name] != is_[name]
    )
    slow_before, slow_after = _durations(before), _durations(after)
    latency = tuple(
        f"{probe} took {slow_before[probe]:.1f} s -> {slow_after[probe]:.1f} s"
        for probe in slow_after
        if probe in slow_before
        and abs(slow_after[probe] - slow_before[probe]) >= SLOWER_SECONDS
        and max(slow_after[probe], slow_before[probe])
        >= SLOWER_FACTOR * max(min(slow_after[probe], slow_before[probe]), 0.001)
    )
    return ReportDiff(new, resolved, records, latency)
