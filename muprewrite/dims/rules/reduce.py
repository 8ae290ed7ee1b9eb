"""Reductions: kept axes map to the output in order; reduced axes vanish (or become 1)."""

from __future__ import annotations

from torch import fx

from ..registry import Ctx, rule

__all__: list[str] = []


def _dims(node: fx.Node, ndim: int) -> set[int] | None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dim is None or dim == []:
        return None  # all axes
    dims = [dim] if isinstance(dim, int) else list(dim)
    return {d % ndim for d in dims}


@rule("sum", "mean", "amax", "amin", "var", "std", "prod", "logsumexp", "norm",
      "linalg_vector_norm", "max", "min", "argmax", "argmin", "var_mean", "std_mean", "all",
      "any", "nansum", "nanmean", "median", "mode")
def reduction(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    if x is None:
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
