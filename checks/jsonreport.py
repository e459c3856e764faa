"""The Report as JSON: the stable, documented machine interface.

The shape is written down in `checks/schema/report.schema.json`; bump
SCHEMA_VERSION when a change could break a consumer (removing or retyping a
field), not when adding one.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from checks.model import Finding, Report, Target

SCHEMA_VERSION = 1


def _target(t: Target) -> dict[str, Any]:
    return {"host": t.host, "address": t.address, "port": t.port, "protocol": t.protocol}


def finding_to_dict(f: Finding) -> dict[str, Any]:
    return {
        "code": f.code,
        "severity": f.severity.value,
        "stage": f.stage.value,
        "target": _target(f.target),
        "summary": f.summary,
        "detail": f.detail,
        "evidence": list(f.evidence),
        "fix": f.fix,
        "reproduce": f.reproduce,
        "data": dict(f.data),
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    req = report.request
    return {
        "schema_version": SCHEMA_VERSION,
        "domain": req.domain,
        "domain_display": req.display,
        "input": req.original,
        "stages": sorted(s.value for s in req.stages) if req.stages is not None else None,
        "started_at": report.started_at.isoformat(),
        "duration": round(report.duration, 4),
        "worst": report.worst.value,
        "counts": {s.value: n for s, n in report.counts().items()},
        "findings": [finding_to_dict(f) for f in report.findings],
        "timings": [
            {
                "probe": t.probe,
                "stage": t.stage.value,
                "started": round(t.started, 4),
                "duration": round(t.duration, 4),
                "outcome": t.outcome,
            }
            for t in report.timings
        ],
        "transcripts": {k: list(v) for k, v in report.transcripts.items()},
        "facts": dict(report.facts),
    }


def dumps(report: Report | dict[str, Any]) -> str:
    """The report's JSON text (from the Report, or from its report_to_dict())."""
    data = report if isinstance(report, dict) else report_to_dict(report)
    return json.dumps(data, indent=2, ensure_ascii=False)


def schema() -> dict[str, Any]:
    text = resources.files("checks").joinpath("schema/report.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
