"""The spec language: a closed grammar for ``--model``, ``--base``, ``--inputs`` and templates.

A spec is parsed with :mod:`ast` and walked by this module alone; nothing is evaluated and
no name is looked up here. What it accepts::

    spec      := call
    call      := NAME ("." NAME)* "(" [arg ("," arg)*] ")"      (a bare NAME means NAME())
    arg       := value | NAME "=" value                          (each keyword at most once)
    value     := call | literal | "(" value, ... ")" | "[" value, ... "]" | "{" literal ":" value, ... "}"
               | ("+" | "-") value | value OP value              (OP: + - * / // % **)
    literal   := integer | float | string | True | False | None

Arithmetic works on numbers only, and its size is bounded *before* it is computed: every
integer stays within +-2**63 (an integer ``**`` whose result would leave that range is
refused unevaluated), every float is finite. No attribute access other than the callee's dotted name, no
subscripts, no splats (``*args``/``**kwargs``), no comprehensions, lambdas, f-strings,
comparisons or conditionals. The text is at most 10,000 characters.

The result is a :class:`Call` tree: which callables it names is decided by the caller
(:mod:`.build` resolves them in the user's project, :mod:`.inputs` knows tensor specs).

>>> parse_spec("GPT(GPTConfig(n_embd=256 * 2, n_head=256 // 64), dropout=0.0)", "--model")
Call(callee=('GPT',), args=(Call(callee=('GPTConfig',), args=(), kwargs=(('n_embd', 512), ('n_head', 4))),), kwargs=(('dropout', 0.0),))
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ModelSpecError

__all__ = ["Call", "parse_spec", "parse_arguments", "INT_BOUND", "MAX_SPEC_CHARS"]

INT_BOUND = 2**63
MAX_SPEC_CHARS = 10_000
_EXAMPLE = 'e.g. "DiT(depth=4, hidden_size=256)" or "GPT(GPTConfig(n_embd=256))"'


@dataclass(frozen=True)
class Call:
    """``callee(*args, **dict(kwargs))``, not yet resolved to anything."""

    callee: tuple[str, ...]
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        return ".".join(self.callee)


class _Refused(Exception):
    """Internal: the spec leaves the grammar; carries the offending fragment."""

    def __init__(self, node: ast.AST | None, why: str) -> None:
        super().__init__(why)
        self.node, self.why = node, why


def parse_spec(text: str, what: str) -> Call:
    """``text`` (a constructor call) as a :class:`Call`, or a ModelSpecError saying why not."""
    tree = _parse(text, what, mode="call")
    try:
        return _call(tree, top=True)
    except _Refused as exc:
        raise _error(text, what, exc) from None


def parse_arguments(text: str, what: str) -> tuple[tuple[Any, ...], tuple[tuple[str, Any], ...]]:
    """``text`` as the inside of a call's parentheses: ``"1, x=2"`` -> ((1,), (("x", 2),))."""
    tree = _parse(f"_({text})", what, mode="arguments")
    try:
        call = _call(tree, top=True)
    except _Refused as exc:
        raise _error(text, what, exc) from None
    return call.args, call.kwargs


def _parse(text: str, what: str, mode: str) -> ast.Call:
    if not isinstance(text, str) or not text.strip():
        raise ModelSpecError(f"{what} is empty", fix=f"write a constructor call, {_EXAMPLE}")
    if len(text) > MAX_SPEC_CHARS:
        raise ModelSpecError(f"{what} is {len(text):,} characters long (at most "
                             f"{MAX_SPEC_CHARS:,})", fix=f"write a short constructor call, {_EXAMPLE}")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        msg = getattr(exc, "msg", None) or type(exc).__name__
        raise ModelSpecError(f"{what} {_short(text)} does not parse: {msg}",
                             fix=f"write it as a call, {_EXAMPLE}") from None
    if mode == "call" and isinstance(tree, (ast.Name, ast.Attribute)):
        tree = ast.Call(func=tree, args=[], keywords=[])
    if not isinstance(tree, ast.Call):
        raise ModelSpecError(f"{what} {_short(text)} is not a call", fix=f"write it as a call, {_EXAMPLE}")
    return tree


