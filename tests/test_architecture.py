"""The package's layout, read from its own import statements (every ``import`` and ``from``,
at module level or inside a function): no import circle between files, and imports run one
way through the stages, from the CLI down to capture.

A module may import from its own stage or an earlier one in ``STAGES``; inside ``emit/`` the
same holds for its rooms (``EMIT_ROOMS``). Each file stays small enough to hold in mind.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "muprewrite"

# earliest first: shared errors and file writing, the rules, then the pipeline's stages,
# the tools built on them, the package's public API, and the command line on top
STAGES = ("errors", "files", "rules", "capture", "dims", "analysis", "rewrite", "spec",
          "training", "emit", "verify", "__init__", "cli")
# inside emit/: the libcst helpers and the stage's error, finding sites in the source,
# deciding the edits, writing the files, the orchestration, and the package's exports
EMIT_ROOMS = ("errors", "cst", "find", "plan", "write", "emitter", "__init__")
MAX_LINES = 400


def _name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph(package: Path = PACKAGE) -> nx.DiGraph:
    modules = {_name(p, package): p for p in package.rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    graph.add_edge(name, target, line=f"{path.name}:{node.lineno}")
    return graph


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return _graph()


def _place(module: str, order: tuple[str, ...], depth: int) -> int | None:
    parts = module.split(".")
    part = parts[depth] if len(parts) > depth else "__init__"
    return order.index(part) if part in order else None


def test_the_walk_sees_the_package(graph: nx.DiGraph) -> None:
    """The graph is the package's: every stage has modules and they import each other."""
    assert {m.split(".")[1] for m in graph if m.count(".")} >= set(STAGES) - {"__init__"}
    assert graph.number_of_edges() > 300


def test_no_import_circle_between_files(graph: nx.DiGraph) -> None:
    circles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not circles, f"import circles: {circles}"


def test_stages_import_only_earlier_stages(graph: nx.DiGraph) -> None:
    every = {m.split(".")[1] if m.count(".") else "__init__" for m in graph}
    assert every <= set(STAGES), f"modules in no stage: {sorted(every - set(STAGES))}"
    wrong = [f"{a} -> {b} ({graph.edges[a, b]['line']})" for a, b in graph.edges
             if _place(a, STAGES, 1) < _place(b, STAGES, 1)]  # type: ignore[operator]
    assert not wrong, "imports from a later stage: " + "; ".join(wrong)


def test_emit_rooms_import_only_earlier_rooms(graph: nx.DiGraph) -> None:
    emit = [m for m in graph if m.startswith("muprewrite.emit.")]
    missing = sorted({m.split(".")[2] for m in emit} - set(EMIT_ROOMS))
    assert not missing, f"emit/ parts in no room: {missing}"
    wrong = [f"{a} -> {b} ({graph.edges[a, b]['line']})" for a, b in graph.edges
             if a.startswith("muprewrite.emit") and b.startswith("muprewrite.emit.")
             and _place(a, EMIT_ROOMS, 2) < _place(b, EMIT_ROOMS, 2)]  # type: ignore[operator]
    assert not wrong, "imports from a later room of emit/: " + "; ".join(wrong)


def test_no_file_over_the_limit() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_a_circle_and_a_backward_import_are_seen(tmp_path: Path) -> None:
    """The checks can fail: a two-file package with a circle and a backward import."""
    pkg = tmp_path / "muprewrite"
    (pkg / "capture").mkdir(parents=True)
    (pkg / "cli").mkdir()
    for part in ("", "capture/", "cli/"):
        (pkg / f"{part}__init__.py").write_text("")
    (pkg / "capture" / "a.py").write_text("from ..cli import b\n")
    (pkg / "cli" / "b.py").write_text("from ..capture import a\n")
    small = _graph(pkg)
    assert any(len(c) > 1 for c in nx.strongly_connected_components(small))
    assert ("muprewrite.capture.a", "muprewrite.cli.b") in small.edges
    assert _place("muprewrite.capture.a", STAGES, 1) < _place("muprewrite.cli.b", STAGES, 1)
