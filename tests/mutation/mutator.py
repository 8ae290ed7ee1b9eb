"""Every single-edit mutant of what the emitter wrote into a file, found with libcst.

The emitter's edits are of two kinds, and each is mutated where it stands:

1. the muP block's module-level constants and tables (``MUP_*``): each number constant changed
   (``MUP_BASE_SEED`` aside: the check builds its own base from it, so a changed seed is the same
   file), each exponent of ``MUP_PARAMS`` changed by +0.5, each of its quantities and entries
   deleted, each ``in branch`` flag flipped, each element of the other tables deleted, each
   integer of the base call in ``mup_base_model()`` changed;
2. the lines of the user's code the emitter changed (a difference from the original file): each
   factor multiplied in that mentions ``MUP_*`` or ``self.mup_*`` (readout and branch
   multipliers, the math path's logit factor) deleted or its exponent halved (``f -> f ** 0.5``),
   each ``scale=`` keyword holding ``MUP_D_HEAD_BASE`` deleted or turned into the standard
   parametrization's ``1/sqrt(d_head)``, and each ``mup_init(...)`` call deleted.

A mutant is the whole mutated text of one file, with the line of its edit and a description.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

__all__ = ["Mutant", "changed_lines", "mutants"]

_SKIPPED_CONSTANTS = {"MUP_BASE_SEED"}  # read by check itself: a changed seed is the same file


@dataclass(frozen=True)
class Mutant:
    """One edit of one emitted file: ``source`` is that file's whole mutated text."""

    file: str  # the emitted file's path inside the emitted tree (or its name)
    line: int  # 1-based line of the edit
    kind: str  # the class of the edit, e.g. "exponent-changed"
    description: str
    source: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.kind}:{self.description}"


def changed_lines(original: str, emitted: str) -> set[int]:
    """The 1-based lines of ``emitted`` that are not lines of ``original`` (edited or added)."""
    matcher = difflib.SequenceMatcher(a=original.splitlines(), b=emitted.splitlines(),
                                      autojunk=False)
    return {j + 1 for tag, _i1, _i2, j1, j2 in matcher.get_opcodes() if tag != "equal"
            for j in range(j1, j2)}


def mutants(file: str, emitted: str, original: str | None) -> list[Mutant]:
    """Every single-edit mutant of ``emitted`` (``original``: the file it was written from;
    None for a file the emitter added whole)."""
    wrapper = MetadataWrapper(cst.parse_module(emitted), unsafe_skip_copy=True)
    finder = _Finder(changed_lines(original, emitted) if original is not None else set())
    wrapper.visit(finder)
    positions = wrapper.resolve(PositionProvider)
    found = []
    for node, replacement, kind, description in finder.targets:
        mutated = wrapper.module.deep_replace(node, replacement)
        assert isinstance(mutated, cst.Module)
        source = mutated.code
        if source != emitted:
            found.append(Mutant(file, positions[node].start.line, kind, description, source))
    return found


Target = tuple[cst.CSTNode, cst.CSTNode, str, str]


def _mentions_mup(node: cst.CSTNode) -> bool:
    """Whether the expression reads a ``MUP_*`` name or a ``.mup_*`` attribute."""
    class Seen(cst.CSTVisitor):
        found = False

        def visit_Name(self, n: cst.Name) -> None:
            if n.value.startswith("MUP_"):
                self.found = True

        def visit_Attribute(self, n: cst.Attribute) -> None:
            if n.attr.value.startswith("mup_"):
                self.found = True
    seen = Seen()
    node.visit(seen)
    return seen.found


def _code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def _sqrt_of(expr: cst.BaseExpression) -> cst.BaseExpression:
    return cst.BinaryOperation(left=_paren(expr), operator=cst.Power(),
                               right=cst.Float("0.5"))


