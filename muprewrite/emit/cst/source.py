"""The user's file as the pattern scans see it: libcst nodes with positions and parents.

A scan looks at *functions*: the methods of the classes a captured site belongs to (every
method but ``__init__``, of every class of the module instance's MRO written in the file)
and the file's top-level functions those methods call. Whatever a method's code path, its
calls are in these functions, whether or not a capture ran them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

__all__ = ["SourceFile", "chain", "callee_name", "root_name", "Walker"]


def chain(node: cst.CSTNode) -> str | None:
    """``self.a.b`` -> ``"a.b"``; None for anything else."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name) and node.value == "self" and parts:
        return ".".join(reversed(parts))
    return None


def root_name(node: cst.BaseExpression) -> str:
    """The leftmost name of a dotted path ``a.b.c``; "" for anything else (a call's result)."""
    while isinstance(node, cst.Attribute):
        node = node.value
    return node.value if isinstance(node, cst.Name) else ""


def callee_name(node: cst.BaseExpression) -> str:
    """The last name of a call's function: ``F.linear`` -> ``"linear"``."""
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return node.value if isinstance(node, cst.Name) else ""


class Walker(cst.CSTVisitor):
    """Collects the nodes of the given types (in a function: nested classes excluded)."""

    def __init__(self, types: tuple[type[cst.CSTNode], ...], classes: bool = False) -> None:
        super().__init__()
        self.types = types
        self.classes = classes
        self.found: list[cst.CSTNode] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, self.types):
            self.found.append(node)
        return self.classes or not isinstance(node, cst.ClassDef)


class SourceFile:
    """One parsed file: top-level classes and functions, positions, parents, import names."""

    def __init__(self, wrapper: MetadataWrapper, path: Path) -> None:
        self.path = path
        self.module = wrapper.module
        self.positions = wrapper.resolve(PositionProvider)
        self.parents = wrapper.resolve(ParentNodeProvider)
        body = self.module.body
        self.classes = {s.name.value: s for s in body if isinstance(s, cst.ClassDef)}
        self.functions = {s.name.value: s for s in body if isinstance(s, cst.FunctionDef)}
        self.imported = _imported_names(body)

    def line(self, node: cst.CSTNode) -> int:
        return self.positions[node].start.line

    def contains(self, node: cst.CSTNode, line: int) -> bool:
        pos = self.positions[node]
        return pos.start.line <= line <= pos.end.line

    def where(self, node: cst.CSTNode | int) -> str:
        return f"{self.path}:{node if isinstance(node, int) else self.line(node)}"

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def nodes(self, function: cst.FunctionDef, *types: type[cst.CSTNode]) -> list[cst.CSTNode]:
        walker = Walker(types)
        function.body.visit(walker)
        return walker.found

    def nodes_named(self, name: str) -> list[cst.Name]:
        """Every ``Name`` node spelling ``name`` in the file."""
        walker = Walker((cst.Name,), classes=True)
        self.module.visit(walker)
        return [n for n in walker.found if isinstance(n, cst.Name) and n.value == name]

    def inside(self, node: cst.CSTNode, ancestor: cst.CSTNode) -> bool:
        """Whether ``node`` is ``ancestor`` or lies within it."""
        while node is not self.module:
            if node is ancestor:
                return True
            node = self.parents[node]
        return False

    def top_class(self, node: cst.CSTNode) -> str | None:
        """The top-level class around ``node``, if any."""
        while node is not self.module:
            parent = self.parents[node]
            if parent is self.module and isinstance(node, cst.ClassDef):
                return node.name.value
            node = parent
        return None

    def top_function(self, line: int) -> cst.FunctionDef | None:
        return next((f for f in self.functions.values() if self.contains(f, line)), None)

    def methods(self, classes: Iterable[str]) -> list[cst.FunctionDef]:
        """Every method of ``classes`` (those written in the file) but ``__init__``."""
        return [s for name in classes if name in self.classes
                for s in self.classes[name].body.body
                if isinstance(s, cst.FunctionDef) and s.name.value != "__init__"]

    def called(self, node: cst.CSTNode, classes: Iterable[str]) -> Iterator[cst.FunctionDef]:
        """The methods of ``classes`` (``self.m(...)``) and top-level functions (``f(...)``)
        that the calls inside ``node`` name."""
        methods = {m.name.value: m for m in self.methods(classes)}
        walker = Walker((cst.Call,))
        node.visit(walker)
        for call in walker.found:
            assert isinstance(call, cst.Call)
            name = chain(call.func)
            if name in methods:
                yield methods[name]
            elif isinstance(call.func, cst.Name) and call.func.value in self.functions:
                yield self.functions[call.func.value]

    def reach(self, roots: Iterable[cst.CSTNode], classes: Iterable[str]
              ) -> list[cst.FunctionDef]:
        """The functions called from ``roots``, transitively (``roots`` not included)."""
        classes = tuple(classes)
        seen: list[cst.FunctionDef] = []
        todo = list(roots)
        while todo:
            for function in self.called(todo.pop(), classes):
                if function not in seen:
                    seen.append(function)
                    todo.append(function)
        return seen


def _imported_names(body: Iterable[cst.CSTNode]) -> frozenset[str]:
    """Names the file's top-level imports bind (``F`` for ``import torch.nn.functional as
    F``, ``torch`` for ``import torch``)."""
    names: set[str] = set()
    for stmt in body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            if isinstance(small, (cst.Import, cst.ImportFrom)) and not isinstance(
                    small.names, cst.ImportStar):
                for alias in small.names:
                    if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                        names.add(alias.asname.name.value)
                    else:
                        code = cst.Module([]).code_for_node(alias.name)
                        names.add(code.split(".")[0])
    return frozenset(names)
