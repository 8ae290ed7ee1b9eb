"""Elementwise ops with numpy broadcasting, and shape-preserving ops (softmax, dropout)."""

from __future__ import annotations

from torch import fx

from ..registry import Ctx, rule

__all__ = ["pointwise", "broadcast_compatible"]

_POINTWISE = (
    "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "remainder", "pow",
    "where", "masked_fill", "maximum", "minimum", "clamp", "clamp_min", "clamp_max", "clip",
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "exp", "exp2", "expm1", "log",
    "log1p", "log2", "neg", "rsqrt", "sqrt", "abs", "sin", "cos", "erf", "softplus", "mish",
    "leaky_relu", "hardtanh", "hardswish", "hardsigmoid", "elu", "selu", "celu", "glu_ish",
    "square", "reciprocal", "sign", "floor", "ceil", "round", "trunc", "lerp", "addcmul",
    "addcdiv", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not",
    "bitwise_and", "bitwise_or", "bitwise_not", "isnan", "isinf", "nan_to_num", "polar",
    "complex", "atan2", "logaddexp", "fmod", "copysign", "heaviside", "xlogy",
    "softmax", "_softmax", "log_softmax", "_log_softmax", "cumsum", "cumprod", "logcumsumexp",
    "dropout", "native_dropout", "feature_dropout", "alpha_dropout", "_to_copy", "to",
    "type_as", "contiguous", "clone", "detach", "alias", "lift_fresh_copy", "_assert_tensor_metadata",
    "tril", "triu", "roll", "flip", "zeros_like", "ones_like", "empty_like", "full_like",
    "rand_like", "randn_like", "bernoulli", "fill", "copy", "masked_scatter", "real", "imag",
    "conj", "conj_physical", "positive", "float_power", "_conj", "resolve_conj", "resolve_neg",
)


def broadcast_compatible(node: fx.Node, ctx: Ctx) -> bool:
    """True if every tensor argument broadcasts to the (single tensor) output."""
    if not ctx.is_tensor(node):
        return False
    out = ctx.out_shape(node)
    for arg in _tensor_args(node):
        shape = ctx.shape(arg)
        if len(shape) > len(out):
            return False
        for i in range(1, len(shape) + 1):
            if shape[-i] not in (1, out[-i]):
                return False
    return True


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    for arg in list(node.args) + list(node.kwargs.values()):
        items = arg if isinstance(arg, (list, tuple)) else [arg]
        found.extend(a for a in items if Ctx.is_tensor(a))
    return found


@rule(*_POINTWISE)
def pointwise(node: fx.Node, ctx: Ctx) -> None:
    """Join each tensor argument's axes with the output's, right-aligned, where sizes agree."""
    if not ctx.is_tensor(node):
        val = node.meta.get("val")
        if isinstance(val, (list, tuple)) and val:  # native_dropout -> (out, mask)
            for i in range(len(val)):
                out = ctx.out(node, i)
                for arg in _tensor_args(node):
                    ctx.broadcast(arg, out, ctx.out_shape(node, i))
        return
    out, shape = ctx.out(node), ctx.out_shape(node)
    for arg in _tensor_args(node):
        ctx.broadcast(arg, out, shape)
