"""Stage 5a — the runtime edit: a TorchFunctionMode active during one host module's forward.

It sees every torch call the host's forward makes (children included) and changes only the
planned ones: the direct consumers of a parameter that takes a forward multiplier, and the
``ordinal``-th attention call of a family, whose logits take a factor. Everything else runs
untouched. ``torch.compile`` traces through the mode, so the compiled graph holds the same
scalar multiplies a hand-written muP model would, and no graph break.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .plan import AttentionEdit, Family

__all__ = ["RewriteMode", "RUNTIME_FAMILIES"]

# runtime function names (``func.__name__``) of each call family
RUNTIME_FAMILIES: dict[str, Family] = {
    "scaled_dot_product_attention": "sdpa", "softmax": "softmax", "_softmax": "softmax",
    "matmul": "matmul", "__matmul__": "matmul", "bmm": "matmul", "einsum": "matmul",
    "baddbmm": "matmul",
}
# ops through which a factor on a weight equals a factor on the op's output (linear in it)
_LINEAR_IN_WEIGHT = {
    "t", "transpose", "permute", "mT", "T", "__get__", "view", "reshape", "to", "type_as",
    "contiguous", "clone", "float", "half", "bfloat16", "matmul", "__matmul__", "__rmatmul__",
    "mm", "bmm", "einsum", "linear", "addmm", "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "embedding", "embedding_bag",
}
_GATHER = {"embedding", "embedding_bag", "index_select", "__getitem__", "take", "gather"}
_HAS_BIAS = {"linear": (2, 0), "conv1d": (2, 0), "conv2d": (2, 0), "conv3d": (2, 0),
             "conv_transpose1d": (2, 0), "conv_transpose2d": (2, 0),
             "conv_transpose3d": (2, 0), "addmm": (0, 1)}  # name -> (bias slot, input slot)


class RewriteMode(TorchFunctionMode):
    """``uses``: (parameter, factor, skip_gather); ``attention``: the host's logit edits."""

    def __init__(self, uses: Sequence[tuple[torch.Tensor, float, bool]],
                 attention: Sequence[AttentionEdit]) -> None:
        super().__init__()
        self.uses = uses
        self.attention = attention
        self.counts: dict[str, int] = {}

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if self.attention:
            family = RUNTIME_FAMILIES.get(name)
            if family is not None:
                ordinal = self.counts.get(family, 0)
                self.counts[family] = ordinal + 1
                for edit in self.attention:
                    if edit.family == family and edit.ordinal == ordinal:
                        return _scaled_logits(func, family, edit.factor, args, kwargs)
        if self.uses and name in _LINEAR_IN_WEIGHT:
            for param, factor, skip_gather in self.uses:
                if _holds(args, param) and not (skip_gather and name in _GATHER):
                    return _scaled_use(func, name, factor, args, kwargs)
        return func(*args, **kwargs)


def _holds(args: Sequence[Any], param: torch.Tensor) -> bool:
    for a in args:
        if a is param:
            return True
        if isinstance(a, (list, tuple)) and any(b is param for b in a):
            return True  # einsum(eq, [x, W])
    return False


def _scaled_use(func: Callable[..., Any], name: str, factor: float, args: Sequence[Any],
                kwargs: dict[str, Any]) -> Any:
    if name in _HAS_BIAS:
        bias_slot, input_slot = _HAS_BIAS[name]
        bias = args[bias_slot] if len(args) > bias_slot else kwargs.get("bias")
        if bias is not None:  # (c x) W + b: the factor must not reach the bias
            args = list(args)
            args[input_slot] = args[input_slot] * factor
            return func(*args, **kwargs)
    out = func(*args, **kwargs)
    return out * factor if isinstance(out, torch.Tensor) else out


def _scaled_logits(func: Callable[..., Any], family: Family, factor: float,
                   args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    if family == "sdpa":
        args = list(args)
        scale = args.pop(6) if len(args) > 6 else kwargs.pop("scale", None)
        query = args[0] if args else kwargs["query"]
        if scale is None:
            scale = query.shape[-1] ** -0.5
        return func(*args, **kwargs, scale=scale * factor)
    if family == "softmax":
        args = list(args)
        args[0] = args[0] * factor
        return func(*args, **kwargs)
    return func(*args, **kwargs) * factor
