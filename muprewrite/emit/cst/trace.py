"""Following a softmax's input back, through the function's assignments, to its q.k^T product.

Flow-insensitive but ordered: a name read at some point stands for the assignments to it that
come before that point, latest first, up to the first one that every path to the point runs
through (one in the same block or an enclosing one); assignments in ``if``/``else`` branches
before that are alternatives, each followed. Parts of one expression that each hold a product
(``q @ k.T + rel @ pos``) make the product ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import libcst as cst

from .source import SourceFile, callee_name, chain, root_name

__all__ = ["Ambiguous", "Trace", "is_product", "query_of"]

_PRODUCTS = frozenset({"matmul", "bmm", "einsum"})
_META_ATTRS = frozenset({"shape", "dtype", "device", "ndim"})
_META_METHODS = frozenset({"size", "dim", "numel", "stride"})
_DEPTH = 64

Def = tuple[cst.CSTNode, Sequence[cst.BaseExpression]]  # (statement, the parts it combines)


class Ambiguous(Exception):
    def __init__(self, products: Sequence[cst.CSTNode]) -> None:
        super().__init__()
        self.products = products


def _method(src: SourceFile, func: cst.BaseExpression) -> bool:
    """``x.matmul(...)`` on a tensor, not ``torch.matmul(...)`` or ``self.m(...)``."""
    return isinstance(func, cst.Attribute) and chain(func) is None and (
        root_name(func.value) not in src.imported)


def is_product(src: SourceFile, expr: cst.CSTNode) -> bool:
    if isinstance(expr, cst.BinaryOperation):
        return isinstance(expr.operator, cst.MatrixMultiply)
    return isinstance(expr, cst.Call) and callee_name(expr.func) in _PRODUCTS and (
        chain(expr.func) is None)


def query_of(src: SourceFile, product: cst.CSTNode) -> cst.BaseExpression | None:
    """The left factor of a product: ``q`` in ``q @ k.T``, ``torch.matmul(q, k)``,
    ``q.matmul(k)``, ``torch.einsum("...", q, k)``."""
    if isinstance(product, cst.BinaryOperation):
        return product.left
    assert isinstance(product, cst.Call)
    if _method(src, product.func):
        assert isinstance(product.func, cst.Attribute)
        return product.func.value
    args = [a.value for a in product.args if not a.keyword]
    at = 1 if callee_name(product.func) == "einsum" else 0
    return args[at] if len(args) > at else None


class Trace:
    """The assignments of one function, to follow names back to their products."""

    def __init__(self, src: SourceFile, function: cst.FunctionDef) -> None:
        self.src = src
        self.function = function
        self.sampled = False  # a traced value came from a call of the model itself: self(...)
        self.defs: dict[str, list[Def]] = {}
        for node in src.nodes(function, cst.Assign, cst.AnnAssign, cst.AugAssign):
            for name, parts in _assigned(node):
                self.defs.setdefault(name, []).append((node, parts))

    def products(self, expr: cst.BaseExpression, depth: int = 0) -> list[cst.CSTNode]:
        """The products ``expr`` is computed from (alternatives, one per path)."""
        if depth > _DEPTH:
            return []
        if is_product(self.src, expr):
            return [expr]
        if isinstance(expr, cst.Name):
            out: list[cst.CSTNode] = []
            for _stmt, parts in self._reaching(expr):
                out += [p for p in self._combined(parts, depth) if p not in out]
            return out
        if isinstance(expr, cst.IfExp):
            return [*self.products(expr.body, depth + 1), *self.products(expr.orelse, depth + 1)]
        return self._combined(self._parts(expr), depth)

    def _combined(self, parts: Sequence[cst.BaseExpression], depth: int) -> list[cst.CSTNode]:
        found = [p for p in (self.products(x, depth + 1) for x in parts) if p]
        if len(found) > 1:
            raise Ambiguous([n for f in found for n in f])
        return found[0] if found else []

    def _parts(self, expr: cst.BaseExpression) -> list[cst.BaseExpression]:
        if isinstance(expr, cst.BinaryOperation):
            return [expr.left, expr.right]
        if isinstance(expr, cst.UnaryOperation):
            return [expr.expression]
        if isinstance(expr, cst.Subscript):
            return [expr.value]
        if isinstance(expr, cst.Attribute):
            return [] if expr.attr.value in _META_ATTRS or chain(expr) else [expr.value]
        if isinstance(expr, (cst.Tuple, cst.List)):
            return [e.value for e in expr.elements]
        if isinstance(expr, cst.Call):
            args = [a.value for a in expr.args]
            if isinstance(expr.func, cst.Name) and expr.func.value == "self" or chain(
                    expr.func) == "forward":
                self.sampled = True
            if _method(self.src, expr.func):
                assert isinstance(expr.func, cst.Attribute)
                return [] if expr.func.attr.value in _META_METHODS else [expr.func.value, *args]
            return args
        return []

    def reaching(self, use: cst.Name) -> Iterator[Def]:
        """The assignments to ``use`` that may reach it, latest first: (statement, the parts
        its value is computed from)."""
        return self._reaching(use)

    def _reaching(self, use: cst.Name) -> Iterator[Def]:
        """The assignments to ``use`` that may reach it, latest first."""
        at = self.src.positions[use].start
        before = [d for d in self.defs.get(use.value, [])
                  if (self.src.positions[d[0]].end.line, self.src.positions[d[0]].end.column)
                  <= (at.line, at.column) and not self.src.inside(use, d[0])]
        before.sort(key=lambda d: (self.src.positions[d[0]].start.line,
                                   self.src.positions[d[0]].start.column), reverse=True)
        blocks = self._blocks(use)
        for d in before:
            yield d
            if set(self._blocks(d[0])) <= blocks:
                return  # every path to the use runs through this assignment

    def _blocks(self, node: cst.CSTNode) -> set[int]:
        out = set()
        while node is not self.function:
            node = self.src.parents[node]
            if isinstance(node, (cst.IndentedBlock, cst.SimpleStatementSuite)):
                out.add(id(node))
        return out


def _assigned(node: cst.CSTNode) -> Iterator[tuple[str, Sequence[cst.BaseExpression]]]:
    """(name, the expressions its new value is computed from) for one assignment."""
    if isinstance(node, cst.AugAssign) and isinstance(node.target, cst.Name):
        yield node.target.value, [node.target, node.value]
    elif isinstance(node, cst.AnnAssign) and node.value is not None and isinstance(
            node.target, cst.Name):
        yield node.target.value, [node.value]
    elif isinstance(node, cst.Assign):
        for target in node.targets:
            yield from _unpacked(target.target, node.value)


def _unpacked(target: cst.BaseExpression, value: cst.BaseExpression
              ) -> Iterator[tuple[str, Sequence[cst.BaseExpression]]]:
    if isinstance(target, cst.Name):
        yield target.value, [value]
    elif isinstance(target, (cst.Tuple, cst.List)):
        values = [e.value for e in value.elements] if isinstance(
            value, (cst.Tuple, cst.List)) else []
        pairs = len(values) == len(target.elements) and not any(
            isinstance(e, cst.StarredElement) for e in target.elements)
        for i, element in enumerate(target.elements):
            yield from _unpacked(element.value, values[i] if pairs else value)
