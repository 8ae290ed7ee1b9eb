"""Stage 5a — the runtime edit: a TorchFunctionMode active during one host module's forward.

It sees every torch call the host's forward makes (children included) and changes only the
planned ones: the direct consumers of a parameter that takes a forward multiplier, and,
where the host has a logit table, every attention computation, keyed to what the call is
(see logits.py). Everything else runs untouched. ``torch.compile`` traces through the mode,
so the compiled graph holds the same scalar multiplies a hand-written muP model would, and
no graph break.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

from .logits import ATTENTION_CALLS, Ledger, refuse_external

__all__ = ["RewriteMode", "attention_owned"]

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
    """``uses``: (parameter, factor, factor at embedding lookups); ``ledger``: the host's
    attention edit for this call, None where the host has none (or an enclosing host's mode
    does it)."""

    def __init__(self, uses: Sequence[tuple[torch.Tensor, float, float]],
                 ledger: Ledger | None) -> None:
        super().__init__()
        self.uses = uses
        self.ledger = ledger

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        ledger = self.ledger
        if ledger is not None:
            handler = ATTENTION_CALLS.get(name)
            if handler is not None and not self._use_of(name, args):
                return handler(ledger, func, args, kwargs)
            refuse_external(ledger, func)
        out = self._call(func, name, args, kwargs)
        if ledger is not None and ledger.tracked:
            ledger.follow(args, out)
        return out

    def _use_of(self, name: str, args: Sequence[Any]) -> bool:
        """A planned parameter use (a weight operand is never attention logits)."""
        return bool(self.uses) and name in _LINEAR_IN_WEIGHT and any(
            _holds(args, param) for param, _, _ in self.uses)

    def _call(self, func: Callable[..., Any], name: str, args: Sequence[Any],
              kwargs: dict[str, Any]) -> Any:
        if self.uses and name in _LINEAR_IN_WEIGHT:
            for param, factor, gather in self.uses:
                if _holds(args, param):
                    factor = gather if name in _GATHER else factor
                    if factor == 1.0:  # a tied weight's lookups with no input multiplier
                        continue
                    return _scaled_use(func, name, factor, args, kwargs)
        return func(*args, **kwargs)


def attention_owned() -> bool:
    """Whether an enclosing host's mode already applies an attention edit (it owns the
    attention calls of its whole subtree; a nested host leaves them to it)."""
    return any(isinstance(mode, RewriteMode) and mode.ledger is not None
               for mode in _get_current_function_mode_stack())


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
