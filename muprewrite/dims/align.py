"""Pair the nodes of two captures of one architecture that differ in depth (and width).

A model built with L blocks and its base with L_base blocks capture as the same program
``stem + block x L + head``: the same ops in the same order, the block's ops repeated. Two
such graphs are paired position by position from both ends (the common prefix and suffix of
their op sequences); where the deeper one has blocks the other lacks, a node is paired with
the node one period (the length of a block's op sequence) earlier, until it lands in the
prefix. Every pair is checked: the same op and target, and tensors of the same ranks.

Parameters and buffers are paired through their uses: the base parameter a paired node
reads at the same argument position. A parameter so paired with two different base
parameters of different shapes, or with none, leaves the captures unaligned.

>>> # model and base of another depth:
>>> # pairs = align_by_period(cap, base_cap); pairs.params["blocks.7.fc.weight"] -> "blocks.1.fc.weight"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import fx

from ..capture import Capture

__all__ = ["Alignment", "align_by_period"]


@dataclass(frozen=True)
class Alignment:
    """``nodes``: model node name -> base node name, for every node of the model graph;
    ``params`` / ``buffers``: model canonical name -> base name; ``period``: ops per repeated
    unit (0 when the two graphs have the same length)."""

    nodes: Mapping[str, str]
    params: Mapping[str, str]
    buffers: Mapping[str, str]
    period: int


def _signature(node: fx.Node) -> tuple:
    val = node.meta.get("val")
    vals = val if isinstance(val, (list, tuple)) else (val,)
    ranks = tuple(v.dim() if isinstance(v, torch.Tensor) else None for v in vals)
    return node.op, node.target, ranks


def _prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _period(sigs: list[tuple], start: int, stop: int, total: int) -> int | None:
    """The smallest d dividing ``total`` with sigs[i] == sigs[i - d] for i in [start, stop)."""
    for d in range(1, total + 1):
        if total % d == 0 and d <= start and all(sigs[i] == sigs[i - d]
                                                 for i in range(start, stop)):
            return d
    return None


def _pairs_at(a: list[tuple], b: list[tuple], split: int) -> tuple[dict[int, int], int] | None:
    """Pairs when the base's repeated blocks end at ``split`` (the model's extra blocks, if
    any, start there); None if the signatures do not pair up."""
    shift = len(a) - len(b)
    period = 0
    if shift > 0:
        found = _period(a, split, split + shift, shift)
        if found is None:
            return None
        period = found
    pairs: dict[int, int] = {}
    for i in range(len(a)):
        if i < split:
            j = i
        elif i >= split + max(shift, 0):
            j = i - shift
        else:
            j = i - period * ((i - split) // period + 1)
        if not 0 <= j < len(b) or a[i] != b[j]:
            return None
        pairs[i] = j
    return pairs, period


def _candidates(ours: list[fx.Node], theirs: list[fx.Node]) -> list[tuple[dict[int, int], int]]:
    """Every pairing the op sequences allow: the base's last block may end anywhere between
    where the common suffix starts and the common prefix ends (a head that begins like a block,
    ``layer_norm`` then ``linear``, leaves that open)."""
    a = [_signature(n) for n in ours]
    b = [_signature(n) for n in theirs]
    p = _prefix(a, b)
    s = _prefix(a[::-1], b[::-1])
    shift = len(a) - len(b)
    low = (len(b) if shift > 0 else len(a)) - s
    found = []
    for split in range(max(low, 0), min(p, len(a), len(b)) + 1):
        pairing = _pairs_at(a, b, split)
        if pairing is not None:
            found.append(pairing)
    return found


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


def align_by_period(cap: Capture, base: Capture) -> Alignment | None:
    """The pairing of ``cap``'s nodes with ``base``'s, or None if the two captures are not one
    architecture at two depths (see the module docstring)."""
    ours_all, theirs_all = list(cap.graph.nodes), list(base.graph.nodes)
    ours = [n for n in ours_all if n.op not in ("placeholder", "output")]
    theirs = [n for n in theirs_all if n.op not in ("placeholder", "output")]
    best: tuple[int, dict[int, int], int, dict[str, str], dict[str, str]] | None = None
    for pairs, period in _candidates(ours, theirs):
        params = _by_use(ours, theirs, pairs, cap.params, base.params)
        buffers = _by_use(ours, theirs, pairs, cap.buffers, base.buffers)
        if params is None or buffers is None:
            continue
        # the stem and the head keep their names: the pairing that pairs most by name
        score = sum(k == v for k, v in params.items()) + sum(k == v for k, v in buffers.items())
        if best is None or score > best[0]:
            best = (score, pairs, period, params, buffers)
    if best is None:
        return None
    _, pairs, period, params, buffers = best
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
                     MappingProxyType(buffers), period)
