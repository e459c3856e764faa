"""The Report as JSON: the stable, documented machine interface.

The shape is written down in `checks/schema/report.schema.json`; bump
SCHEMA_VERSION when a change could break a consumer (removing or retyping a
field), not when adding one.

`loads` reads it back (a report stored in Redis, say). The text is our own
format but passed through a store, so it is checked field by field: anything
the schema would refuse is a ValueError naming the field, never a KeyError or
TypeError from deep inside. Fields the schema makes optional take the
model's defaults; `worst` and `counts` are derived, so they are not read.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

from checks.core.model import CheckRequest, Finding, ProbeTiming, Report, Severity, Stage, Target

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


def loads(text: str) -> Report:
    """The Report of a `dumps()` text. ValueError for text that is not one."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError("report: nested too deeply") from None
    return report_from_dict(_dict(data, "report"))


def report_from_dict(data: dict[str, Any]) -> Report:
    """The Report of a `report_to_dict()` dict: its inverse, but for the
    request's fields the JSON does not carry (left at their defaults).
    ValueError, naming the field, for anything the schema would refuse."""
    data = _dict(data, "report")
    version = _need(data, "schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ValueError(f"schema_version: {version!r:.40} is not {SCHEMA_VERSION}")
    stages = data.get("stages")
    request = CheckRequest(
        domain=_str(_need(data, "domain"), "domain"),
        display=_str(_need(data, "domain_display"), "domain_display"),
        original=_str(data.get("input", ""), "input"),
        stages=None
        if stages is None
        else frozenset(
            _enum(Stage, s, f"stages[{i}]") for i, s in enumerate(_list(stages, "stages"))
        ),
    )
    started_at = _str(_need(data, "started_at"), "started_at")
    try:
        started = datetime.fromisoformat(started_at)
    except ValueError:
        raise ValueError(f"started_at: {started_at!r:.40} is not an ISO 8601 time") from None
    findings = _list(_need(data, "findings"), "findings")
    timings = _list(_need(data, "timings"), "timings")
    transcripts = _dict(data.get("transcripts", {}), "transcripts")
    return Report(
        request=request,
        started_at=started,
        duration=_seconds(_need(data, "duration"), "duration"),
        findings=tuple(_finding(f, f"findings[{i}]") for i, f in enumerate(findings)),
        timings=tuple(_timing(t, f"timings[{i}]") for i, t in enumerate(timings)),
        transcripts={k: _strings(v, f"transcripts[{k!r}]") for k, v in transcripts.items()},
        facts=_dict(data.get("facts", {}), "facts"),
    )


def _finding(value: object, where: str) -> Finding:
    data = _dict(value, where)
    at = f"{where}.target"
    target = _dict(_need(data, "target", where), at)
    port = _need(target, "port", at)
    if port is not None and (type(port) is not int or not 0 <= port <= 65535):
        raise ValueError(f"{at}.port: {port!r:.40} is not a port")
    return Finding(
        code=_str(_need(data, "code", where), f"{where}.code"),
        severity=_enum(Severity, _need(data, "severity", where), f"{where}.severity"),
        stage=_enum(Stage, _need(data, "stage", where), f"{where}.stage"),
        target=Target(
            host=_optional(_need(target, "host", at), f"{at}.host"),
            address=_optional(_need(target, "address", at), f"{at}.address"),
            port=port,
            protocol=_optional(_need(target, "protocol", at), f"{at}.protocol"),
        ),
        summary=_str(_need(data, "summary", where), f"{where}.summary"),
        detail=_str(data.get("detail", ""), f"{where}.detail"),
        evidence=_strings(data.get("evidence", []), f"{where}.evidence"),
        fix=_str(data.get("fix", ""), f"{where}.fix"),
        reproduce=_optional(data.get("reproduce"), f"{where}.reproduce"),
        data=_dict(data.get("data", {}), f"{where}.data"),
    )


def _timing(value: object, where: str) -> ProbeTiming:
    data = _dict(value, where)
    return ProbeTiming(
        probe=_str(_need(data, "probe", where), f"{where}.probe"),
        stage=_enum(Stage, _need(data, "stage", where), f"{where}.stage"),
        started=_seconds(_need(data, "started", where), f"{where}.started"),
        duration=_seconds(_need(data, "duration", where), f"{where}.duration"),
        outcome=_str(_need(data, "outcome", where), f"{where}.outcome"),
    )


_E = TypeVar("_E", bound=enum.Enum)


def _need(data: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in data:
        raise ValueError(f"{where}.{key}: missing" if where else f"{key}: missing")
    return data[key]


def _dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{where}: not an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: not an array")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: not a string")
    return value


def _optional(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _strings(value: object, where: str) -> tuple[str, ...]:
    return tuple(_str(s, f"{where}[{i}]") for i, s in enumerate(_list(value, where)))


def _seconds(value: object, where: str) -> float:
    # bool is an int to Python, and json.loads reads NaN and Infinity.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: not a number")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{where}: {seconds!r} is not a duration in seconds")
    return seconds


def _enum(kind: type[_E], value: object, where: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{where}: unknown {kind.__name__.lower()} {value!r:.40}") from None
