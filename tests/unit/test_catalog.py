"""The catalog is the single source of finding codes."""

import ast
import re
from pathlib import Path

import pytest

from checks.core import catalog
from checks.core.model import Target

ROOT = Path(__file__).resolve().parents[2]
# Codes are written as literals where findings are made: catalog.finding("mx.cname", ...),
# ctx.add("mx.cname", ...), or a module's helper taking (ctx, "code", ...).
EMITTERS = {"finding", "add", "_about_mx"}


def emitted_codes() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "checks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in EMITTERS:
                continue
            literal = next(
                (
                    a.value
                    for a in node.args[:2]
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                ),
                None,
            )
            if literal is not None:
                found.setdefault(literal, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_code_the_engine_emits_is_catalogued() -> None:
    unknown = {c: where for c, where in emitted_codes().items() if c not in catalog.CATALOG}
    assert unknown == {}, f"codes used but not in checks/core/catalog.py: {unknown}"


def mentioned_codes() -> set[str]:
    """Every catalogued code spelled out as a string anywhere in checks/ but the catalog."""
    found = set()
    for path in (ROOT / "checks").rglob("*.py"):
        if path.name == "catalog.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in catalog.CATALOG:
                found.add(node.value)
    return found


def test_every_catalogued_code_is_emitted_somewhere() -> None:
    dead = set(catalog.CATALOG) - mentioned_codes()
    assert dead == set(), f"catalog entries nothing emits: {sorted(dead)}"


def test_finding_refuses_unknown_codes() -> None:
    with pytest.raises(KeyError, match="not in the catalog"):
        catalog.finding("mx.made_up", target=Target(host="x.test"), summary="s")


def test_entries_are_complete() -> None:
    for e in catalog.CATALOG.values():
        assert re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", e.code), e.code
        assert e.title and e.why, e.code
        assert e.fix or e.severity.value == "ok", f"{e.code} has no fix"


def test_finding_takes_defaults_from_the_catalog() -> None:
    f = catalog.finding("mx.cname", target=Target(host="mx.x.test"), summary="s")
    e = catalog.entry("mx.cname")
    assert (f.severity, f.stage, f.detail, f.fix) == (e.severity, e.stage, e.why, e.fix)


def test_docs_findings_md_is_generated_from_the_catalog() -> None:
    committed = (ROOT / "docs" / "findings.md").read_text()
    assert committed.strip() == catalog.markdown().strip(), (
        "docs/findings.md is stale: run `mailcheck codes --markdown > docs/findings.md`"
    )
