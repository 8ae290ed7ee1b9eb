"""The text of each edit: the multiplier on a readout, the scale of an attention's logits.

Each form equals what ``muprewrite.apply`` does at run time:

- a readout ``self.head(x)`` (a linear map) -> ``self.head(x * self.mup_head_multiplier)``;
  a lookup ``self.embed(i)`` -> ``self.embed(i) * self.mup_embed_multiplier``;
- ``F.linear(x, self.w, b)`` -> its input scaled; ``F.linear(x, self.w)``, ``x @ self.w.t()``,
  an einsum -> the product scaled;
- ``F.scaled_dot_product_attention(q, k, v)`` -> ``scale=MUP_D_HEAD_BASE ** 0.5 /
  q.shape[-1]``, or a given ``scale=s`` times ``(MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5``
  (a name, attribute or call that may hold None, SDPA's default, gets both, by ``s is None``);
  the same for xformers' ``memory_efficient_attention`` (``scale=``) and flash-attn's
  ``flash_attn_func`` (``softmax_scale=``), whose default is SDPA's;
- an explicit q.k^T product -> times ``(MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5``, the head size
  read off the axis of q that the product contracts (``q.shape[-2]`` for
  ``torch.einsum("bhdn,bhdm->bhnm", q, k)``, q of shape (B, heads, d_head, tokens));
- with base hyperparameters every attention factor also takes ``MUP_ATTENTION_MULTIPLIER``
  (``scale=MUP_ATTENTION_MULTIPLIER * MUP_D_HEAD_BASE ** 0.5 / q.shape[-1]``); an attention
  whose d_head did not grow takes the same form with its own head size as the base's (1 at
  the emitted widths, see ``plan/head_guards.py``), and under a rule that leaves attention
  unchanged only the multiplier (``scale=MUP_ATTENTION_MULTIPLIER / q.shape[-1] ** 0.5``);
- a residual add ``x + f(x)`` (``x += f(x)``, ``f(x) + x``) -> ``x + self.mup_branch_multiplier
  * f(x)``, the branch operand parenthesised where ``*`` would bind tighter.
"""

from __future__ import annotations

import libcst as cst

from ...rewrite.external import SCALE_KEYWORDS
from ..cst.source import callee_name
from ..errors import EmitError
from ..plan.edits import NodeEdit

__all__ = ["paren", "times", "apply_edit", "scale_branch"]

_SIMPLE = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)
_NEVER_NONE = (cst.Integer, cst.Float, cst.BinaryOperation, cst.UnaryOperation)
MULTIPLICATIVE = (cst.Multiply, cst.Divide, cst.FloorDivide, cst.Modulo, cst.MatrixMultiply)


def _factor_first(factor: cst.BaseExpression, value: cst.BaseExpression) -> cst.BinaryOperation:
    """``factor * value``; a product stays as written (``m * g * f(x)``), anything that binds
    looser than ``*`` is parenthesised."""
    product = isinstance(value, cst.BinaryOperation) and isinstance(
        value.operator, (cst.Multiply, cst.MatrixMultiply, cst.Divide))
    if not isinstance(value, _SIMPLE) and not product and not value.lpar:
        value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.BinaryOperation(factor, cst.Multiply(), value)


def scale_branch(node: cst.CSTNode, edit: NodeEdit) -> cst.CSTNode:
    """The residual add ``node`` with its branch operand times ``self.<factor>``."""
    factor = cst.parse_expression(f"self.{edit.factor}")
    if isinstance(node, cst.AugAssign):
        return node.with_changes(value=_factor_first(factor, node.value))
    assert isinstance(node, cst.BinaryOperation)
    if edit.operand == 0:
        return node.with_changes(left=_factor_first(factor, node.left))
    return node.with_changes(right=_factor_first(factor, node.right))


