"""Stage 6a, residual branches (depth rules): the residual adds, on every path of their hosts.

Under a depth rule each residual branch is added as ``x + m_L^-alpha * f(x)``; the emitted
file writes the factor at the add: ``x = x + self.mup_branch_multiplier * f(x)`` (``x += ...``
and ``f(x) + x`` alike). For each branch the analysis gives the add (file:line, and in the
graph the module that ran it and which operand is the branch) and the *branch module*, whose
output the branch is linear in. Stages:

1. ``locate_branches``: from the add's line, in the methods of the module that ran it, or in
   the methods that line calls (``self.post(...)``, ``self.x_block.post_attention(...)``: a
   method call is not a module call, so the capture records the caller's line), find the
   ``+`` whose branch operand is computed from a call of the branch module (``self.attn(...)``,
   directly or through names assigned before it). None: EmitError at file:line.
2. ``scan_branches``: in every method of the host's classes (``apply`` scales every call of a
   branch module with a hook), each ``+`` with exactly one operand computed from a branch
   module's call is edited; a ``+`` with two such operands, and a branch module's call that
   feeds no ``+``, are refused with their line.

A branch that ends in an op of the block's own forward (no branch module) is refused: the
emitter, like ``apply``, only scales branches it can name by their module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import libcst as cst
from torch import fx, nn

from ...analysis.report import Report
from ...capture.source import node_module
from ..cst.source import SourceFile, chain
from ..cst.trace import Trace
from ..errors import EmitError
from .places import place, scope_of
from .scan import Found, Refusal, Scan
from .sites import BranchSite, Scope

if TYPE_CHECKING:
    from .project import Project

__all__ = ["locate_branches", "scan_branches"]

_FIX = "use muprewrite.apply(model, ..., rule=...) at runtime, or emit with a width-only rule"
_Frame = tuple[str, SourceFile, cst.FunctionDef, "int | None"]  # (self's path, file, method, line)


def locate_branches(model: nn.Module, project: Project, report: Report, graph: fx.Graph
                    ) -> tuple[BranchSite, ...]:
    """One site per host class scope, with every captured add located in the source."""
    nodes = {n.name: n for n in graph.nodes}
    groups: dict[Scope, tuple[set[str], dict[cst.CSTNode, None]]] = {}
    for branch in report.residuals.branches if report.residuals else ():
        where = branch.source or branch.add
        if not branch.module:
            raise EmitError(f"the residual branch added at {where} ends in an op of the block's "
                            "own forward, so no module names it and its multiplier m_L^-alpha "
                            "cannot be placed", where=where,
                            fix="end the branch in a submodule (self.mlp = nn.Sequential(fc, "
                                "GELU()); x = x + self.mlp(x)), or " + _FIX)
        add = nodes[branch.add]
        operand = 0 if getattr(add.args[0], "name", None) == branch.branch else 1
        file, line = place(branch.source, project, "a residual branch multiplier")
        found = False
        for path, src, fn, on_line in _frames(model, project, node_module(add), file, line):
            rel = _relative(branch.module, path)
            if rel is None:
                continue
            hits = [f.node for f in scan_branches(src, [fn], {rel})[0].found
                    if f.operand == operand and (on_line is None or src.contains(f.node, on_line))]
            if hits:
                modules, verified = groups.setdefault(
                    scope_of(model.get_submodule(path), project), (set(), {}))
                modules.add(rel)
                verified.update(dict.fromkeys(hits))
                found = True
        if not found:
            raise EmitError(f"line {line}: the residual branch {branch.module} is added there, "
                            "but no + on that line (or in the methods it calls) has an operand "
                            f"computed from a call of self.{branch.module.rpartition('.')[2]}"
                            "(...), so the branch multiplier cannot be placed",
                            where=f"{file}:{line}",
                            fix="write the add in the block's method as x = x + "
                                "self.<branch module>(...) (or through a name assigned from "
                                "it), or " + _FIX)
    return tuple(BranchSite(scope, tuple(sorted(m)), tuple(v))
                 for scope, (m, v) in groups.items())


def _relative(module: str, path: str) -> str | None:
    if not path:
        return module
    return module[len(path) + 1:] if module.startswith(path + ".") else None


def _frames(model: nn.Module, project: Project, host: str, file: Path, line: int
            ) -> list[_Frame]:
    """The method of ``host`` holding ``line``, and the methods that line calls on ``self``
    or on its submodules, transitively (each with the path of its ``self``)."""
    src = project.parsed(file).src
    classes = [name for f, name in scope_of(model.get_submodule(host), project) if f == file]
    out: list[_Frame] = [(host, src, fn, line) for fn in src.methods(classes)
                         if src.contains(fn, line)]
    todo = list(out)
    while todo and len(out) < 64:
        path, here, fn, on_line = todo.pop()
        for call in here.nodes(fn, cst.Call):
            name = chain(call.func)  # type: ignore[attr-defined]
            if not name or on_line is not None and not here.contains(call, on_line):
                continue
            obj, _, method = name.rpartition(".")
            sub = ".".join(p for p in (path, obj) if p)
            try:
                module = model.get_submodule(sub)
            except AttributeError:
                continue
            for f, cls in scope_of(module, project):
                there = project.parsed(f).src
                for m in there.methods([cls]):
                    frame = (sub, there, m, None)
                    if m.name.value == method and frame not in out:
                        out.append(frame)
                        todo.append(frame)
    return out


def scan_branches(src: SourceFile, functions: Sequence[cst.FunctionDef],
                  modules: Iterable[str]) -> tuple[Scan, set[cst.CSTNode]]:
    """Every residual add of ``self.<m>`` (m in ``modules``) in ``functions``, and the calls
    of those modules the adds cover."""
    modules = set(modules)
    scan, covered = Scan(), set[cst.CSTNode]()
    for function in functions:
        trace = Trace(src, function)
        for node in src.nodes(function, cst.BinaryOperation, cst.AugAssign):
            sides = _sides(node)
            if sides is None:
                continue
            calls = [_calls(src, trace, side, modules) for side in sides]
            fed = [i for i, c in enumerate(calls) if c]
            if len(fed) == 2:
                scan.refusals.append(Refusal(
                    node, "both operands of this + are computed from residual branches "
                    f"(self.{', self.'.join(sorted(modules))}), so the stream cannot be told "
                    "from the branch", fix="add one branch at a time: x = x + self.attn(h); "
                    "x = x + self.mlp(h), or " + _FIX))
            elif fed:
                names = sorted({chain(c.func) or "" for c in calls[fed[0]]})  # type: ignore[attr-defined]
                scan.found.append(Found(node, "branch", f"residual add of self.{names[0]}(...)",
                                        operand=fed[0]))
                covered.update(calls[fed[0]])
        for call in src.nodes(function, cst.Call):
            name = chain(call.func)  # type: ignore[attr-defined]
            if name in modules and call not in covered:
                scan.refusals.append(Refusal(
                    call, f"self.{name} computes a residual branch, but its output here feeds "
                    "no residual add x + ..., so no branch multiplier would follow it",
                    fix=f"add it to the stream as x = x + self.{name}(...), or " + _FIX))
    return scan, covered


def _sides(node: cst.CSTNode) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
        return node.left, node.right
    if isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.AddAssign):
        return node.target, node.value  # type: ignore[return-value]
    return None


def _calls(src: SourceFile, trace: Trace, expr: cst.CSTNode, modules: set[str]
           ) -> list[cst.Call]:
    """The calls of the branch modules ``expr`` is computed from: within it (not inside
    another ``+``: that is an add of its own) and in the assignments of the names it reads."""
    found: list[cst.Call] = []
    stack, seen = [expr], set[cst.CSTNode]()
    while stack and len(seen) < 256:
        node = stack.pop()
        if node in seen or isinstance(node, cst.Lambda) or isinstance(node, cst.BinaryOperation) \
                and isinstance(node.operator, cst.Add):
            continue
        seen.add(node)
        if isinstance(node, cst.Call) and chain(node.func) in modules:
            found.append(node)
        if isinstance(node, cst.Name) and node.value != "self" and _is_read(src, node):
            for stmt, parts in trace.reaching(node):
                if not (isinstance(stmt, cst.AugAssign) and isinstance(stmt.operator,
                                                                      cst.AddAssign)):
                    stack.extend(parts)
        stack.extend(node.children)
    return found


def _is_read(src: SourceFile, name: cst.Name) -> bool:
    """A variable read: not an attribute's name nor a keyword."""
    parent = src.parents.get(name)
    if isinstance(parent, cst.Attribute) and parent.attr is name:
        return False
    return not (isinstance(parent, cst.Arg) and parent.keyword is name)
