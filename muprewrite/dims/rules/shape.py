"""Shape ops: views, permutations, slicing, concatenation and splitting."""

from __future__ import annotations

import torch
from torch import fx

from ..axes import Axis, Strength
from ..registry import Ctx, rule

__all__ = ["view_groups"]


def view_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of axes of ``a`` and ``b`` with equal products (size-1 axes stand alone).

    ``(2, 9, 96) -> (2, 9, 3, 2, 16)`` gives ``[([0], [0]), ([1], [1]), ([2], [2, 3, 4])]``.
    Returns None when the shapes do not factor into each other.
    """
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        one_a = i < len(a) and a[i] == 1
        one_b = j < len(b) and b[j] == 1
        if one_a and one_b:
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        if one_a or one_b:
            i, j = i + one_a, j + one_b
            continue
        if i >= len(a) or j >= len(b):
            return None
        gi, gj, pa, pb = [i], [j], a[i], b[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                gi.append(i)
                pa, i = pa * a[i], i + 1
            elif pb < pa and j < len(b):
                gj.append(j)
                pb, j = pb * b[j], j + 1
            else:
                return None
        groups.append((gi, gj))
    return groups


@rule("view", "reshape", "_unsafe_view", "view_copy", "flatten", "unflatten", "squeeze",
      "unsqueeze", "squeeze_copy", "unsqueeze_copy", "_reshape_alias", "alias_copy")
def view(node: fx.Node, ctx: Ctx) -> None:
    src = node.args[0]
    if not ctx.is_tensor(src) or not ctx.is_tensor(node):
        return
    if len(node.args) > 1 and isinstance(node.args[1], torch.dtype):
        return  # a dtype reinterpretation, not a shape change
    x, out = ctx.axes(src), ctx.out(node)
    assert x is not None
    groups = view_groups(ctx.shape(src), ctx.out_shape(node))
    if groups is None:
        ctx.graph.mark_unhandled("view (irregular)", node.name)
        return
    for gi, gj in groups:
        ins = [x[i] for i in gi if ctx.shape(src)[i] != 1]
        outs = [out[j] for j in gj if ctx.out_shape(node)[j] != 1]
        if len(gi) == 1 and len(gj) == 1:
            ctx.graph.same(x[gi[0]], out[gj[0]])
        elif len(ins) == 1:
            ctx.graph.compose(ins[0], outs, "view", node.name)
        elif len(outs) == 1:
            ctx.graph.compose(outs[0], ins, "view", node.name)
        elif ins and outs:
            whole = ctx.graph.phantom(node.name)
            ctx.graph.compose(whole, ins, "view", node.name)
            ctx.graph.compose(whole, outs, "view", node.name)


@rule("permute", "permute_copy")
def permute(node: fx.Node, ctx: Ctx) -> None:
    x, out = ctx.axes(node.args[0]), ctx.out(node)
    assert x is not None
    for i, d in enumerate(node.args[1]):
        ctx.graph.same(out[i], x[d % len(x)])


@rule("transpose", "swapaxes", "swapdims", "t", "transpose_copy", "numpy_T", "mT")
def transpose(node: fx.Node, ctx: Ctx) -> None:
    x, out = ctx.axes(node.args[0]), ctx.out(node)
    assert x is not None
    n = len(x)
    if len(node.args) >= 3:
        a, b = node.args[1] % n, node.args[2] % n
    else:
        a, b = (n - 2, n - 1) if n >= 2 else (0, 0)
    order = list(range(n))
    order[a], order[b] = order[b], order[a]
    for i, d in enumerate(order):
        ctx.graph.same(out[i], x[d])


@rule("movedim", "moveaxis")
def movedim(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    assert x is not None
    src, dst = node.args[1], node.args[2]
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    n = len(x)
    placed: dict[int, int] = {int(d) % n: int(s) % n for s, d in zip(src, dst)}
    rest = iter(i for i in range(n) if i not in placed.values())
    order = [placed[i] if i in placed else next(rest) for i in range(n)]
    ctx.same_all([x[o] for o in order], ctx.out(node))


@rule("expand", "expand_copy", "broadcast_to", "repeat", "tile", "constant_pad_nd", "pad",
      "reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d",
      "upsample_nearest1d", "upsample_nearest2d", "upsample_bilinear2d", "upsample_bicubic2d",
      "_upsample_nearest_exact2d", "upsample_nearest3d", "repeat_interleave")
def right_aligned(node: fx.Node, ctx: Ctx) -> None:
    """Output axis -i follows input axis -i (a size-1 axis being expanded does not)."""
    x = ctx.axes(node.args[0])
    if x is None or not ctx.is_tensor(node):
        return
    shape, out = ctx.shape(node.args[0]), ctx.out(node)
    expands = str(node.target).startswith(("aten.expand", "aten.broadcast_to"))
    for i in range(1, min(len(x), len(out)) + 1):
        if expands and shape[-i] == 1 and ctx.out_shape(node)[-i] != 1:
            continue
        ctx.graph.same(x[-i], out[-i])


@rule("select", "select_copy")
def select(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    assert x is not None
    dim = node.args[1] % len(x)
    ctx.same_all([a for d, a in enumerate(x) if d != dim], ctx.out(node))


@rule("slice", "slice_copy", "narrow")
def slice_(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    assert x is not None
    dim = (node.args[1] if len(node.args) > 1 else 0) % len(x)
    out = ctx.out(node)
    for d, (a, b) in enumerate(zip(x, out)):
        if d != dim or ctx.shape(node.args[0])[d] == ctx.out_shape(node)[d]:
            ctx.graph.same(a, b)
    if ctx.shape(node.args[0])[dim] != ctx.out_shape(node)[dim]:
        ctx.graph.compose(x[dim], [out[dim], ctx.graph.phantom(node.name)], "slice", node.name)
        ctx.graph.read(x[dim], out[dim], node.name)


@rule("cat", "concat", "concatenate")
def cat(node: fx.Node, ctx: Ctx) -> None:
    parts = [t for t in node.args[0] if ctx.is_tensor(t) and ctx.shape(t) != (0,)]
    out = ctx.out(node)
    dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(out)
    for t in parts:
        axes = ctx.axes(t)
        assert axes is not None
        ctx.same_all([a for d, a in enumerate(axes) if d != dim],
                     [o for d, o in enumerate(out) if d != dim])
    ctx.graph.compose(out[dim], [ctx.axes(t)[dim] for t in parts], "cat", node.name)  # type: ignore[index]


@rule("stack")
def stack(node: fx.Node, ctx: Ctx) -> None:
    out = ctx.out(node)
    dim = (node.args[1] if len(node.args) > 1 else 0) % len(out)
    rest = [o for d, o in enumerate(out) if d != dim]
    for t in node.args[0]:
        axes = ctx.axes(t)
        if axes is not None:
            ctx.same_all(axes, rest)
    ctx.graph.seed(out[dim], Strength.STRONG, "number of stacked tensors", node.name)


def _split_dim(node: fx.Node, ndim: int) -> int:
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    return int(dim) % ndim


@rule("chunk", "split", "split_with_sizes", "unsafe_split", "unsafe_chunk", "tensor_split",
      "split_copy", "split_with_sizes_copy", "unsafe_split_with_sizes")
def split(node: fx.Node, ctx: Ctx) -> None:
    """Equal pieces (chunk, split by one size) keep the axis's status; sized pieces compose it."""
    x = ctx.axes(node.args[0])
    assert x is not None
    dim = _split_dim(node, len(x))
    pieces = [ctx.out(node, i) for i in range(len(node.meta["val"]))]
    for piece in pieces:
        ctx.same_all([a for d, a in enumerate(x) if d != dim],
                     [p for d, p in enumerate(piece) if d != dim])
    if isinstance(node.args[1], (list, tuple)):
        ctx.graph.compose(x[dim], [p[dim] for p in pieces], "split", node.name)
    else:
        for piece in pieces:
            ctx.graph.same(x[dim], piece[dim])


