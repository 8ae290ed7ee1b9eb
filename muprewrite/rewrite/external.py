"""Stage 4c — attention the runtime edit cannot reach: calls of external attention kernels.

flash-attn's ``flash_attn_func(q, k, v, softmax_scale=...)`` and xformers'
``memory_efficient_attention(q, k, v, scale=...)`` are Python functions, not torch
functions: a TorchFunctionMode does not see the call, only what it does inside. Rewriting
their scale argument would mean patching the library, which this project does not do. So
such a call is refused where it is reached, not at ``apply``: U-ViT picks 'flash' (SDPA,
scaled), 'xformers' or 'math' by a global, and a model that never takes the xformers path
must not be refused for it. The runtime edit (logits.py) asks ``external_names`` whether a
host's code calls one of ``EXTERNAL_ATTENTION`` (its class's ``forward`` and the methods it
calls as ``self.name(...)``, for every module of the host's subtree); only then does it look,
at each torch call, for a frame of such a function between the call and the host's forward
(every library touches its tensors through torch functions, ``q.shape`` included), and raise
naming the user's line that called it. The source emitter passes ``scale=`` to these calls
instead (emit/find/attention.py).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import weakref
from collections.abc import Callable

from torch import nn

__all__ = ["EXTERNAL_ATTENTION", "SCALE_KEYWORDS", "external_names"]

# function name -> library
EXTERNAL_ATTENTION = {
    **dict.fromkeys(("flash_attn_func", "flash_attn_qkvpacked_func", "flash_attn_kvpacked_func",
                     "flash_attn_varlen_func", "flash_attn_varlen_qkvpacked_func",
                     "flash_attn_varlen_kvpacked_func", "flash_attn_with_kvcache"), "flash-attn"),
    **dict.fromkeys(("memory_efficient_attention", "memory_efficient_attention_forward",
                     "memory_efficient_attention_forward_requires_grad"), "xformers"),
}
# the calls whose scale the source emitter sets: name -> (scale keyword, the number of
# positional arguments that leaves it unset), for a query whose last axis is d_head and a
# default scale of 1/sqrt(d_head). flash-attn's positions moved between versions (FA3 has
# no dropout_p): past q, k, v it takes keywords only
SCALE_KEYWORDS = {**dict.fromkeys(("memory_efficient_attention",
                                   "memory_efficient_attention_forward",
                                   "memory_efficient_attention_forward_requires_grad"),
                                  ("scale", 5)),
                  "flash_attn_func": ("softmax_scale", 3)}
_SCANNED: dict[type, tuple[tuple[str, str], ...]] = {}
_HOSTS: weakref.WeakKeyDictionary[nn.Module, frozenset[str]] = weakref.WeakKeyDictionary()


def external_names(host: nn.Module) -> frozenset[str]:
    """The external kernels (``EXTERNAL_ATTENTION`` names) the code of ``host``'s subtree
    calls; computed once per module."""
    found = _HOSTS.get(host)
    if found is None:
        found = frozenset(name for module in host.modules()  # the class as written
                          for _, name in _calls(getattr(type(module), "_muprewrite_original",
                                                        type(module))))
        _HOSTS[host] = found
    return found


def _calls(cls: type) -> tuple[tuple[str, str], ...]:
    if cls not in _SCANNED:
        _SCANNED[cls] = tuple(_scan(cls))
    return _SCANNED[cls]


def _scan(cls: type) -> list[tuple[str, str]]:
    """(file:line, name) of each external kernel call reachable from ``cls.forward`` through
    calls of ``self.<method>(...)`` and of the plain functions of the module the calling code
    is written in (a helper ``attention(q, k, v)`` beside the class)."""
    found: list[tuple[str, str]] = []
    todo = [getattr(cls, "forward", None)]
    done: set[object] = set()
    while todo:
        func = todo.pop()
        if func in done or not inspect.isfunction(func) or func.__module__.startswith("torch."):
            continue
        done.add(func)
        tree, where = _parsed(func)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = _callee(node.func)
            if callee in EXTERNAL_ATTENTION:
                found.append((where(node.lineno), callee))
            elif _is_self_method(node.func):
                todo.append(getattr(cls, callee, None))
            elif isinstance(node.func, ast.Name):
                todo.append(func.__globals__.get(callee))
    return found


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
