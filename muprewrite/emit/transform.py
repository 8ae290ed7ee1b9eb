"""Stage 6b — the source edits, made with libcst so that every untouched line keeps its bytes.

Edits: the readout's input times ``self.mup_<name>_multiplier``; ``scale=`` on
``scaled_dot_product_attention``; a class default for each multiplier attribute; a
``mup_init(self)`` call ending the root class's ``__init__``; the muP block after the
imports; the header comment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .sites import AttentionScaleSite, EmitError, ReadoutSite

__all__ = ["class_spans", "SourceEdits", "rewrite"]

_COOKIE = re.compile(r"[ \t\f]*#.*?coding[:=]")  # PEP 263: must stay on line 1 or 2
_SIMPLE = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)


def class_spans(wrapper: MetadataWrapper) -> dict[str, tuple[int, int]]:
    """Top-level class name -> (first line, last line)."""
    positions = wrapper.resolve(PositionProvider)
    return {stmt.name.value: (positions[stmt].start.line, positions[stmt].end.line)
            for stmt in wrapper.module.body if isinstance(stmt, cst.ClassDef)}


def _chain(node: cst.BaseExpression) -> str | None:
    """``self.a.b`` -> ``"a.b"``; None for anything else."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name) and node.value == "self" and parts:
        return ".".join(reversed(parts))
    return None


def _mentions(node: cst.BaseExpression, attr: str) -> bool:
    """Whether ``node`` reads ``self.<attr>`` (possibly as ``self.<attr>.t()``)."""
    code = cst.Module([]).code_for_node(node)
    return re.search(rf"\bself\.{re.escape(attr)}(?![\w])", code) is not None


