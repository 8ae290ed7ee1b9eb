"""Stage 5a' — the runtime attention edit, keyed to what a call is, not to where it came.

In a host with a :class:`LogitTable`, every attention computation of the host's forward
takes the factor of its head size d_head:

- ``F.scaled_dot_product_attention``: the scale (default 1/sqrt(d_head)) times the factor;
- ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``) and the fused kernels
  ``torch._native_multi_head_attention`` / ``torch._transformer_encoder_layer_fwd``: the
  query rows of the in-projection (weight and bias) times the factor. That multiplies the
  logits on every path inside (SDPA or bmm + softmax, ``need_weights`` or not, any mask);
- explicit attention: a product (``@``, matmul, mm, bmm, einsum, baddbmm) of two
  activations (no parameter operand, no softmax output operand) that contracts one axis of
  a planned head size is taken for q.k^T, and its result is scaled, so masks and additive
  biases added afterwards stay as they are. A :class:`Ledger` follows its result through the
  ops after it: it must reach a softmax before the host's forward returns.

Refused with a :class:`MuprewriteError` at the call, never run unscaled: an attention call
whose head size the capture did not see in this host, a softmax over a product of
activations whose contracted size is not a planned head size, and the kernels of flash-attn
and xformers, whose scale argument muprewrite does not rewrite: their ``torch.ops``
namespaces (``EXTERNAL_NAMESPACES``), and any torch call made inside one of their Python
entry points (``flash_attn_func``, ``memory_efficient_attention``: external.py) where the
host's code calls one, named at the user's line that called it.
Refused when the host's forward returns (before its output is handed back): a scaled
product that never reached a softmax, and ``flex_attention`` (its kernel runs under
torch.compile, where an edit from the mode does not reach it).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any, Literal

import torch
from torch import nn

from ..errors import MuprewriteError
from .external import EXTERNAL_ATTENTION, external_names
from .products import contracted, is_weight
from .table import LogitTable

__all__ = ["Ledger", "ATTENTION_CALLS", "EXTERNAL_NAMESPACES"]

Handler = Callable[["Ledger", Callable[..., Any], Sequence[Any], dict[str, Any]], Any]

# torch.ops namespaces of attention kernels with their own scale argument
EXTERNAL_NAMESPACES = frozenset({"flash_attn", "flash_attn_3", "flash_attn2_c_op", "xformers",
                                 "xformers_flash", "xformers_flash3"})
_LIBRARIES = (str(Path(torch.__file__).parent), str(Path(__file__).parents[1]))
_FIX = ("compute it as F.scaled_dot_product_attention(q, k, v, ...) or "
        "softmax(q @ k.transpose(-2, -1) * scale) on that path")


@dataclass(eq=False)  # identity: two chains are two tags
class Tag:
    """What a tracked tensor is: scaled ``logits``, a ``foreign`` product (an activation
    product whose contracted size is no planned head size) or softmax ``probs``."""

    kind: Literal["logits", "foreign", "probs"]
    d_head: int
    reached: bool = False  # logits: a softmax consumed them


class Ledger:
    """The attention edit's state for one call of a host's forward; ``name``: the host and
    its class, for messages; ``forward``: the host's original forward, given only where the
    host's code calls an external kernel (flash-attn, xformers) and its logits take a factor
    (``looks_external``, decided once at install): then every torch call looks for a frame
    of that kernel (``external``) below ``forward``."""

    def __init__(self, table: LogitTable, name: str,
                 forward: Callable[..., Any] | None = None) -> None:
        self.table, self.name = table, name
        self.tracked: list[tuple[torch.Tensor, Tag]] = []
        self.scaled: list[Tag] = []
        self.refusals: list[str] = []  # found where raising is not possible (see _flex)
        self.external = forward is not None
        self.stop: CodeType | None = getattr(forward, "__code__", None)

    def refuse_reached_external(self) -> None:
        """Raise when this torch call runs inside an external kernel's Python entry point
        called from the host's forward, naming the line that called it."""
        frame = sys._getframe(1)
        outer = None
        while frame is not None and frame.f_code is not self.stop:
            if frame.f_code.co_name in EXTERNAL_ATTENTION:
                outer = frame
            frame = frame.f_back  # type: ignore[assignment]  # None ends the walk
        if outer is None:
            return
        name, caller = outer.f_code.co_name, outer.f_back
        where = f"{caller.f_code.co_filename}:{caller.f_lineno}" if caller is not None else ""
        raise self.error(f"{name} ({EXTERNAL_ATTENTION[name]}) is called here with its own "
                         "softmax scale, which the runtime edit cannot rewrite, while the logits here "
                         f"take a factor ({self.table.planned()})",
                         "take another attention path here (F.scaled_dot_product_attention "
                         "is scaled), or emit the muP source (muprewrite model.py --model ... "
                         "--base ...), which passes the scale to this call", where=where)

    def factor(self, d_head: int, what: str) -> float:
        factor = self.table.factor(d_head)
        if factor is None:
            raise self.error(f"{what} with head size {d_head}, which the capture did not "
                             f"see here (planned: {self.table.planned()})",
                             "capture the model on this path, or " + _FIX)
        return factor

    def error(self, what: str, fix: str, at_call: bool = True, where: str = ""
              ) -> MuprewriteError:
        """``where``: given, else the user's line of the call (``at_call``), else the planned
        sites."""
        where = where or (_user_line() if at_call else "")
        planned = ", ".join(self.table.sources)
        return MuprewriteError(f"muprewrite cannot apply the attention logit factor in "
                               f"{self.name}: {what} (the capture saw attention at {planned})",
                               where=where or planned, fix=fix)

    def tag_of(self, value: Any) -> Tag | None:
        if isinstance(value, torch.Tensor):
            for tensor, tag in self.tracked:
                if tensor is value:
                    return tag
        return None

    def track(self, out: Any, tag: Tag) -> None:
        if isinstance(out, torch.Tensor):
            self.tracked.append((out, tag))

    def drop(self, tag: Tag) -> None:
        """Stop following a chain (and holding its tensors) once it is consumed."""
        self.tracked = [(t, g) for t, g in self.tracked if g is not tag]

    def follow(self, args: Sequence[Any], out: Any) -> None:
        """An op on a tracked tensor whose result is no larger (a scale, a mask, a bias, a
        cast, dropout, a view, a slice): the result is the same kind of thing."""
        for arg in args:
            for item in arg if isinstance(arg, (list, tuple)) else (arg,):
                tag = self.tag_of(item)
                if tag is None:
                    continue
                for result in out if isinstance(out, (list, tuple)) else (out,):
                    if isinstance(result, torch.Tensor) and result.numel() <= item.numel() \
                            and self.tag_of(result) is None:
                        self.track(result, tag)
                return

    def finish(self) -> None:
        """At the end of the host's forward: nothing refused, and every scaled product
        reached a softmax."""
        for what in self.refusals:
            raise self.error(what, "pass scale=<sqrt(d_head_base) / d_head> yourself and "
                                   "call it outside this module's forward, or " + _FIX, False)
        for tag in self.scaled:
            if not tag.reached:
                raise self.error(
                    f"a product of two activations contracting a size-{tag.d_head} axis was "
                    "taken for attention logits q.k^T and scaled, but it never reached a "
                    "softmax", "if it is attention, end it in a softmax (or call "
                    "F.scaled_dot_product_attention); if it is not, compute it outside this "
                    "module's forward", False)


