"""Contractions: linear, matmul family, einsum, convolution, embedding lookup."""

from __future__ import annotations

from torch import fx

from ..axes import Axis, Strength
from ..registry import Ctx, rule

__all__ = ["einsum_letters"]


@rule("linear")
def linear(node: fx.Node, ctx: Ctx) -> None:
    """``y[..., out] = x[..., in] @ W[out, in].T + b[out]``."""
    x, w, out = ctx.axes(node.args[0]), ctx.axes(node.args[1]), ctx.out(node)
    assert x is not None and w is not None
    bias = ctx.axes(node.args[2]) if len(node.args) > 2 else ctx.axes(node.kwargs.get("bias"))
    ctx.same_all(x[:-1], out[:-1])
    ctx.graph.same(x[-1], w[-1])
    ctx.graph.same(out[-1], w[0])
    ctx.graph.flow(w[1], w[0], node.name)
    if bias:
        ctx.graph.same(bias[-1], w[0])


def _matmul(ctx: Ctx, a: fx.Node, b: fx.Node, out: list[Axis]) -> None:
    """numpy matmul semantics, including 1-D operands and broadcast batch axes."""
    xa, xb = ctx.axes(a), ctx.axes(b)
    assert xa is not None and xb is not None
    sa, sb = ctx.shape(a), ctx.shape(b)
    if len(xa) == 1 and len(xb) == 1:
        ctx.graph.same(xa[0], xb[0])
        return
    if len(xa) == 1:
        ctx.graph.same(xa[0], xb[-2])
        ctx.same_all(xb[:-2] + [xb[-1]], out)
        return
    if len(xb) == 1:
        ctx.graph.same(xa[-1], xb[0])
        ctx.same_all(xa[:-1], out)
        return
    ctx.graph.same(xa[-1], xb[-2])
    ctx.graph.same(xa[-2], out[-2])
    ctx.graph.same(xb[-1], out[-1])
    if ctx.is_state(b):
        ctx.graph.flow(xb[-2], xb[-1], out[0][0])
    if ctx.is_state(a):
        ctx.graph.flow(xa[-1], xa[-2], out[0][0])
    for axes, shape in ((xa, sa), (xb, sb)):
        batch = axes[:-2]
        for i in range(1, len(batch) + 1):
            if len(out) - 2 - i >= 0 and shape[-2 - i] != 1:
                ctx.graph.same(batch[-i], out[-2 - i])


@rule("matmul", "mm", "bmm", "mv", "dot", "vdot")
def matmul(node: fx.Node, ctx: Ctx) -> None:
    _matmul(ctx, node.args[0], node.args[1], ctx.out(node))


@rule("addmm", "baddbmm", "addbmm", "addmv")
def addmm(node: fx.Node, ctx: Ctx) -> None:
    """``addmm(bias, a, b)``: transformers' GPT-2 Conv1D is ``addmm(b, x, W[in, out])``."""
    out = ctx.out(node)
    _matmul(ctx, node.args[1], node.args[2], out)
    ctx.broadcast(node.args[0], out, ctx.out_shape(node))


@rule("outer", "ger")
def outer(node: fx.Node, ctx: Ctx) -> None:
    a, b, out = ctx.axes(node.args[0]), ctx.axes(node.args[1]), ctx.out(node)
    assert a is not None and b is not None
    ctx.graph.same(a[0], out[0])
    ctx.graph.same(b[0], out[1])