def _callee_name(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return node.value if isinstance(node, cst.Name) else ""


_MULTIPLICATIVE = (cst.Multiply, cst.Divide, cst.FloorDivide, cst.Modulo, cst.MatrixMultiply)


def _paren(node: cst.BaseExpression) -> cst.BaseExpression:
    """Parenthesise a product we built where the parser would bind tighter than ``*``."""
    if isinstance(node, cst.BinaryOperation) and not node.lpar and isinstance(
            node.operator, _MULTIPLICATIVE):
        return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return node


def _times(value: cst.BaseExpression, factor: cst.BaseExpression) -> cst.BinaryOperation:
    if not isinstance(value, _SIMPLE) and not value.lpar:
        value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.BinaryOperation(value, cst.Multiply(), factor)


class SourceEdits(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, readouts: Sequence[ReadoutSite], attention: Sequence[AttentionScaleSite],
                 defaults: dict[str, list[str]], root: str) -> None:
        super().__init__()
        self.readouts = list(readouts)
        self.attention = list(attention)
        self.defaults = defaults  # class -> multiplier attributes
        self.root = root
        self.done: set[object] = set()
        self.classes: list[str] = []

    def _lines(self, node: cst.CSTNode) -> tuple[int, int]:
        pos = self.get_metadata(PositionProvider, node)
        return pos.start.line, pos.end.line

    # -- precedence: an unparenthesised product where Python needs parentheses is ours ---------
    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        return updated.with_changes(value=_paren(updated.value))

    def leave_Subscript(self, original: cst.Subscript, updated: cst.Subscript) -> cst.Subscript:
        return updated.with_changes(value=_paren(updated.value))

    def leave_UnaryOperation(self, original: cst.UnaryOperation,
                             updated: cst.UnaryOperation) -> cst.UnaryOperation:
        return updated.with_changes(expression=_paren(updated.expression))

    # -- calls -------------------------------------------------------------------------------
    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        updated = updated.with_changes(func=_paren(updated.func))
        first, last = self._lines(original)
        for site in self.readouts:
            if first <= site.line <= last and self._is_readout(updated, site):
                self.done.add(site)
                return self._scale_readout(updated, site)
        name = _callee_name(updated.func)
        if name == "scaled_dot_product_attention":
            for asite in self.attention:
                if asite.kind == "sdpa" and first <= asite.line <= last:
                    self.done.add(asite)
                    return self._scale_attention(updated, asite)
        if name in ("matmul", "bmm", "einsum"):  # q.k^T written as a call
            at = 1 if name == "einsum" else 0
            query = updated.args[at].value if len(updated.args) > at else None
            return self._scale_logits(original, updated, query)
        return updated

    def _scale_logits(self, original: cst.BaseExpression, updated: cst.BaseExpression,
                      query: cst.BaseExpression | None) -> cst.BaseExpression:
        """Multiply the q.k^T product by sqrt(d_head_base / d_head), d_head read off q."""
        first, last = self._lines(original)
        for site in self.attention:
            if site.kind != "logits" or site in self.done or not first <= site.line <= last:
                continue
            if not isinstance(query, (cst.Name, cst.Attribute, cst.Subscript)):
                raise EmitError(f"line {site.line}: the query of q.k^T is not a plain name, so "
                                "its head size cannot be read",
                                fix="assign the query to a variable first: q = ...; q @ k.T")
            d = f"{cst.Module([]).code_for_node(query)}.shape[-1]"
            self.done.add(site)
            return _times(updated, cst.parse_expression(f"({site.constant} / {d}) ** 0.5"))
        return updated

    def _is_readout(self, call: cst.Call, site: ReadoutSite) -> bool:
        if self.classes[-1:] != [site.host_class]:
            return False
        if site.callee:
            return _chain(call.func) == site.callee
        return any(_chain(arg.value) == site.param_attr for arg in call.args)

    def _scale_readout(self, call: cst.Call, site: ReadoutSite) -> cst.BaseExpression:
        factor = cst.parse_expression(f"self.{site.attribute}")
        functional = not site.callee
        name = _callee_name(call.func)
        has_bias = len(call.args) >= 3 or any(a.keyword and a.keyword.value == "bias"
                                              for a in call.args)
        scale_input = site.scale_input and (not functional or (
            name in ("linear", "conv1d", "conv2d", "conv3d") and has_bias))
        if scale_input:
            if not call.args or call.args[0].keyword or call.args[0].star:
                raise EmitError(f"line {site.line}: the readout call takes no positional input "
                                "to scale", fix="pass the input positionally")
            args = list(call.args)
            args[0] = args[0].with_changes(value=_times(args[0].value, factor))
            return call.with_changes(args=args)
        return _times(call, factor)

    def _scale_attention(self, call: cst.Call, site: AttentionScaleSite) -> cst.Call:
        query = call.args[0].value if call.args and not call.args[0].keyword else next(
            (a.value for a in call.args if a.keyword and a.keyword.value == "query"), None)
        if query is None or not isinstance(query, (cst.Name, cst.Attribute, cst.Subscript)):
            raise EmitError(f"line {site.line}: the query of scaled_dot_product_attention is "
                            "not a plain name, so its head size cannot be read",
                            fix="assign the query to a variable first: q = ...; "
                                "F.scaled_dot_product_attention(q, k, v)")
        if sum(1 for a in call.args if not a.keyword) > 6:
            raise EmitError(f"line {site.line}: scale is passed positionally",
                            fix="pass it as scale=...")
        d = f"{cst.Module([]).code_for_node(query)}.shape[-1]"
        args = list(call.args)
        for i, arg in enumerate(args):
            if arg.keyword and arg.keyword.value == "scale":
                factor = cst.parse_expression(f"({site.constant} / {d}) ** 0.5")
                args[i] = arg.with_changes(value=_times(arg.value, factor))
                return call.with_changes(args=args)
        new = cst.Arg(cst.parse_expression(f"{site.constant} ** 0.5 / {d}"),
                      keyword=cst.Name("scale"),
                      equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))
        if args and isinstance(args[-1].comma, cst.Comma):  # a trailing comma: one arg a line
            between = args[-2].comma if len(args) > 1 else args[-1].comma
            args.append(new.with_changes(comma=args[-1].comma))
            if isinstance(between, cst.Comma):
                args[-2] = args[-2].with_changes(comma=between)
        elif args:  # the new argument goes where the last one ended, before any line break
            last = args[-1]
            args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")),
                                         whitespace_after_arg=cst.SimpleWhitespace(""))
            args.append(new.with_changes(whitespace_after_arg=last.whitespace_after_arg))
        else:
            args.append(new)
        return call.with_changes(args=args)

    def leave_BinaryOperation(self, original: cst.BinaryOperation,
                              updated: cst.BinaryOperation) -> cst.BaseExpression:
        """``h @ self.embed.weight.t()``: a readout through the matmul operator."""
        if isinstance(updated.operator, cst.Power):
            updated = updated.with_changes(left=_paren(updated.left), right=_paren(updated.right))
        elif isinstance(updated.operator, _MULTIPLICATIVE):
            updated = updated.with_changes(right=_paren(updated.right))
        if not isinstance(updated.operator, cst.MatrixMultiply):
            return updated
        logits = self._scale_logits(original, updated, updated.left)
        if logits is not updated:
            return logits
        first, last = self._lines(original)
        for site in self.readouts:
            if (first <= site.line <= last and not site.callee
                    and self.classes[-1:] == [site.host_class]
                    and any(_mentions(side, site.param_attr) for side in (updated.left, updated.right))):
                self.done.add(site)
                return _times(updated, cst.parse_expression(f"self.{site.attribute}"))
        return updated

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
            body = self._with_init_call(body)
        attributes = self.defaults.get(name, [])
        if attributes:
            at = 1 if body and _is_docstring(body[0]) else 0
            lines = [cst.parse_statement(f"{a} = 1.0  # muP forward multiplier, set per "
                                         "instance by mup_init()\n") for a in attributes]
            body[at:at] = lines
        return updated.with_changes(body=updated.body.with_changes(body=body))

    def _with_init_call(self, body: list[cst.BaseStatement]) -> list[cst.BaseStatement]:
        call = cst.parse_statement("mup_init(self)  # muP: init scale and forward multipliers\n")
        for i, stmt in enumerate(body):
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "__init__":
                if _returns_early(stmt):
                    raise EmitError(f"{self.root}.__init__ has a return statement: mup_init(self) "
                                    "must run at its end", fix="end __init__ without return")
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
    missing = [e for e in [*edits.readouts, *edits.attention, "init"] if e not in edits.done]
    if missing:
        first = missing[0]
        if isinstance(first, AttentionScaleSite):
            raise EmitError(f"line {first.line}: the attention there is not a "
                            "scaled_dot_product_attention call written in this file (a library "
                            "module computes it), so its scale cannot be set here",
                            fix="call F.scaled_dot_product_attention in your own module, or use "
                                "muprewrite.apply(model, ...) at runtime")
        if isinstance(first, ReadoutSite):
            how = f"self.{first.callee}(x)" if first.callee else \
                f"F.linear(x, self.{first.param_attr})"
            raise EmitError(f"line {first.line}: no call of self.{first.callee or first.param_attr} "
                            f"in {first.host_class} to put the output multiplier on",
                            fix=f"write the readout as {how} on that line, or use "
                                "muprewrite.apply(model, ...) at runtime")
        raise EmitError(f"class {edits.root} has no __init__ to end with mup_init(self)",
                        fix="give it an __init__ that calls super().__init__(...)")
    body = list(module.body)
    last_import = max((i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine)
                       and any(isinstance(x, (cst.Import, cst.ImportFrom)) for x in s.body)),
                      default=0 if body and _is_docstring(body[0]) else -1)
    # the file's newline, also inside the block's multi-line strings (libcst renders every
    # other newline it adds with the module's default)
    added = cst.parse_module(block.replace("\n", module.default_newline)).body
    at = last_import + 1
    body[at:at] = added
    lines = list(module.header)
    keep = 0
    while keep < len(lines) and (comment := lines[keep].comment) is not None and (
            comment.value.startswith(("#!", "# -*-", "# vim:", "# coding"))
            or keep < 2 and _COOKIE.match(comment.value)):
        keep += 1
    comments = [cst.EmptyLine(comment=cst.Comment(text)) for text in header]
    module = module.with_changes(body=body, header=[*lines[:keep], *comments, *lines[keep:]])
    return module.code