def paren(node: cst.BaseExpression) -> cst.BaseExpression:
    """Parenthesise a product we built where the parser would bind tighter than ``*``."""
    if isinstance(node, cst.BinaryOperation) and not node.lpar and isinstance(
            node.operator, MULTIPLICATIVE):
        return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return node


def times(value: cst.BaseExpression, factor: cst.BaseExpression) -> cst.BinaryOperation:
    if not isinstance(value, _SIMPLE) and not value.lpar:
        value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.BinaryOperation(value, cst.Multiply(), factor)


def apply_edit(node: cst.BaseExpression, edit: NodeEdit) -> cst.BaseExpression:
    """``node`` (already transformed inside) with ``edit`` made."""
    if edit.kind == "branch":
        return scale_branch(node, edit)  # type: ignore[return-value]  # an expression here
    if edit.kind == "sdpa":
        assert isinstance(node, cst.Call)
        return _scale_attention(node, edit)
    if edit.kind == "logits":
        return times(node, cst.parse_expression(_logit_factor(edit)))
    factor = cst.parse_expression(f"self.{edit.factor}")
    if edit.kind == "matmul":
        return times(node, factor)
    assert isinstance(node, cst.Call)
    if edit.kind == "functional":
        has_bias = len(node.args) >= 3 or any(a.keyword and a.keyword.value == "bias"
                                              for a in node.args)
        scale_input = callee_name(node.func) in ("linear", "conv1d", "conv2d", "conv3d") and (
            has_bias)
    else:
        scale_input = edit.scale_input
    if not scale_input:
        return times(node, factor)
    if not node.args or node.args[0].keyword or node.args[0].star:
        raise EmitError("the readout call takes no positional input to scale", where=edit.where,
                        fix="pass the input positionally")
    args = list(node.args)
    args[0] = args[0].with_changes(value=times(args[0].value, factor))
    return node.with_changes(args=args)


def _d_head(edit: NodeEdit) -> str:
    """The head size, read off the query at run time: ``q.shape[-1]``, ``q.shape[-2]``."""
    return f"{edit.query}.shape[{edit.axis}]"


def _logit_factor(edit: NodeEdit) -> str:
    """The factor on the logits (or on a given ``scale``)."""
    parts = [edit.multiplier] if edit.multiplier else []
    if edit.factor:  # d_head grows
        parts.append(f"({edit.factor} / {_d_head(edit)}) ** 0.5")
    return " * ".join(parts)


def _default_scale(edit: NodeEdit) -> str:
    """The scale of an SDPA call that gives none (SDPA's default is 1 / sqrt(d_head))."""
    d = _d_head(edit)
    if not edit.factor:
        return f"{edit.multiplier} / {d} ** 0.5"
    return f"{edit.multiplier + ' * ' if edit.multiplier else ''}{edit.factor} ** 0.5 / {d}"


def _scale_attention(call: cst.Call, edit: NodeEdit) -> cst.Call:
    """SDPA's ``scale=`` set, or the scale keyword of an external kernel (``softmax_scale=``
    of flash-attn's ``flash_attn_func``)."""
    keyword = SCALE_KEYWORDS.get(callee_name(call.func), ("scale", 0))[0]
    args = list(call.args)
    for i, arg in enumerate(args):
        if arg.keyword and arg.keyword.value == keyword:
            scaled = times(arg.value, cst.parse_expression(_logit_factor(edit)))
            if not isinstance(arg.value, _NEVER_NONE):  # scale=self.scale may hold None
                scaled = cst.IfExp(  # type: ignore[assignment]  # an expression all the same
                    test=cst.Comparison(arg.value, [cst.ComparisonTarget(cst.Is(), cst.Name("None"))]),
                    body=cst.parse_expression(_default_scale(edit)), orelse=scaled)
            args[i] = arg.with_changes(value=scaled)
            return call.with_changes(args=args)
    new = cst.Arg(cst.parse_expression(_default_scale(edit)),
                  keyword=cst.Name(keyword),
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