def einsum_letters(equation: str, ndims: list[int]) -> tuple[list[list[str]], list[str]]:
    """Per-operand axis labels and output labels; ``...`` becomes ``.0 .1 ...`` (right-aligned)."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    widest = max((n - (len(t) - 3) for t, n in zip(terms, ndims) if "..." in t), default=0)

    def labels(term: str, n: int | None) -> list[str]:
        if "..." not in term:
            return list(term)
        head, tail = term.split("...")
        k = (n - len(head) - len(tail)) if n is not None else widest
        return list(head) + [f".{widest - k + i}" for i in range(k)] + list(tail)

    ops = [labels(t, n) for t, n in zip(terms, ndims)]
    if not _ and not rhs:
        seen = [c for t in ops for c in t]
        rhs_labels = [f".{i}" for i in range(widest)] + sorted(
            c for c in set(seen) if not c.startswith(".") and seen.count(c) == 1
        )
    else:
        rhs_labels = labels(rhs, None)
    return ops, rhs_labels


@rule("einsum")
def einsum(node: fx.Node, ctx: Ctx) -> None:
    operands = [t for t in node.args[1] if ctx.is_tensor(t)]
    ops, out_labels = einsum_letters(node.args[0], [len(ctx.shape(t)) for t in operands])
    by_label: dict[str, list[tuple[Axis, int]]] = {}
    for t, labels in zip(operands, ops):
        for axis, size, label in zip(ctx.axes(t) or [], ctx.shape(t), labels):
            by_label.setdefault(label, []).append((axis, size))
    for axis, size, label in zip(ctx.out(node), ctx.out_shape(node), out_labels):
        by_label.setdefault(label, []).append((axis, size))
    for members in by_label.values():
        real = [a for a, s in members if s != 1]
        for a in real[1:]:
            ctx.graph.same(real[0], a)


@rule("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
      "conv_transpose3d", "_convolution")
def conv(node: fx.Node, ctx: Ctx) -> None:
    """``x[N, Cin, *S]`` with ``W[Cout, Cin/groups, *K]`` (transposed: ``W[Cin, Cout/groups]``)."""
    x, w, out = ctx.axes(node.args[0]), ctx.axes(node.args[1]), ctx.out(node)
    assert x is not None and w is not None
    name = str(node.target)
    transposed = "transpose" in name or (
        name.startswith("aten.convolution") and bool(node.args[6])
    )
    groups = _groups(node)
    bias = ctx.axes(node.args[2]) if len(node.args) > 2 else None
    w_in, w_out = (0, 1) if transposed else (1, 0)
    ctx.graph.same(x[0], out[0])
    ctx.same_all(x[2:], out[2:])  # spatial extents keep their status (strides are constants)
    for axis in w[2:]:
        ctx.graph.seed(axis, Strength.STRONG, "convolution kernel extent", node.name)
    if groups == 1:
        ctx.graph.same(x[1], w[w_in])
        ctx.graph.same(out[1], w[w_out])
        ctx.graph.flow(w[w_in], w[w_out], node.name)
        if any(k > 1 for k in ctx.shape(node.args[1])[2:]):  # a spatial (not 1x1) conv
            ctx.graph.maps_through(w[w_in], w[w_out], node.name)
    elif ctx.shape(node.args[1])[w_in if not transposed else w_out] == 1:  # depthwise
        ctx.graph.same(x[1], out[1])
        ctx.graph.same(out[1], w[w_out] if not transposed else w[w_in])
    elif not transposed:  # W[Cout, Cin / groups]: Cin = groups x W[1]
        ctx.graph.same(out[1], w[0])
        ctx.graph.compose(x[1], [ctx.graph.phantom(node.name), w[1]], "groups", node.name)
    else:  # W[Cin, Cout / groups]: Cout = groups x W[1]
        ctx.graph.same(x[1], w[0])
        ctx.graph.compose(out[1], [ctx.graph.phantom(node.name), w[1]], "groups", node.name)
    if bias:
        ctx.graph.same(bias[0], out[1])


def _groups(node: fx.Node) -> int:
    name = str(node.target)
    if name.startswith("aten.convolution") or name.startswith("aten._convolution"):
        return int(node.args[8]) if len(node.args) > 8 else 1
    position = 7 if "transpose" in name else 6
    if len(node.args) > position:
        return int(node.args[position])
    return int(node.kwargs.get("groups", 1))


@rule("embedding", "embedding_bag", "_embedding_bag")
def embedding(node: fx.Node, ctx: Ctx) -> None:
    """``out[..., D] = W[idx, D]``: the table's rows are addressed by data (finite)."""
    w, idx = ctx.axes(node.args[0]), ctx.axes(node.args[1])
    assert w is not None and idx is not None
    out = ctx.out(node) if ctx.is_tensor(node) else ctx.out(node, 0)
    ctx.graph.same(out[-1], w[1])
    if str(node.target).startswith("aten.embedding."):
        ctx.same_all(idx, out[:-1])
    ctx.graph.seed(w[0], Strength.STRONG, "embedding table rows (indexed by data)", node.name)
