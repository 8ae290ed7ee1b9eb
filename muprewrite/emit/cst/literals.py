"""Names and text from the user's model, written into emitted source as inert code.

Module paths and parameter names come from the user's model (a ``ModuleDict`` key may hold
quotes, backslashes or line breaks), file names from the user's disk. Pasted into source they
could close a string or a comment and run code on import. Every such value reaches emitted
code through this module: a string becomes a libcst ``SimpleString`` node whose evaluated
value is checked to be the value itself, and text for a comment has every character that
could end the comment (or hide text from a reader) escaped.
"""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst

from ..errors import EmitError

__all__ = ["string", "strings_tuple", "string_set", "comment_text", "identifier", "number",
           "numbers_tuple"]

_MODULE = cst.Module([])


def string(value: str) -> str:
    """``value`` as a Python string literal (double quotes where possible), built as a libcst
    node and checked to evaluate back to ``value``."""
    if not isinstance(value, str):
        raise EmitError(f"internal: {type(value).__name__} where a name was expected",
                        fix="please report it with the model file")
    quoted = repr(value)
    if quoted[0] == "'" and '"' not in value:
        quoted = '"' + quoted[1:-1] + '"'
    code = _MODULE.code_for_node(cst.SimpleString(quoted))
    parsed = cst.parse_expression(code)
    if not isinstance(parsed, cst.SimpleString) or parsed.evaluated_value != value:
        raise EmitError(f"the name {value!r} cannot be written as a Python string literal",
                        fix="rename the module or parameter")
    return code


def strings_tuple(values: Iterable[str]) -> str:
    """A tuple literal of strings (a one-element tuple keeps its comma)."""
    items = [string(v) for v in values]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def string_set(values: Iterable[str]) -> str:
    """A set literal of strings (at least one)."""
    return "{" + ", ".join(string(v) for v in values) + "}"


def comment_text(value: object) -> str:
    """``value`` as text that stays inside one ``#`` comment: line breaks and every other
    character that is not printable (bidirectional overrides included) are escaped as in a
    Python literal; so is a backslash that ends the text or comes before a space, where a
    line may end (libcst reads a comment's last backslash as a line continuation, joining the
    next line to the comment), as ``\\x5c``."""
    text = str(value)
    out = [c if c.isprintable() else repr(c)[1:-1] for c in text]
    for i, c in enumerate(text):
        if c == "\\" and (i + 1 == len(text) or text[i + 1].isspace()):
            out[i] = "\\x5c"
    return "".join(out)


def identifier(value: str) -> str:
    """``value`` if it is a plain Python identifier (an attribute or constant the emitter
    names); otherwise an internal error, never code."""
    if not value.isidentifier() or not value.isascii():
        raise EmitError(f"internal: {value!r} is not an identifier the emitter may write",
                        fix="please report it with the model file")
    return value


def number(x: object) -> str:
    """An axis, exponent, flag or constant as code: only bools, ints and finite floats are
    written (``repr``), anything else is an internal error, never code."""
    if isinstance(x, bool | int) or (isinstance(x, float) and x == x and abs(x) != float("inf")):
        return repr(x)
    raise EmitError(f"internal: {x!r} is not a number the emitter may write",
                    fix="please report it with the model file")


def numbers_tuple(values: tuple[int, ...]) -> str:
    """A tuple literal of numbers (axes): a one-element tuple keeps its comma."""
    return "(" + ", ".join(number(a) for a in values) + ("," if len(values) == 1 else "") + ")"
