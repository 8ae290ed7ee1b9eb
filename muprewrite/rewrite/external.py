"""Stage 4c — attention the runtime edit cannot reach: calls of external attention kernels.

flash-attn's ``flash_attn_func(q, k, v, softmax_scale=...)`` and xformers'
``memory_efficient_attention(q, k, v, scale=...)`` are Python functions, not torch
functions: a TorchFunctionMode does not see the call, only what it does inside (a
``torch.ops`` kernel in recent versions, which the runtime edit refuses, or a pybind call
it never sees). Rewriting their scale argument would mean patching the library, which this
project does not do. So ``apply`` reads the source of every host with an attention edit
(its ``forward`` and the methods of its class that ``forward`` calls as ``self.name(...)``)
and refuses, with the file and line, when it calls one of ``EXTERNAL_ATTENTION``. A kernel
reached in another way (a function table, another module's helper) is not seen here.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable

from torch import nn

from ..errors import MuprewriteError
from .plan import Plan

__all__ = ["EXTERNAL_ATTENTION", "refuse_external_calls"]

# function name -> library
EXTERNAL_ATTENTION = {
    **dict.fromkeys(("flash_attn_func", "flash_attn_qkvpacked_func", "flash_attn_kvpacked_func",
                     "flash_attn_varlen_func", "flash_attn_varlen_qkvpacked_func",
                     "flash_attn_varlen_kvpacked_func", "flash_attn_with_kvcache"), "flash-attn"),
    **dict.fromkeys(("memory_efficient_attention", "memory_efficient_attention_forward",
                     "memory_efficient_attention_forward_requires_grad"), "xformers"),
}
_SCANNED: dict[type, tuple[str, str] | None] = {}


def refuse_external_calls(model: nn.Module, plan: Plan) -> None:
    """Raise where a host whose attention takes a logit factor calls an external kernel."""
    for edit in plan.hosts:
        if edit.logits is None:
            continue
        found = external_call(type(model.get_submodule(edit.module)))
        if found is not None:
            where, name = found
            host = edit.module or "the root module"
            raise MuprewriteError(
                f"{host} calls {name} ({EXTERNAL_ATTENTION[name]}), whose softmax scale "
                "muprewrite cannot rewrite, while its attention logits need a factor "
                f"({edit.logits.planned()})", where=where,
                fix="call F.scaled_dot_product_attention(q, k, v, ...) on that path "
                    "(muprewrite scales it), or pass the muP scale yourself there and drop "
                    "the call from this module's forward")


def external_call(cls: type) -> tuple[str, str] | None:
    """(file:line, function name) of the first external kernel call reachable from
    ``cls.forward`` through ``self.method(...)`` calls; None if none (or no source)."""
    if cls not in _SCANNED:
        _SCANNED[cls] = _scan(cls)
    return _SCANNED[cls]


def _scan(cls: type) -> tuple[str, str] | None:
    todo, done = ["forward"], set()
    while todo:
        name = todo.pop()
        done.add(name)
        func = getattr(cls, name, None)
        if not inspect.isfunction(func) or func.__module__.startswith("torch."):
            continue
        tree, where = _parsed(func)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = _callee(node.func)
            if callee in EXTERNAL_ATTENTION:
                return where(node.lineno), callee
            if _is_self_method(node.func) and callee not in done:
                todo.append(callee)
    return None


def _parsed(func: Callable[..., object]) -> tuple[ast.AST | None, Callable[[int], str]]:
    try:
        lines, start = inspect.getsourcelines(func)
        file = inspect.getsourcefile(func) or "<unknown>"
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return None, str
    return tree, lambda line: f"{file}:{start + line - 1}"


def _callee(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _is_self_method(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == "self")