def looks_external(host: nn.Module, table: LogitTable) -> bool:
    """Whether ``host``'s attention edit must watch for external kernels: its logits take a
    factor and its code calls one. Decided at install, not per forward (the source scan and
    its cache are nothing torch.compile should trace)."""
    return any(f != 1.0 for _, f in table.factors) and bool(external_names(host))


def _user_line() -> str:
    """file:line of the innermost frame outside torch and muprewrite (only on errors)."""
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(_LIBRARIES):
            return f"{frame.filename}:{frame.lineno}"
    return ""


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _sdpa(ledger: Ledger, func: Callable[..., Any], args: Sequence[Any],
          kwargs: dict[str, Any]) -> Any:
    if ledger.external:
        ledger.refuse_reached_external()
    query = _arg(args, kwargs, 0, "query")
    factor = ledger.factor(query.shape[-1], "scaled_dot_product_attention")
    if factor == 1.0:
        return func(*args, **kwargs)
    args, kwargs = list(args), dict(kwargs)
    scale = args.pop(6) if len(args) > 6 else kwargs.pop("scale", None)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    return func(*args, **kwargs, scale=scale * factor)


def _flex(ledger: Ledger, func: Callable[..., Any], args: Sequence[Any],
          kwargs: dict[str, Any]) -> Any:
    # flex_attention runs its op under torch.compile even in eager mode: an edit of its
    # arguments from the mode does not reach the kernel and an exception raised here ends
    # as a dynamo error (measured, torch 2.13). Recorded; finish() raises.
    ledger.refusals.append("flex_attention, whose scale the runtime edit cannot reach")
    return func(*args, **kwargs)


