"""Build the dimension graph of a capture: one rule per op, plus seeds and state axes."""

from __future__ import annotations

import torch

from ..capture.export import Capture
from .axes import AxisGraph, Strength
from .registry import Ctx, lookup, op_name
from .rules import elementwise  # registers every rule family on import

__all__ = ["build_axis_graph"]

_NO_TENSOR_OPS = {"sym_size", "sym_numel", "sym_stride", "item", "_local_scalar_dense",
                  "_assert_scalar", "_assert_async", "sym_constrain_range_for_size",
                  "_assert_tensor_metadata", "sym_constrain_range"}


def build_axis_graph(cap: Capture) -> AxisGraph:
    graph = AxisGraph()
    ctx = Ctx(graph)
    for node in cap.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            graph.add_tensor(node.name, val.shape)
        elif isinstance(val, (list, tuple)):
            for i, item in enumerate(val):
                if isinstance(item, torch.Tensor):
                    graph.add_tensor(f"{node.name}#{i}", item.shape)
    for node in cap.graph.nodes:
        if node.op == "placeholder":
            _placeholder(node, cap, graph, ctx)
        elif node.op == "call_function":
            _call(node, ctx)
        elif node.op == "output":
            for out in node.args[0]:
                if Ctx.is_tensor(out) and out.name in cap.user_outputs:
                    for axis in ctx.out(out):
                        graph.seed(axis, Strength.OUTPUT, f"model output `{out.name}`", out.name)
    for axis, size in graph.sizes.items():
        if size == 1:
            graph.seed(axis, Strength.STRONG, "size 1", axis[0])
    return graph


def _placeholder(node: torch.fx.Node, cap: Capture, graph: AxisGraph, ctx: Ctx) -> None:
    axes = ctx.axes(node) or []
    if node.name in cap.params or node.name in cap.buffers:
        owner = cap.params.get(node.name) or cap.buffers[node.name]
        for axis in axes:
            graph.state[axis] = owner
    elif node.name in cap.constants:
        for axis in axes:
            graph.seed(axis, Strength.WEAK, "tensor constant", node.name)
    else:
        for axis in axes:
            graph.seed(axis, Strength.STRONG, f"model input `{node.name}`", node.name)


def _call(node: torch.fx.Node, ctx: Ctx) -> None:
    fn = lookup(node)
    if fn is not None:
        fn(node, ctx)
        return
    name = op_name(node)
    if name in _NO_TENSOR_OPS or node.meta.get("val") is None:
        return
    if elementwise.broadcast_compatible(node, ctx):
        elementwise.pointwise(node, ctx)
        ctx.graph.mark_unhandled(f"{name} (treated as elementwise)", node.name)
    else:
        ctx.graph.mark_unhandled(name, node.name)