def _paren(expr: cst.BaseExpression) -> cst.BaseExpression:
    simple = (cst.Name, cst.Attribute, cst.Integer, cst.Float, cst.Call, cst.Subscript)
    if isinstance(expr, simple) or expr.lpar:
        return expr
    return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _changed_number(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """The number plus a step that changes it (+0.5; an integer by half of itself, at least 1)."""
    negative = isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus)
    inner = node.expression if isinstance(node, cst.UnaryOperation) else node
    if isinstance(inner, cst.Float):
        value = float(inner.value) * (-1 if negative else 1) + 0.5
        return cst.parse_expression(repr(value))
    if isinstance(inner, cst.Integer):
        value = int(inner.value, 0) * (-1 if negative else 1)
        return cst.parse_expression(str(value + max(1, abs(value) // 2)))
    return None


class _Finder(cst.CSTVisitor):
    """Collects (node, replacement, kind, description) for every edit of the emitter."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, changed: set[int]) -> None:
        self.changed = changed
        self.targets: list[Target] = []
        self._depth = 0  # inside a def or class
        self._in_mup_function = 0

    # -- where we are ------------------------------------------------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._depth += 1
        if node.name.value.startswith(("mup_", "_mup_")):
            self._in_mup_function += 1
            if node.name.value == "mup_base_model":
                self._base_call(node)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._depth -= 1
        if node.name.value.startswith(("mup_", "_mup_")):
            self._in_mup_function -= 1

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._depth += 1

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self._depth -= 1

    def _line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line

    def _in_user_edit(self, node: cst.CSTNode) -> bool:
        return not self._in_mup_function and self._line(node) in self.changed

    # -- the muP block -----------------------------------------------------------------
    def visit_Assign(self, node: cst.Assign) -> None:
        if self._depth == 0 and len(node.targets) == 1:
            self._table(node.targets[0].target, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if self._depth == 0 and node.value is not None:
            self._table(node.target, node.value)

    def _table(self, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        if not isinstance(target, cst.Name) or not target.value.startswith("MUP_"):
            return
        name = target.value
        changed = _changed_number(value)
        if changed is not None and name not in _SKIPPED_CONSTANTS:
            self._add(value, changed, "constant-changed", f"{name} {_code(value)} -> "
                      f"{_code(changed)}")
        elif name == "MUP_PARAMS" and isinstance(value, cst.Dict):
            self._params(value)
        elif isinstance(value, (cst.Dict, cst.Tuple, cst.Set, cst.List)):
            self._elements(name, value)

    def _params(self, table: cst.Dict) -> None:
        for entry in table.elements:
            if not isinstance(entry, cst.DictElement):
                continue
            key = _code(entry.key)
            self._add(table, _without(table, entry), "entry-deleted",
                      f"MUP_PARAMS[{key}] deleted")
            if not isinstance(entry.value, cst.Tuple):
                continue
            for item in entry.value.elements:
                flag = item.value
                if isinstance(flag, cst.Name) and flag.value in ("True", "False"):
                    flipped = cst.Name("False" if flag.value == "True" else "True")
                    self._add(flag, flipped, "in-branch-flipped",
                              f"MUP_PARAMS[{key}] in branch {flag.value} -> {flipped.value}")
                if isinstance(flag, cst.Dict):
                    self._quantities(key, flag)

    def _quantities(self, key: str, quantities: cst.Dict) -> None:
        for q in quantities.elements:
            if not isinstance(q, cst.DictElement):
                continue
            qname = _code(q.key).strip("\"'")
            self._add(quantities, _without(quantities, q), "quantity-deleted",
                      f"MUP_PARAMS[{key}][{qname}] deleted")
            if not isinstance(q.value, cst.Tuple):
                continue
            for i, exp in enumerate(q.value.elements):
                changed = _changed_number(exp.value)
                if changed is not None:
                    axis = ("m_in", "m_out", "m_L")[i] if i < 3 else f"#{i}"
                    self._add(exp.value, changed, "exponent-changed",
                              f"MUP_PARAMS[{key}][{qname}] exponent of {axis} "
                              f"{_code(exp.value)} -> {_code(changed)}")

    def _elements(self, name: str, table: cst.Dict | cst.Tuple | cst.Set | cst.List) -> None:
        for element in table.elements:
            if isinstance(element, cst.DictElement) and isinstance(element.value, cst.Dict):
                for inner in element.value.elements:  # e.g. MUP_MULTIPLIERS[module][attribute]
                    self._add(element.value, _without(element.value, inner), "entry-deleted",
                              f"{name}[{_code(element.key)}][{_code(inner.key)}] deleted"
                              if isinstance(inner, cst.DictElement) else f"{name} element")
                continue
            what = _code(element.key) if isinstance(element, cst.DictElement) else \
                _code(element.value)
            self._add(table, _without(table, element), "entry-deleted", f"{name}: {what} deleted")

    def _base_call(self, node: cst.FunctionDef) -> None:
        """Each integer of the call ``mup_base_model()`` returns (the base's sizes)."""
        for ret in _walk(node, cst.Return):
            if ret.value is None:
                continue
            for arg in _walk(ret.value, cst.Arg):
                changed = _changed_number(arg.value)
                if changed is None or not isinstance(arg.value, cst.Integer):
                    continue
                name = f"{arg.keyword.value}=" if arg.keyword is not None else ""
                self._add(arg.value, changed, "base-changed",
                          f"mup_base_model(): {name}{_code(arg.value)} -> {_code(changed)}")

    # -- the user's code ---------------------------------------------------------------
    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if not isinstance(node.operator, cst.Multiply) or not self._in_user_edit(node):
            return
        for factor, other in ((node.right, node.left), (node.left, node.right)):
            top_multiply = isinstance(factor, cst.BinaryOperation) and isinstance(
                factor.operator, cst.Multiply) and not factor.lpar
            if _mentions_mup(factor) and not _mentions_mup(other) and not top_multiply:
                self._add(node, other, "factor-deleted", f"factor {_code(factor)} deleted")
                changed = node.with_changes(**{"right" if factor is node.right else "left":
                                               _sqrt_of(factor)})
                self._add(node, changed, "factor-changed",
                          f"factor {_code(factor)} -> ({_code(factor)}) ** 0.5")

    def visit_Call(self, node: cst.Call) -> None:
        if not self._in_user_edit(node):
            return
        func = node.func
        if isinstance(func, cst.Name) and func.value == "mup_init":
            return  # the statement is deleted in visit_SimpleStatementLine
        for arg in node.args:
            if arg.keyword is not None and arg.keyword.value == "scale" and _mentions_mup(arg.value):
                kept = [a for a in node.args if a is not arg]
                if kept:
                    kept[-1] = kept[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
                self._add(node, node.with_changes(args=kept), "attention-scale-deleted",
                          f"scale={_code(arg.value)} deleted")
                sp = cst.parse_expression(f"({_code(arg.value)}) ** 0.5 * MUP_D_HEAD_BASE ** -0.25")
                self._add(arg.value, sp, "attention-scale-changed",
                          f"scale={_code(arg.value)} -> 1/sqrt(d_head) (SP)")

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        if self._in_mup_function or self._line(node) not in self.changed:
            return
        for small in node.body:
            call = small.value if isinstance(small, cst.Expr) else None
            if isinstance(call, cst.Call) and isinstance(call.func, cst.Name) and \
                    call.func.value == "mup_init":
                self._add(node, cst.SimpleStatementLine(body=[cst.Pass()]),
                          "mup_init-deleted", f"{_code(call)} deleted")

    def _add(self, node: cst.CSTNode, replacement: cst.CSTNode, kind: str,
             description: str) -> None:
        self.targets.append((node, replacement, kind, description))


def _without(table: cst.Dict | cst.Tuple | cst.Set | cst.List, element: cst.CSTNode
             ) -> cst.BaseExpression:
    kept = [e for e in table.elements if e is not element]
    if isinstance(table, cst.Set) and not kept:
        return cst.parse_expression("set()")
    if isinstance(table, cst.Tuple) and len(kept) == 1:
        kept = [kept[0].with_changes(comma=cst.Comma())]
    return table.with_changes(elements=kept)


def _walk(root: cst.CSTNode, kind: type) -> Iterator:
    found: list = []

    class Walker(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, kind):
                found.append(node)
            return True
    root.visit(Walker())
    return iter(found)