# name -> (embed_dim, num_heads, in-projection weight, bias) positions
_PACKED = {"multi_head_attention_forward": (3, 4, 5, 6),
           "_native_multi_head_attention": (3, 4, 5, 6),
           "_transformer_encoder_layer_fwd": (1, 2, 3, 4)}


def _query_rows(tensor: torch.Tensor | None, embed_dim: int, factor: float
                ) -> torch.Tensor | None:
    if tensor is None:
        return None
    return torch.cat([tensor[:embed_dim] * factor, tensor[embed_dim:]])


def _packed(ledger: Ledger, func: Callable[..., Any], args: Sequence[Any],
            kwargs: dict[str, Any]) -> Any:
    """Multi-head attention with a packed in-projection: scale its query rows."""
    if ledger.external:
        ledger.refuse_reached_external()
    embed, heads, weight, bias = _PACKED[func.__name__]
    args, kwargs = list(args), dict(kwargs)
    embed_dim = args[embed]
    factor = ledger.factor(embed_dim // args[heads], func.__name__)
    if factor == 1.0:
        return func(*args, **kwargs)
    if kwargs.get("use_separate_proj_weight"):
        kwargs["q_proj_weight"] = kwargs["q_proj_weight"] * factor
    else:
        args[weight] = _query_rows(args[weight], embed_dim, factor)
    args[bias] = _query_rows(args[bias], embed_dim, factor)
    return func(*args, **kwargs)


def _product(ledger: Ledger, func: Callable[..., Any], args: Sequence[Any],
             kwargs: dict[str, Any]) -> Any:
    if ledger.external:
        ledger.refuse_reached_external()
    found = contracted(func.__name__, args)
    if found is None or not found[0].is_floating_point():
        return func(*args, **kwargs)
    a, b, size = found
    probs = [t for x in (a, b) if (t := ledger.tag_of(x)) is not None and t.kind == "probs"]
    if probs:  # attn @ v: the chain ends here
        ledger.drop(probs[0])
        return func(*args, **kwargs)
    if is_weight(a) or is_weight(b):  # a projection (of logits: talking heads)
        out = func(*args, **kwargs)
        if ledger.tracked:
            ledger.follow(args, out)
        return out
    factor = ledger.table.factor(size)
    if factor is None:
        out = func(*args, **kwargs)
        ledger.track(out, Tag("foreign", size))
        return out
    if factor == 1.0:
        out = func(*args, **kwargs)
    elif func.__name__ == "baddbmm":
        out = func(*args, **{**kwargs, "alpha": kwargs.get("alpha", 1) * factor})
    else:
        out = func(*args, **kwargs) * factor
    tag = Tag("logits", size)
    ledger.scaled.append(tag)
    ledger.track(out, tag)
    return out


def _softmax(ledger: Ledger, func: Callable[..., Any], args: Sequence[Any],
             kwargs: dict[str, Any]) -> Any:
    tag = ledger.tag_of(_arg(args, kwargs, 0, "input"))
    if tag is None and not ledger.table.plain_softmax:
        raise ledger.error("a softmax over a tensor that is no q.k^T product it can "
                           "recognise, and the capture saw no softmax here other than "
                           "attention", "write the logits as q @ k.transpose(-2, -1) (or "
                           "einsum / bmm / baddbmm) before the softmax, or call "
                           "F.scaled_dot_product_attention")
    if tag is not None and tag.kind == "foreign":
        raise ledger.error(f"a softmax over a product of activations contracting a "
                           f"size-{tag.d_head} axis, which is no head size the capture saw "
                           f"here (planned: {ledger.table.planned()})",
                           "capture the model on this path, or " + _FIX)
    if tag is not None and tag.kind == "logits":
        tag.reached = True
        ledger.drop(tag)
    out = func(*args, **kwargs)
    ledger.track(out, Tag("probs", tag.d_head if tag is not None else 0))
    return out


ATTENTION_CALLS: dict[str, Handler] = {
    "scaled_dot_product_attention": _sdpa, "flex_attention": _flex,
    **dict.fromkeys(_PACKED, _packed),
    **dict.fromkeys(("matmul", "__matmul__", "mm", "bmm", "einsum", "baddbmm"), _product),
    **dict.fromkeys(("softmax", "_softmax", "_safe_softmax"), _softmax),
}


def refuse_external(ledger: Ledger, func: Callable[..., Any]) -> None:
    if ledger.external:
        ledger.refuse_reached_external()
    namespace = getattr(func, "namespace", None)
    if namespace in EXTERNAL_NAMESPACES:
        raise ledger.error(f"{namespace} kernel {getattr(func, '__name__', func)} has its own "
                           "softmax scale, which muprewrite does not rewrite", _FIX)
