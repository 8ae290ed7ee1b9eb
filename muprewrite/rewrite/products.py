"""Products that may be q.k^T: which two operands, which axis they contract.

The runtime attention edit (logits.py) takes a product of two activations that contracts
one axis of a planned head size for attention logits. This module only reads a call:
``contracted("matmul", (q, k_t))`` gives (q, k_t, q.shape[-1]); an einsum gives the size
of its one summed index wherever it sits (with or without ``->``, with an ellipsis or not):
the head size of ADM's ``einsum("bct,bcs->bts", q, k)`` is ``q.shape[1]``.

>>> import torch
>>> q, k = torch.zeros(2, 4, 5, 8), torch.zeros(2, 4, 7, 8)
>>> contracted("einsum", ("...id,...jd->...ij", q, k))[2]
8
>>> contracted("matmul", (q, k.mT))[2], contracted("einsum", ("bhid,bhjd->ij", q, k))
(8, None)
>>> q, k = torch.zeros(6, 16, 20), torch.zeros(6, 16, 20)  # ADM: (B*heads, ch, T)
>>> contracted("einsum", ("bct,bcs->bts", q, k))[2]
16
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["contracted", "is_weight"]


def is_weight(t: torch.Tensor) -> bool:
    """A parameter or a view of one (``W.T``, ``W[:, :d]``): a projection, not logits."""
    return isinstance(t, nn.Parameter) or isinstance(t._base, nn.Parameter)


def contracted(name: str, args: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(a, b, size of the one contracted axis) of a two-operand product, else None."""
    if name == "einsum":
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) \
            else list(args[1:])
        if len(operands) != 2 or not isinstance(args[0], str):
            return None
        size = _einsum_contracted(args[0], operands[0], operands[1])
        return None if size is None else (operands[0], operands[1], size)
    first = 1 if name == "baddbmm" else 0
    if len(args) < first + 2:
        return None  # operands passed by keyword: not the q @ k^T form
    a, b = args[first], args[first + 1]
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() < 2 \
            or b.dim() < 2:
        return None
    return a, b, int(a.shape[-1])


def _einsum_contracted(equation: str, a: torch.Tensor, b: torch.Tensor) -> int | None:
    """Size of the one index summed over in ``einsum(equation, a, b)``, else None."""
    inputs, arrow, output = equation.replace(" ", "").partition("->")
    subs = inputs.split(",")
    if len(subs) != 2:
        return None
    axes = [_axes(sub, t.dim()) for sub, t in zip(subs, (a, b))]
    if axes[0] is None or axes[1] is None:
        return None
    if not arrow:  # implicit output: the indices that occur once
        output = "".join(c for c in inputs if inputs.count(c) == 1)
    summed = [c for c in axes[0] if c in axes[1] and c not in output]
    return int(a.shape[axes[0][summed[0]]]) if len(summed) == 1 else None


def _axes(sub: str, ndim: int) -> dict[str, int] | None:
    """Index letter -> axis of one operand (an ellipsis spans the axes no letter names)."""
    head, dots, tail = sub.partition("...")
    if len(head) + len(tail) > ndim or (not dots and len(head) != ndim):
        return None
    return {**{c: i for i, c in enumerate(head)},
            **{c: ndim - len(tail) + i for i, c in enumerate(tail)}}
