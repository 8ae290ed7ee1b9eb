"""Normalisation layers: gains and biases share the normalised axes of the input."""

from __future__ import annotations

from torch import fx

from ..registry import Ctx, rule

__all__: list[str] = []


def _first_out(node: fx.Node, ctx: Ctx) -> list[tuple[str, int]]:
    return ctx.out(node) if ctx.is_tensor(node) else ctx.out(node, 0)


@rule("layer_norm", "rms_norm", "native_layer_norm", "_fused_rms_norm")
def last_axes(node: fx.Node, ctx: Ctx) -> None:
    """``layer_norm(x, normalized_shape, weight, bias)``: params cover x's last axes."""
    x = ctx.axes(node.args[0])
    assert x is not None
    ctx.same_all(x, _first_out(node, ctx))
    for param in node.args[2:4]:
        axes = ctx.axes(param)
        if axes:
            ctx.same_all(axes, x[len(x) - len(axes):])


@rule("group_norm", "native_group_norm")
def channel_axis(node: fx.Node, ctx: Ctx) -> None:
    """``group_norm(x, groups, weight, bias)``: params run along the channel axis 1."""
    x = ctx.axes(node.args[0])
    assert x is not None
    ctx.same_all(x, _first_out(node, ctx))
    for param in node.args[2:4]:
        axes = ctx.axes(param)
        if axes:
            ctx.graph.same(axes[0], x[1])


@rule("batch_norm", "_native_batch_norm_legit_functional", "_native_batch_norm_legit",
      "_native_batch_norm_legit_no_training", "native_batch_norm", "instance_norm",
      "cudnn_batch_norm", "_batch_norm_with_update", "_batch_norm_no_update")
def batch_norm(node: fx.Node, ctx: Ctx) -> None:
    """Weight, bias, running mean and variance all run along channel axis 1."""
    x = ctx.axes(node.args[0])
    assert x is not None
    ctx.same_all(x, _first_out(node, ctx))
    for param in node.args[1:5]:
        axes = ctx.axes(param)
        if axes and len(axes) == 1:
            ctx.graph.same(axes[0], x[1])
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):  # (out, save_mean, save_invstd, new_mean, new_var)
        for i in range(1, len(val)):
            if val[i] is not None and val[i].dim() == 1 and val[i].shape[0] == val[0].shape[1]:
                ctx.graph.same(ctx.out(node, i)[0], x[1])
