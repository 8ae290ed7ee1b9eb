"""Registry of dimension rules, keyed by aten op name (the overload packet, e.g. ``linear``).

A rule is ``fn(node, ctx)``: it reads the node's arguments and output through ``ctx`` and
adds equalities, compositions and seeds to ``ctx.graph``. One op family per rule.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from .axes import Axis, AxisGraph, as_int

__all__ = ["Ctx", "Rule", "rule", "lookup", "op_name"]


class Ctx:
    """What a rule sees: the axis graph and helpers to name a node's axes."""

    def __init__(self, graph: AxisGraph) -> None:
        self.graph = graph

    @staticmethod
    def is_tensor(x: Any) -> bool:
        return isinstance(x, fx.Node) and isinstance(x.meta.get("val"), torch.Tensor)

    def shape(self, x: fx.Node) -> tuple[int, ...]:
        return tuple(as_int(s) for s in x.meta["val"].shape)

    def axes(self, x: Any) -> list[Axis] | None:
        """Axes of a tensor-valued argument, or None if it is not a tensor."""
        if not self.is_tensor(x):
            return None
        return [(x.name, d) for d in range(x.meta["val"].dim())]

    def out(self, node: fx.Node, index: int | None = None) -> list[Axis]:
        """Axes of the node's output (or of element ``index`` of a list output)."""
        val = node.meta["val"]
        if index is None:
            return [(node.name, d) for d in range(val.dim())]
        return [(f"{node.name}#{index}", d) for d in range(val[index].dim())]

    def out_shape(self, node: fx.Node, index: int | None = None) -> tuple[int, ...]:
        val = node.meta["val"] if index is None else node.meta["val"][index]
        return tuple(as_int(s) for s in val.shape)

    def is_state(self, x: Any) -> bool:
        """True for a parameter/buffer, or a transpose/cast of one (``W.t()``)."""
        for _ in range(3):
            if not isinstance(x, fx.Node):
                return False
            if x.op == "placeholder":
                return (x.name, 0) in self.graph.state
            if op_name(x) not in ("t", "transpose", "permute", "_to_copy", "to", "contiguous"):
                return False
            x = x.args[0]
        return False

    def same_all(self, a: list[Axis], b: list[Axis]) -> None:
        for x, y in zip(a, b):
            self.graph.same(x, y)

    def broadcast(self, src: fx.Node, dst: list[Axis], dst_shape: tuple[int, ...]) -> None:
        """Join ``src``'s axes to ``dst``'s, right-aligned, where sizes agree (numpy rules)."""
        axes = self.axes(src)
        if axes is None:
            return
        shape = self.shape(src)
        for i in range(1, min(len(axes), len(dst)) + 1):
            if shape[-i] == dst_shape[-i]:
                self.graph.same(axes[-i], dst[-i])


Rule = Callable[[fx.Node, Ctx], None]
_RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the dimension rule of the named ops."""

    def register(fn: Rule) -> Rule:
        for name in names:
            if name in _RULES:
                raise ValueError(f"two dimension rules for op {name!r}")
            _RULES[name] = fn
        return fn

    return register


def op_name(node: fx.Node) -> str:
    """``aten.linear.default`` -> ``linear``; ``operator.getitem`` -> ``getitem``."""
    target = node.target
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return str(packet.__name__)
    return getattr(target, "__name__", str(target))


def lookup(node: fx.Node) -> Rule | None:
    return _RULES.get(op_name(node))