def _error(text: str, what: str, exc: _Refused) -> ModelSpecError:
    where = ""
    if exc.node is not None and hasattr(exc.node, "col_offset"):
        fragment = ast.get_source_segment(text.strip(), exc.node) or ast.unparse(exc.node)
        where = f" at {_short(fragment)}"
    return ModelSpecError(f"{what} {_short(text)}: {exc.why}{where}",
                          fix="a spec holds calls of your own classes/functions with literal "
                              "arguments (numbers, strings, tuples, lists, dicts, True/False/None) "
                              "and + - * / // % ** on numbers; see `muprewrite --help`")


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _dotted(node: ast.expr) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + (node.attr,)
    raise _Refused(node, "a callee is a name or a dotted name, nothing else")


def _call(node: ast.Call, top: bool = False) -> Call:
    callee = _dotted(node.func)
    args = []
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise _Refused(arg, "*-splats are not supported; write the arguments out")
        args.append(_value(arg))
    kwargs: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise _Refused(kw.value, "**-splats are not supported; write each keyword out")
        if kw.arg in kwargs:
            raise _Refused(kw.value, f"keyword {kw.arg!r} is given twice")
        kwargs[kw.arg] = _value(kw.value)
    return Call(callee, tuple(args), tuple(kwargs.items()))


def _value(node: ast.expr) -> Any:
    handler = _HANDLERS.get(type(node))
    if handler is None:
        raise _Refused(node, f"{type(node).__name__.lower()} expressions are not allowed")
    return handler(node)


def _constant(node: ast.Constant) -> Any:
    value = node.value
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return _bounded(value, node)
    if isinstance(value, float):
        return _bounded(value, node)
    raise _Refused(node, f"{type(value).__name__} literals are not allowed")


def _name(node: ast.Name) -> Any:
    raise _Refused(node, f"the name {node.id!r} is not a literal (only calls may name things)")


def _sequence(node: ast.Tuple | ast.List) -> Any:
    items = []
    for elt in node.elts:
        if isinstance(elt, ast.Starred):
            raise _Refused(elt, "*-splats are not supported")
        items.append(_value(elt))
    return tuple(items) if isinstance(node, ast.Tuple) else items


def _dict(node: ast.Dict) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in zip(node.keys, node.values):
        if key is None:
            raise _Refused(value, "**-splats are not supported")
        k = _value(key)
        if isinstance(k, (list, dict, Call)):
            raise _Refused(key, "a dict key must be a number, string, tuple, bool or None")
        if k in out:
            raise _Refused(key, f"dict key {k!r} is given twice")
        out[k] = _value(value)
    return out


def _unary(node: ast.UnaryOp) -> Any:
    value = _number(node.operand)
    if isinstance(node.op, ast.USub):
        return _bounded(-value, node)
    if isinstance(node.op, ast.UAdd):
        return value
    raise _Refused(node, "only unary + and - are allowed")


_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow}


def _binop(node: ast.BinOp) -> Any:
    op = _ARITH.get(type(node.op))
    if op is None:
        raise _Refused(node, "only + - * / // % ** are allowed")
    left, right = _number(node.left), _number(node.right)
    if isinstance(node.op, ast.Pow):
        _check_power(left, right, node)
    try:
        result = op(left, right)
    except ZeroDivisionError:
        raise _Refused(node, "division by zero") from None
    except (OverflowError, ValueError):
        raise _Refused(node, "the result is out of range") from None
    if isinstance(result, complex):
        raise _Refused(node, "the result is not a real number")
    return _bounded(result, node)


def _check_power(base: float, exp: float, node: ast.AST) -> None:
    """Refuse ``base ** exp`` whose magnitude would pass 2**63, before computing it."""
    if base == 0 and exp < 0:
        raise _Refused(node, "division by zero")
    if not (isinstance(base, int) and isinstance(exp, int)):
        return  # float arithmetic is O(1); an overflow is caught and refused
    if abs(base) in (0, 1) or exp <= 0:
        return
    if math.log2(abs(base)) * exp >= 63:
        raise _Refused(node, "the result would exceed 2**63")


def _number(node: ast.expr) -> int | float:
    value = _value(node)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(node, "arithmetic works on numbers only")
    return value


def _bounded(value: int | float, node: ast.AST) -> int | float:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(node, "floats must be finite")
        return value
    if abs(value) >= INT_BOUND:
        raise _Refused(node, "integers must lie within +-2**63")
    return value


_HANDLERS: dict[type, Callable[[Any], Any]] = {
    ast.Call: _call, ast.Constant: _constant, ast.Name: _name, ast.Tuple: _sequence,
    ast.List: _sequence, ast.Dict: _dict, ast.UnaryOp: _unary, ast.BinOp: _binop}