@rule("unbind", "unbind_copy")
def unbind(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    assert x is not None
    dim = (node.args[1] if len(node.args) > 1 else 0) % len(x)
    for i in range(len(node.meta["val"])):
        ctx.same_all([a for d, a in enumerate(x) if d != dim], ctx.out(node, i))
    ctx.graph.seed(x[dim], Strength.STRONG, "number of unbound tensors", node.name)


@rule("getitem")
def getitem(node: fx.Node, ctx: Ctx) -> None:
    src, index = node.args[0], node.args[1]
    val = src.meta.get("val") if isinstance(src, fx.Node) else None
    if isinstance(val, (list, tuple)) and ctx.is_tensor(node) and isinstance(index, int):
        ctx.same_all(ctx.out(src, index), ctx.out(node))


def _read_along(node: fx.Node, ctx: Ctx, table: Axis, index: Axis | None) -> None:
    ctx.graph.seed(table, Strength.WEAK, f"axis indexed by data in {node.target}", node.name)


@rule("index_select")
def index_select(node: fx.Node, ctx: Ctx) -> None:
    x, idx = ctx.axes(node.args[0]), ctx.axes(node.args[2])
    assert x is not None and idx is not None
    dim = node.args[1] % len(x)
    out = ctx.out(node)
    ctx.same_all([a for d, a in enumerate(x) if d != dim], [o for d, o in enumerate(out) if d != dim])
    ctx.graph.same(out[dim], idx[0])
    _read_along(node, ctx, x[dim], idx[0])


@rule("index")
def index(node: fx.Node, ctx: Ctx) -> None:
    """``x[..., i, j, ...]`` with index tensors: indexed axes are read by data (advanced indexing).

    The index tensors broadcast together; their axes land where the first index stood when
    the indexed axes are adjacent, else in front (numpy rules).
    """
    x = ctx.axes(node.args[0])
    assert x is not None
    indices = list(node.args[1])
    positions = [p for p, t in enumerate(indices) if t is not None]
    if not positions or not all(ctx.is_tensor(indices[p]) for p in positions):
        ctx.graph.mark_unhandled("index (non-tensor index)", node.name)
        return
    out, out_shape = ctx.out(node), ctx.out_shape(node)
    rank = max(len(ctx.shape(indices[p])) for p in positions)
    first, last = positions[0], positions[-1]
    if positions == list(range(first, last + 1)):  # adjacent: result axes replace them in place
        ctx.same_all(x[:first], out[:first])
        ctx.same_all(x[last + 1:], out[first + rank:])
        start = first
    else:  # separated: result axes go first
        ctx.same_all([a for d, a in enumerate(x) if d not in positions], out[rank:])
        start = 0
    for p in positions:
        ctx.broadcast(indices[p], out[start:start + rank], out_shape[start:start + rank])
        _read_along(node, ctx, x[p], None)


@rule("view_as_complex")
def view_as_complex(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    assert x is not None
    ctx.same_all(x[:-1], ctx.out(node))


@rule("view_as_real")
def view_as_real(node: fx.Node, ctx: Ctx) -> None:
    x = ctx.axes(node.args[0])
    assert x is not None
    ctx.same_all(x, ctx.out(node)[:-1])


@rule("meshgrid")
def meshgrid(node: fx.Node, ctx: Ctx) -> None:
    """``meshgrid(a, b, ...)``: output axis i is input i (indexing='xy' swaps the first two)."""
    inputs = [ctx.axes(t) for t in node.args[0]]
    indexing = node.kwargs.get("indexing", node.args[1] if len(node.args) > 1 else "ij")
    order = list(range(len(inputs)))
    if indexing == "xy" and len(order) >= 2:
        order[0], order[1] = order[1], order[0]
    for i in range(len(node.meta["val"])):
        out = ctx.out(node, i)
        for d, src in enumerate(order):
            axes = inputs[src]
            if axes:
                ctx.graph.same(out[d], axes[0])
