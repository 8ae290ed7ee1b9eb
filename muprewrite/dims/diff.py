"""Width evidence from a second capture at another width: diff every tensor's shape.

When both graphs have the same nodes in the same order (the usual case: the architecture
does not branch on width), every axis of every intermediate tensor is compared. Otherwise
only parameters are compared, by name, and the caller is told.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

import torch

from ..capture.export import Capture
from .align import Alignment
from .axes import Axis, as_int
from .solve import Dims

__all__ = ["base_sizes", "with_base"]


def _tensors(node: torch.fx.Node) -> list[tuple[str, torch.Tensor]]:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return [(node.name, val)]
    if isinstance(val, (list, tuple)):
        return [(f"{node.name}#{i}", v) for i, v in enumerate(val) if isinstance(v, torch.Tensor)]
    return []


def base_sizes(cap: Capture, base: Capture, alignment: Alignment | None = None
               ) -> tuple[dict[Axis, int], bool]:
    """Size at base width of every axis of ``cap`` that can be matched; and whether all could.
    ``alignment``: the node pairing of a base of another depth (see align.py)."""
    ours, theirs = list(cap.graph.nodes), list(base.graph.nodes)
    aligned = len(ours) == len(theirs) and all(
        a.op == b.op and a.target == b.target for a, b in zip(ours, theirs)
    )
    sizes: dict[Axis, int] = {}
    pairs: Iterable[tuple[torch.fx.Node, torch.fx.Node]]
    if alignment is not None:
        named = {n.name: n for n in theirs}
        pairs = [(n, named[alignment.nodes[n.name]]) for n in ours if n.name in alignment.nodes]
        aligned = True
    elif aligned:
        pairs = zip(ours, theirs)
    else:
        by_fqn = {fqn: node for node, fqn in base.params.items()}
        named = {n.name: n for n in theirs}
        pairs = ((node, named[by_fqn[fqn]]) for node in ours
                 if (fqn := cap.params.get(node.name)) in by_fqn)
    for a, b in pairs:
        for (key, ta), (_, tb) in zip(_tensors(a), _tensors(b)):
            if ta.dim() == tb.dim():
                for d in range(ta.dim()):
                    sizes[(key, d)] = as_int(tb.shape[d])
    return sizes, aligned


def with_base(dims: Dims, sizes: dict[Axis, int]) -> Dims:
    """``dims`` with every matched axis decided by the diff (each in a class of its own)."""
    classes = dict(dims.classes)
    width = dict(dims.width)
    reason = dict(dims.reason)
    fresh = max(width, default=0) + 1
    for axis, size in sizes.items():
        if axis not in classes:
            continue
        here = dims.sizes[axis]
        classes[axis] = fresh
        width[fresh] = size != here
        reason[fresh] = f"size {here} vs {size} at base width" if size != here \
            else "same size at base width"
        fresh += 1
    return Dims(MappingProxyType(classes), MappingProxyType(width), MappingProxyType(reason),
                dims.sizes, dims.notes)
