"""Data-dependent routing: top-k selection, sorting, scatters and masked selection.

A mixture-of-experts layer picks experts with ``topk`` of router logits, gathers the tokens
of each expert (``torch.where(mask)``, ``x[mask]``), and adds the experts' outputs back with
``index_add_`` / ``index_put_`` / ``scatter_add``. The number of tokens an expert gets is
known only at run time (an unbacked size): it counts data, so it is finite. The axis that
``topk`` selects along (the experts) is not bounded by anything in the graph: a single
capture cannot tell it from width, a ``base`` capture measures it.
"""

from __future__ import annotations

import torch
from torch import fx

from ..axes import Axis, Strength
from ..registry import Ctx, rule

__all__: list[str] = []


def _dim(node: fx.Node, slot: int, ndim: int, default: int = -1) -> int:
    dim = node.args[slot] if len(node.args) > slot else node.kwargs.get("dim", default)
    return int(dim) % ndim if ndim else 0


def _except(axes: list[Axis], dim: int) -> list[Axis]:
    return [a for d, a in enumerate(axes) if d != dim]


@rule("topk")
def topk(node: fx.Node, ctx: Ctx) -> None:
    """``values, indices = topk(x, k, dim)``: all axes but ``dim`` kept; ``dim`` becomes k."""
    x = ctx.axes(node.args[0])
    if not x:
        return
    dim = _dim(node, 2, len(x))
    for i in range(len(node.meta["val"])):
        out = ctx.out(node, i)
        ctx.same_all(_except(x, dim), _except(out, dim))
        ctx.graph.seed(out[dim], Strength.WEAK, f"topk of literal k={node.args[1]}", node.name)


@rule("sort", "argsort", "msort")
def sort(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    if x is None:
        return
    outs = [ctx.out(node)] if ctx.is_tensor(node) else [
        ctx.out(node, i) for i in range(len(node.meta["val"]))]
    for out in outs:
        ctx.same_all(x, out)


@rule("index_add", "index_add_", "index_copy", "index_copy_", "index_reduce",
      "index_reduce_")
def index_add(node: fx.Node, ctx: Ctx) -> None:
    """``out = self.index_add(dim, index, source)``: ``source[dim]`` runs along ``index``."""
    x = ctx.axes(node.args[0])
    if x is None:
        return
    ctx.same_all(x, ctx.out(node))
    dim = _dim(node, 1, len(x), 0)
    index = ctx.axes(node.args[2]) if len(node.args) > 2 else None
    source = ctx.axes(node.args[3]) if len(node.args) > 3 else None
    if source is not None and len(source) == len(x):
        ctx.same_all(_except(x, dim), _except(source, dim))
        if index:
            ctx.graph.same(source[dim], index[0])


@rule("index_put", "index_put_", "_unsafe_index_put")
def index_put(node: fx.Node, ctx: Ctx) -> None:
    """``self[indices] = values``: values broadcast over the axes after the indexed ones
    (a boolean mask indexes as many axes as it has)."""
    x = ctx.axes(node.args[0])
    if x is None:
        return
    ctx.same_all(x, ctx.out(node))
    position = end = 0
    for index in node.args[1]:
        mask = ctx.is_tensor(index) and index.meta["val"].dtype == torch.bool
        position += len(ctx.shape(index)) if mask else 1
        if index is not None:
            end = position
    values = node.args[2]
    if x[end:] and ctx.is_tensor(values):
        ctx.broadcast(values, x[end:], ctx.shape(node.args[0])[end:])


@rule("scatter", "scatter_", "scatter_add", "scatter_add_", "scatter_reduce",
      "scatter_reduce_")
def scatter(node: fx.Node, ctx: Ctx) -> None:
    """``out = self.scatter_add(dim, index, src)``: index and src run together."""
    x = ctx.axes(node.args[0])
    if x is None:
        return
    ctx.same_all(x, ctx.out(node))
    index = node.args[2] if len(node.args) > 2 else None
    src = node.args[3] if len(node.args) > 3 else None
    if ctx.is_tensor(index) and ctx.is_tensor(src):
        for a, b, sa, sb in zip(ctx.axes(index) or [], ctx.axes(src) or [],
                                ctx.shape(index), ctx.shape(src)):
            if sa == sb:
                ctx.graph.same(a, b)


@rule("nonzero", "argwhere", "masked_select", "nonzero_static")
def nonzero(node: fx.Node, ctx: Ctx) -> None:
    """A count of selected elements (finite); ``nonzero``'s second axis is the input's rank."""
    out = ctx.out(node)
    ctx.graph.seed(out[0], Strength.WEAK, "number of selected elements", node.name)
    if len(out) > 1:
        ctx.graph.seed(out[1], Strength.STRONG, "rank of the input", node.name)
