"""worker/sources/ imports one way (docs/sources.md): every module sits in one layer and imports only
its own layer or those below; the graph has no cycle; the fast readers never import a dialect. Every
import counts, those inside functions too."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import worker.sources

SOURCES = Path(worker.sources.__file__).parent
PACKAGE = "worker.sources"
# Bottom to top.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("contract and per-value converters", frozenset({
        "base", "arrays", "jsontext", "columnar", "fastjson", "converters", "typemap", "typedoc", "dialect",
        "read_ahead", "key_bounds",
    })),
    ("fast readers", frozenset({"fastpath", "pg_copy", "pg_parallel", "mysql_raw", "mysql_doubles",
                                "mysql_ranges"})),
    ("the sources: generic, and the in-memory stub", frozenset({"sqlalchemy_source", "memory"})),
    ("dialects, and their change logs", frozenset({"postgresql", "mysql", "sqlite", "cdc_table", "pg_cdc",
                                                   "mysql_cdc"})),
    ("registry", frozenset({"__init__"})),
)
DIALECTS = LAYERS[3][1]
FAST_READERS = LAYERS[1][1]
# What sources may use from the rest of the worker: never the runner, sinks, transport or commands.
OUTSIDE_ALLOWED = frozenset({
    "worker.cdc", "worker.classify", "worker.columns", "worker.constants", "worker.errors", "worker.memory",
    "worker.messages", "worker.modes", "worker.names", "worker.secrets", "worker.window",
})


def modules() -> set[str]:
    return {path.stem for path in SOURCES.glob("*.py")}


def imported(tree: ast.AST, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules of worker.sources, other worker modules) that `tree` imports anywhere in its body."""
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):  # every node: module level, functions, classes, conditionals
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, "worker.sources uses absolute imports"
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            _sort(name, known, inside, outside)
    return inside, outside


def _sort(name: str, known: set[str], inside: set[str], outside: set[str]) -> None:
    if name.startswith(PACKAGE + "."):
        module = name.removeprefix(PACKAGE + ".").split(".")[0]
        inside.add(module if module in known else "__init__")  # a name of the package: its __init__
    elif name.startswith("worker."):
        parts = name.split(".")
        outside.add(".".join(parts[:2]))


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for module in known:
        tree = ast.parse((SOURCES / f"{module}.py").read_text(encoding="utf-8"))
        edges[module] = imported(tree, known)[0] - {module}
    return edges


def layer_of(module: str) -> int:
    return next(index for index, (_name, members) in enumerate(LAYERS) if module in members)


def test_every_module_has_its_layer() -> None:
    placed = set().union(*(members for _name, members in LAYERS))
    assert modules() == placed, "place a new module in LAYERS (and in docs/sources.md)"


def test_imports_run_one_way() -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in graph().items() for target in targets if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    try:
        order = list(TopologicalSorter(graph()).static_order())
    except CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")
    assert set(order) == modules()


def test_fast_readers_never_import_a_dialect() -> None:
    edges = graph()
    assert [(reader, edges[reader] & DIALECTS) for reader in FAST_READERS if edges[reader] & DIALECTS] == []


def test_sources_use_no_runner_sink_or_transport() -> None:
    known = modules()
    used = set().union(*(
        imported(ast.parse((SOURCES / f"{module}.py").read_text(encoding="utf-8")), known)[1]
        for module in known
    ))
    assert used <= OUTSIDE_ALLOWED


def test_function_level_and_package_imports_are_seen() -> None:
    # The check itself: an import inside a function, and a name of the package, are edges too.
    tree = ast.parse("def f():\n    from worker.sources import mysql, get_source\n    import worker.runner\n")
    assert imported(tree, {"mysql"}) == ({"mysql", "__init__"}, {"worker.runner"})
