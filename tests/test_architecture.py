"""The house rules of docs/architecture.md that import-linter does not check: no import cycle, small modules,
short functions."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("passive", "dissectors") for p in (ROOT / package).rglob("*.py"))
# A module past this many lines does more than one job; a function past this many, more than one step.
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_not_even_for_type_checking() -> None:
    graph = grimp.build_graph("passive", "dissectors", exclude_type_checking_imports=False)
    assert _cycles(graph) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES


def test_functions_are_short() -> None:
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                # Decorators (click options) are declarations, not steps: count from the ``def`` line.
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


DETECTORS = sorted((ROOT / "passive" / "analysis" / "detectors").glob("*.py"))
# The run's shared state, as a detector's session would give it: no method of a class in a detector module touches
# it. Module-level functions (the effects) may, and the methods named here: the session's, which apply the effects,
# and the probe-only ``after_tls``, whose session applies them at once.
SHARED_NAMES = frozenset({"shared", "findings", "stats", "relays"})
READS_SHARED_STATE = {"auth_methods.py": {"after_tls"}, "session.py": {"__init__", "finding", "apply"}}


def test_detectors_change_the_run_s_state_only_through_effects() -> None:
    """docs/architecture.md: a detector reads its session, never the run's findings, statistics or relay ledger
    (a worker process has none to read); what it changes there is an effect (passive/analysis/detectors/base.py)."""
    touching = []
    for path in DETECTORS:
        allowed = READS_SHARED_STATE.get(path.name, set())
        for cls in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(cls, ast.ClassDef):
                continue
            for method in cls.body:
                if not isinstance(method, ast.FunctionDef) or method.name in allowed:
                    continue
                for node in ast.walk(method):
                    if isinstance(node, ast.Attribute) and node.attr in SHARED_NAMES:
                        touching.append(f"{path.name}:{node.lineno} {cls.name}.{method.name} .{node.attr}")
    assert touching == []
