"""Pair the nodes of two captures of one architecture that differ in depth (and width).

A model built with L blocks and its base with L_base blocks capture as the same program with
the blocks' ops repeated a different number of times (``stem + block x L + head``; U-ViT has
two such regions, its in- and out-blocks). The two op sequences are walked side by side. Each
op's signature is its target, the ranks of its outputs, and the parameters it reads with
layer indices collapsed (``blocks.*.ln1.weight``), so a block's ``layer_norm`` differs from
the head's. Where the two part, the longer one repeats the unit just before: its extra
repeats are paired with that unit's partners, and the walk goes on. When a head begins like a
block, the walk may step back a few ops. If the walk fails, the two are not one architecture
at two depths.

Parameters and buffers are paired through their uses: the base parameter that a paired node
reads at the same argument position. The captures are left unaligned when any of these
holds:
- a used parameter of the model finds no partner;
- a base parameter read by a paired node has no partner (the base has a bias the model
  lacks);
- the user inputs differ in number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import fx

from ..capture.export import Capture

__all__ = ["Alignment", "align_depths", "layer_pattern"]


@dataclass(frozen=True)
class Alignment:
    """``nodes``: model node name -> base node name, for every node of the model graph;
    ``params`` / ``buffers``: model canonical name -> base name."""

    nodes: Mapping[str, str]
    params: Mapping[str, str]
    buffers: Mapping[str, str]


def _signature(node: fx.Node) -> tuple:
    val = node.meta.get("val")
    vals = val if isinstance(val, (list, tuple)) else (val,)
    ranks = tuple(v.dim() if isinstance(v, torch.Tensor) else None for v in vals)
    return node.op, node.target, ranks


_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


_BLOCK = re.compile(r"^(.*?(?:^|\.)\d+)\.(.*)$")


def layer_pattern(name: str) -> str:
    """``blocks.7.attn.qkv.weight`` -> ``blocks.*.attn.qkv.weight``."""
    return _INDEX.sub("*", name)


def _kinds(names: Mapping[str, str]) -> dict[str, int]:
    """Parameter name -> a tag of the block holding it: the set of parameter names in that
    block, layer index removed. Blocks of two kinds in one stack (MMDiT's last block has no
    context MLP) then read differently, so neither pairs with the other."""
    contents: dict[str, set[str]] = {}
    for name in names.values():
        found = _BLOCK.match(name)
        if found:
            contents.setdefault(found[1], set()).add(found[2])
    return {name: hash(frozenset(contents[found[1]])) if (found := _BLOCK.match(name)) else 0
            for name in names.values()}


def _anchored(nodes: list[fx.Node], names: Mapping[str, str]) -> list[tuple]:
    """Signatures that also name the parameters and buffers a node reads, with layer indices
    collapsed (``blocks.*.ln1.weight``) and the kind of block they sit in: the head's
    ``layer_norm`` (``ln_f``) then differs from a block's, and a block from one of another
    kind, so a walk cannot slide from one into the other."""
    kinds = _kinds(names)
    out = []
    for node in nodes:
        reads = tuple((layer_pattern(names[x.name]), kinds[names[x.name]])
                      for x in _flat(node) if isinstance(x, fx.Node) and x.name in names)
        out.append((*_signature(node), reads))
    return out


def _repeats(seq: list, at: int, limit: int = 4096) -> Iterator[tuple[int, int]]:
    """Every (d, k), smallest d first: seq[at:at + k*d] repeats seq[at - d:at] k >= 1 times."""
    if at >= len(seq):
        return
    for d in range(1, min(at, limit) + 1):
        if seq[at - d] != seq[at]:
            continue
        k = 0
        while seq[at + k * d: at + (k + 1) * d] == seq[at - d: at]:
            k += 1
        if k:
            yield d, k


def _resumes(a: list, i: int, b: list, j: int) -> bool:
    """Whether the walk can go on from a[i], b[j]: both ended, or the same op next."""
    return (i == len(a) and j == len(b)) or (i < len(a) and j < len(b) and a[i] == b[j])


def _walk(a: list, b: list, back: int = 64) -> dict[int, int] | None:
    """Pair two sequences that differ by whole repeats of units (several repeated regions,
    as U-ViT's in- and out-blocks): where they part, the longer one repeats the unit just
    before; its extra repeats pair with that unit's partners. ``back``: how far the walk may
    step back when the two parted a few nodes after the repeats began."""
    pairs: dict[int, int] = {}
    i = j = 0
    while i < len(a) or j < len(b):
        if i < len(a) and j < len(b) and a[i] == b[j]:
            pairs[i] = j
            i, j = i + 1, j + 1
            continue
        moved = False
        for k in range(0, min(back, i, j) + 1):
            ii, jj = i - k, j - k
            for d, reps in _repeats(a, ii):  # the model has more blocks here
                if ii + d * reps > i and _resumes(a, ii + d * reps, b, jj):
                    for t in range(d * reps):
                        pairs[ii + t] = pairs[ii - d + t % d]
                    i, j, moved = ii + d * reps, jj, True
                    break
            if moved:
                break
            for d, reps in _repeats(b, jj):  # the base has more blocks here
                if jj + d * reps > j and _resumes(a, ii, b, jj + d * reps):
                    i, j, moved = ii, jj + d * reps, True
                    break
            if moved:
                break
        if not moved:
            return None
    return pairs


def _by_use(ours: list[fx.Node], theirs: list[fx.Node], pairs: dict[int, int],
            names: Mapping[str, str], base_names: Mapping[str, str]) -> dict[str, str] | None:
    """Model placeholder name (in ``names``) -> base one, read off paired uses."""
    index = {n.name: i for i, n in enumerate(ours)}
    found: dict[str, str] = {}
    for node in ours:
        if node.name not in index or index[node.name] not in pairs:
            continue
        partner = theirs[pairs[index[node.name]]]
        for x, y in zip(_flat(node), _flat(partner)):
            if isinstance(x, fx.Node) and x.name in names:
                if not isinstance(y, fx.Node) or y.name not in base_names:
                    return None
                if found.setdefault(names[x.name], base_names[y.name]) != base_names[y.name]:
                    # a parameter read in two places pairs with one base parameter each time
                    # only when the base shares it too; otherwise any block's partner will do
                    continue
    return found


def _unpaired(nodes: list[fx.Node], names: Mapping[str, str], images: set[str],
              paired: set[str]) -> bool:
    """Whether a base parameter no model parameter pairs with is read by a paired node (the
    base has a parameter the model lacks: a bias, a gate), not only by the blocks the model
    does not have."""
    return any(n.op == "placeholder" and names.get(n.name) not in (None, *images)
               and any(u.name in paired for u in n.users) for n in nodes)


def _flat(node: fx.Node) -> list:
    out: list = []
    fx.node.map_aggregate((node.args, node.kwargs), out.append)
    return out


def align_depths(cap: Capture, base: Capture) -> Alignment | None:
    """The pairing of ``cap``'s nodes with ``base``'s, or None if the two captures are not one
    architecture at two depths (see the module docstring)."""
    ours_all, theirs_all = list(cap.graph.nodes), list(base.graph.nodes)
    ours = [n for n in ours_all if n.op not in ("placeholder", "output")]
    theirs = [n for n in theirs_all if n.op not in ("placeholder", "output")]
    pairs = _walk(_anchored(ours, {**cap.params, **cap.buffers}),
                  _anchored(theirs, {**base.params, **base.buffers}))
    if pairs is None:
        return None
    params = _by_use(ours, theirs, pairs, cap.params, base.params)
    buffers = _by_use(ours, theirs, pairs, cap.buffers, base.buffers)
    if params is None or buffers is None:
        return None
    needed = {cap.params[n.name] for n in ours_all
              if n.op == "placeholder" and n.name in cap.params and n.users}
    if needed - set(params) or _unpaired(theirs_all, base.params, set(params.values()),
                                         {theirs[j].name for j in pairs.values()}):
        return None
    nodes = {ours[i].name: theirs[j].name for i, j in pairs.items()}
    ours_in = [n for n in ours_all if n.op == "placeholder" and n.name in cap.user_inputs]
    theirs_in = [n for n in theirs_all if n.op == "placeholder" and n.name in base.user_inputs]
    if len(ours_in) != len(theirs_in):
        return None
    nodes.update({x.name: y.name for x, y in zip(ours_in, theirs_in)})
    by_param = {fqn: node for node, fqn in base.params.items()}
    by_buffer = {fqn: node for node, fqn in base.buffers.items()}
    for node, fqn in cap.params.items():
        if fqn in params:
            nodes[node] = by_param[params[fqn]]
    for node, fqn in cap.buffers.items():
        if fqn in buffers:
            nodes[node] = by_buffer[buffers[fqn]]
    ours_out, theirs_out = cap.graph.output_node(), base.graph.output_node()
    nodes[ours_out.name] = theirs_out.name
    return Alignment(MappingProxyType(nodes), MappingProxyType(params),
                     MappingProxyType(buffers))
