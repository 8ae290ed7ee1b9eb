"""Stage 6b — the source edits, made with libcst so that every untouched line keeps its bytes.

Edits: each node of ``plan.edits.Edits`` (a readout's multiplier, an attention's scale, a
residual branch's multiplier; the forms are in ``forms.py``); a class default for each multiplier attribute; a ``mup_init(self)``
call ending the root class's ``__init__`` (main file only: another file of the project has no
root class); the muP block after the imports (for another file, only the constants its edits
use, or nothing); the header comment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from ..errors import EmitError
from ..plan.edits import Edits
from .forms import MULTIPLICATIVE, apply_edit, paren, scale_branch

__all__ = ["SourceEdits", "rewrite"]

_COOKIE = re.compile(r"[ \t\f]*#.*?coding[:=]")  # PEP 263: must stay on line 1 or 2


class SourceEdits(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, edits: Edits, root: str | None, path: str = "") -> None:
        super().__init__()
        self.edits = edits
        self.root = root
        self.path = path
        self.done: set[object] = set()
        self.classes: list[str] = []

    # -- precedence: an unparenthesised product where Python needs parentheses is ours ---------
    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        return updated.with_changes(value=paren(updated.value))

    def leave_Subscript(self, original: cst.Subscript, updated: cst.Subscript) -> cst.Subscript:
        return updated.with_changes(value=paren(updated.value))

    def leave_UnaryOperation(self, original: cst.UnaryOperation,
                             updated: cst.UnaryOperation) -> cst.UnaryOperation:
        return updated.with_changes(expression=paren(updated.expression))

    # -- the edited nodes ----------------------------------------------------------------------
    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        updated = updated.with_changes(func=paren(updated.func))
        return self._edit(original, updated)

    def leave_BinaryOperation(self, original: cst.BinaryOperation,
                              updated: cst.BinaryOperation) -> cst.BaseExpression:
        if isinstance(updated.operator, cst.Power):
            updated = updated.with_changes(left=paren(updated.left), right=paren(updated.right))
        elif isinstance(updated.operator, MULTIPLICATIVE):
            updated = updated.with_changes(right=paren(updated.right))
        return self._edit(original, updated)

    def leave_AugAssign(self, original: cst.AugAssign, updated: cst.AugAssign) -> cst.AugAssign:
        edit = self.edits.nodes.get(original)
        if edit is None:
            return updated
        self.done.add(original)
        return scale_branch(updated, edit)  # type: ignore[return-value]

    def _edit(self, original: cst.BaseExpression, updated: cst.BaseExpression
              ) -> cst.BaseExpression:
        edit = self.edits.nodes.get(original)
        if edit is None:
            return updated
        self.done.add(original)
        return apply_edit(updated, edit)

    # -- classes -----------------------------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append(node.name.value)

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        name = self.classes.pop()
        if self.classes:  # nested class: left alone
            return updated
        body: list[cst.BaseStatement] = [
            s for s in updated.body.body if isinstance(s, cst.BaseStatement)]
        if len(body) != len(updated.body.body):  # a one-line class: class A(B): pass
            return updated
        if name == self.root:
            body = self._with_init_call(body, list(original.body.body))
        attributes = self.edits.defaults.get(name, ())
        if attributes:
            at = 1 if body and _is_docstring(body[0]) else 0
            lines = [cst.parse_statement(f"{a} = 1.0  # muP forward multiplier, set per "
                                         "instance by mup_init()\n") for a in attributes]
            body[at:at] = lines
        return updated.with_changes(body=updated.body.with_changes(body=body))

    def _with_init_call(self, body: list[cst.BaseStatement], originals: list[cst.CSTNode]
                        ) -> list[cst.BaseStatement]:
        call = cst.parse_statement("mup_init(self)  # muP: init scale and forward multipliers\n")
        for i, stmt in enumerate(body):
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "__init__":
                if _returns_early(stmt):
                    line = self.get_metadata(PositionProvider, originals[i]).start.line
                    raise EmitError(f"{self.root}.__init__ has a return statement: mup_init(self) "
                                    "must run at its end", where=f"{self.path}:{line}",
                                    fix="end __init__ without return")
                block = stmt.body
                assert isinstance(block, cst.IndentedBlock)
                body[i] = stmt.with_changes(body=block.with_changes(body=[*block.body, call]))
                self.done.add("init")
                return body
        init = cst.parse_statement(
            "def __init__(self, *args, **kwargs):  # muP: added to call mup_init\n"
            "    super().__init__(*args, **kwargs)\n"
            "    mup_init(self)\n")
        self.done.add("init")
        at = 1 if body and _is_docstring(body[0]) else 0
        return [*body[:at], init, *body[at:]]


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and isinstance(stmt.body[0], cst.Expr)
            and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))


class _Returns(cst.CSTVisitor):
    """Finds a return statement, not counting those of nested functions."""

    def __init__(self) -> None:
        self.found = False

    def visit_Return(self, node: cst.Return) -> None:
        self.found = True

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False  # a nested function may return


def _returns_early(fn: cst.FunctionDef) -> bool:
    finder = _Returns()
    fn.body.visit(finder)
    return finder.found


def rewrite(wrapper: MetadataWrapper, edits: SourceEdits, block: str,
            header: Sequence[str]) -> str:
    """Apply ``edits``, put ``block`` after the last top-level import and ``header`` on top."""
    module = wrapper.visit(edits)
    if edits.root is not None and "init" not in edits.done:
        raise EmitError(f"class {edits.root} has no __init__ to end with mup_init(self)",
                        fix="give it an __init__ that calls super().__init__(...)")
    if len(edits.done) != len(edits.edits.nodes) + (edits.root is not None):  # our bug
        raise EmitError("internal error: an edit was not made", fix="please report it with "
                        "the model file")
    body = _with_block(module, block) if block else list(module.body)
    lines = list(module.header)
    keep = 0
    while keep < len(lines) and (comment := lines[keep].comment) is not None and (
            comment.value.startswith(("#!", "# -*-", "# vim:", "# coding"))
            or keep < 2 and _COOKIE.match(comment.value)):
        keep += 1
    comments = [cst.EmptyLine(comment=cst.Comment(text)) for text in header]
    module = module.with_changes(body=body, header=[*lines[:keep], *comments, *lines[keep:]])
    return module.code


def _with_block(module: cst.Module, block: str) -> list[cst.BaseStatement]:
    """The module's statements with ``block`` after the last top-level import."""
    body: list[cst.BaseStatement] = list(module.body)
    last_import = max((i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine)
                       and any(isinstance(x, (cst.Import, cst.ImportFrom)) for x in s.body)),
                      default=0 if body and _is_docstring(body[0]) else -1)
    # the file's newline, also inside the block's multi-line strings (libcst renders every
    # other newline it adds with the module's default)
    parsed = cst.parse_module(block.replace("\n", module.default_newline))
    added = list(parsed.body)
    if parsed.header and added:  # comments before the block's first statement
        added[0] = added[0].with_changes(leading_lines=[*parsed.header, *added[0].leading_lines])
    at = last_import + 1
    body[at:at] = added
    return body
