"""Project rules that are cheap to check on every run."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_engine_imports_no_chat_or_queue_libraries() -> None:
    banned = ("slack_bolt", "slack_sdk", "redis", "saq", "bot")
    for path in (ROOT / "checks").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for block in ast.walk(tree):
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING":
                block.body = []
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


HANGING_TEST = """
import asyncio

import pytest


@pytest.fixture
async def stuck():
    yield
    await asyncio.sleep(3600)  # a teardown that never ends


async def test_fails_then_hangs(stuck):
    assert False  # pytest cancels faulthandler's timer on a failure
"""


def test_the_watchdog_ends_a_run_that_hangs_after_a_failure(tmp_path: Path) -> None:
    """A failed test whose teardown hangs must not eat CI's time limit (it
    did once: pytest's faulthandler plugin cancelled the old watchdog)."""
    (tmp_path / "test_hang.py").write_text(HANGING_TEST)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            "--rootdir",
            str(tmp_path),
            "-o",
            "asyncio_mode=auto",
            str(tmp_path / "test_hang.py"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MAILCHECK_TEST_WATCHDOG": "3"},
        timeout=60,
    )
    assert result.returncode == 70, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert "test_hang.py::test_fails_then_hangs still running after 3 s" in shown
    assert "async_finalizer" in shown  # where it hung


# -- the engine's layers ---------------------------------------------------------
#
# Each module's layer is its folder (the longest matching name prefix), lowest
# first. A layer imports only from the layers it may use (`MAY_USE`): rules are
# pure judgements, so they use no door; the report forms read finished Reports.
LAYERS: dict[str, tuple[str, ...]] = {
    "core": ("checks.core",),
    "net": ("checks.net",),
    "protocols": ("checks.protocols",),
    "rules": ("checks.rules",),
    "stages": ("checks.stages",),
    "report": ("checks.report",),
    "engine": ("checks", "checks.engine"),  # `checks` itself: the engine's public face
    "fronts": ("bot",),
}
MAY_USE = {
    "core": {"core"},
    "net": {"core", "net"},
    "rules": {"core", "rules"},
    "protocols": {"core", "net", "protocols"},
    "stages": {"core", "net", "protocols", "rules", "stages"},
    "report": {"core", "report"},
    "engine": {"core", "net", "protocols", "rules", "stages", "report", "engine"},
    "fronts": set(LAYERS),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("checks", "bot"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, anywhere in it (late imports
    too), and those it names in a string (`importlib.import_module(name)`).
    Imports under `if TYPE_CHECKING:` never run and are left out: a table of
    typed keys (checks.stages.keys) names the types of the stages that use it."""

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: list[str] = []
        tree = ast.parse(path.read_text())
        for block in ast.walk(tree):
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING":
                block.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                # `from checks import catalog` imports checks.core.catalog, not the facade
                targets += [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            elif isinstance(node, ast.Constant) and node.value in modules and "." in node.value:
                targets.append(node.value)  # a late import by name (not package data's "checks")
        graph[module] = {t for t in map(ours, targets) if t and t != module}
    return graph


def _layer(module: str) -> str:
    best = max(
        (
            (prefix, layer)
            for layer, prefixes in LAYERS.items()
            for prefix in prefixes
            if module == prefix or module.startswith(prefix + ".")
        ),
        key=lambda hit: len(hit[0]),
        default=None,
    )
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return best[1]


def test_the_imports_form_no_loop() -> None:
    graph = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert loops == []


def test_each_layer_imports_only_from_the_layers_below() -> None:
    graph = _imports(_modules())
    upward = {
        (module, other)
        for module, others in graph.items()
        for other in others
        if _layer(other) not in MAY_USE[_layer(module)]
    }
    assert upward == set(), "imports against the layer order"
