"""Tensors made inside forward (arange, zeros, full, randn): their axes are constants.

A constant's size is a literal in the graph, so it is taken as finite — weakly: a constant
can be as wide as the model through its config (a sinusoid of width D), which only a second
capture at another width can show. The analysis reports every constant it relied on.
"""

from __future__ import annotations

from torch import fx

from ..axes import Strength
from ..registry import Ctx, rule

__all__: list[str] = []


@rule("arange", "zeros", "ones", "full", "empty", "randn", "rand", "randint", "linspace",
      "logspace", "eye", "scalar_tensor", "tensor", "new_zeros", "new_ones", "new_full",
      "new_empty", "empty_strided", "randperm", "normal")
def constant(node: fx.Node, ctx: Ctx) -> None:
    if not ctx.is_tensor(node):
        return
    for axis, size in zip(ctx.out(node), ctx.out_shape(node)):
        ctx.graph.seed(axis, Strength.WEAK, f"{node.target} of literal size {size}", node.name)
