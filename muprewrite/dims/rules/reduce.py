"""Reductions: kept axes map to the output in order; reduced axes vanish (or become 1)."""

from __future__ import annotations

from torch import fx

from ..registry import Ctx, op_name, rule
from .elementwise import pointwise

__all__: list[str] = []


# ops whose reduced dims are not the second argument: norm(x, p, dim), vector_norm(x, ord, dim)
_DIM_SLOT = {"norm": 2, "linalg_vector_norm": 2}


def _dims(node: fx.Node, ndim: int) -> set[int] | None:
    """The reduced axes; None for all of them (or an argument that names no axes)."""
    slot = _DIM_SLOT.get(op_name(node), 1)
    dim = node.args[slot] if len(node.args) > slot else node.kwargs.get("dim")
    if isinstance(dim, int) and not isinstance(dim, bool):
        return {dim % ndim}
    if isinstance(dim, (list, tuple)) and dim and all(isinstance(d, int) for d in dim):
        return {d % ndim for d in dim}
    return None


@rule("sum", "mean", "amax", "amin", "var", "std", "prod", "logsumexp", "norm",
      "linalg_vector_norm", "max", "min", "argmax", "argmin", "var_mean", "std_mean", "all",
      "any", "nansum", "nanmean", "median", "mode")
def reduction(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    if x is None:
        return
    if len(node.args) > 1 and ctx.is_tensor(node.args[1]):  # max(a, b): elementwise
        pointwise(node, ctx)
        return
    reduced = _dims(node, len(x))
    if reduced is None:
        return
    outs = [ctx.out(node)] if ctx.is_tensor(node) else [
        ctx.out(node, i) for i in range(len(node.meta["val"]))
    ]
    kept = [a for d, a in enumerate(x) if d not in reduced]
    for out in outs:
        if len(out) == len(x):  # keepdim: reduced axes became size 1
            ctx.same_all([a for d, a in enumerate(x) if d not in reduced],
                         [o for d, o in enumerate(out) if d not in reduced])
        elif len(out) == len(kept):
            ctx.same_all(kept, out)
