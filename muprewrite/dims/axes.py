"""The dimension graph: nodes are tensor axes, edges say "same size by construction".

An axis is named ``(tensor, dim)`` where ``tensor`` is a graph node name (or
``"name#i"`` for the i-th tensor of a node that returns a list, e.g. ``chunk``). Besides
equality edges the graph records:

- *compositions*: an axis whose size is built from other axes (a reshape merging
  ``(heads, d_head)``, a ``cat`` along an axis, a slice): the whole grows with width iff
  some part does;
- *seeds*: axes known to be finite, with a strength and a reason (model input, constant, ...);
- *reads*: a table axis indexed along another axis (``pos_embed[:, :T]``): if the index
  axis is finite, so is (weakly) the table;
- *state axes*: the axes of parameters and buffers.

Op rules (``muprewrite.dims.rules``) fill it in; ``muprewrite.dims.solve`` decides.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

__all__ = ["Axis", "Strength", "Seed", "Compose", "AxisGraph", "as_int"]

Axis = tuple[str, int]


class Strength(enum.IntEnum):
    """How sure a finiteness seed is; stronger evidence wins a conflict."""

    WEAK = 1  # constants built in forward (arange, zeros(n)), tables read along data axes
    OUTPUT = 2  # model outputs (a backbone may return hidden states)
    STRONG = 3  # model inputs, size-1 axes, kernel spatial axes, embedding table rows


@dataclass(frozen=True)
class Seed:
    axis: Axis
    strength: Strength
    reason: str
    node: str


@dataclass(frozen=True)
class Compose:
    whole: Axis
    parts: tuple[Axis, ...]
    kind: str  # "view" | "cat" | "split" | "slice" | "groups"
    node: str


@dataclass
class AxisGraph:
    """Mutable while rules run; read-only afterwards."""

    equal: nx.Graph = field(default_factory=nx.Graph)
    sizes: dict[Axis, int] = field(default_factory=dict)
    composes: list[Compose] = field(default_factory=list)
    seeds: list[Seed] = field(default_factory=list)
    reads: list[tuple[Axis, Axis, str]] = field(default_factory=list)
    state: dict[Axis, str] = field(default_factory=dict)  # axis -> parameter/buffer name
    maps: list[tuple[Axis, Axis, str]] = field(default_factory=list)  # spatial conv (in, out)
    flows: list[tuple[Axis, Axis, str]] = field(default_factory=list)  # weight (fan_in, fan_out)
    unhandled: dict[str, list[str]] = field(default_factory=dict)  # op -> node names
    _phantoms: int = 0

    # -- tensors -------------------------------------------------------------------
    def add_tensor(self, key: str, shape: Sequence[Any]) -> None:
        for dim, size in enumerate(shape):
            axis = (key, dim)
            self.equal.add_node(axis)
            self.sizes[axis] = as_int(size)

    def phantom(self, node: str) -> Axis:
        """A fresh axis standing for a size that no tensor carries (a slice's remainder)."""
        self._phantoms += 1
        axis = (f"{node}~{self._phantoms}", 0)
        self.equal.add_node(axis)
        self.sizes[axis] = -1
        return axis

    # -- relations -----------------------------------------------------------------
    def same(self, a: Axis, b: Axis) -> None:
        if a != b:
            self.equal.add_edge(a, b)

    def compose(self, whole: Axis, parts: Sequence[Axis], kind: str, node: str) -> None:
        parts = tuple(parts)
        if len(parts) == 1:
            self.same(whole, parts[0])
        else:
            self.composes.append(Compose(whole, parts, kind, node))

    def seed(self, axis: Axis, strength: Strength, reason: str, node: str) -> None:
        self.seeds.append(Seed(axis, strength, reason, node))

    def read(self, table: Axis, index: Axis, node: str) -> None:
        self.reads.append((table, index, node))

    def maps_through(self, fan_in: Axis, fan_out: Axis, node: str) -> None:
        """Record a weight mapping axis ``fan_in`` to ``fan_out`` (linear, conv)."""
        self.maps.append((fan_in, fan_out, node))

    def flow(self, fan_in: Axis, fan_out: Axis, node: str) -> None:
        """Record that a parameter maps activations along ``fan_in`` to ``fan_out``."""
        self.flows.append((fan_in, fan_out, node))

    def mark_unhandled(self, op: str, node: str) -> None:
        self.unhandled.setdefault(op, []).append(node)


def as_int(size: Any) -> int:
    """A size as an int: a symbolic size's hint; -1 for a data-dependent (unbacked) one."""
    if isinstance(size, int):
        return size
    if isinstance(size, torch.SymInt):
        hint = size.node.hint
        return int(hint) if hint is not None else -1
    return int(size)
