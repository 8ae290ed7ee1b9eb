"""Constants that may be width in disguise: a single capture's blind spot (DESIGN §5b).

A size built in forward (``arange(dim // 2)``, ``zeros(n)``, a lifted tensor constant) is a
literal in the graph, so one capture takes its axes as finite. Through the model's config it
can still be the width — ``timestep_embedding(t, dim=hidden_size)`` feeding
``Linear(hidden_size, ...)`` — and only a second capture at another width tells them apart.

``width_sized_constants`` finds the weights that read such a constant, in three steps:

1. candidates: a weight maps an axis the solver took as finite onto a width axis, and the
   finite axis has the size of a width axis it meets — that weight's fan_out or the fan_out
   of the weight after it (the two layers of a timestep MLP: ``D -> 4D -> D``);
2. the finiteness must rest on constants alone: solving again without their seeds turns
   the axis into width (an axis bounded by a model input stays finite: data sizes are fixed);
3. the constant that bounds it is found through the compositions (``cat([cos, sin])`` of
   ``arange(dim // 2)``), for the diagnostic to name its line.

DiT's fixed 256-wide frequency embedding feeding ``Linear(256 -> d)`` meets no width of size
256 unless d is 256 itself, where one capture cannot tell the readings apart: it is flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from ..capture.export import Capture
from .axes import Axis, AxisGraph, Seed, Strength
from .registry import lookup
from .rules.create import constant
from .solve import Dims, Mark, solve

__all__ = ["SizedConstant", "width_sized_constants", "pinned_by_constants"]


@dataclass(frozen=True)
class SizedConstant:
    """Axis ``axis`` of ``param`` is finite only through a constant of the same size as a
    width axis it meets (produced by graph node ``meets``)."""

    param: str
    axis: int
    size: int
    constant: str | None  # graph node that built the constant (None: not traced back)
    meets: str


def width_sized_constants(cap: Capture, graph: AxisGraph, dims: Dims,
                          marks: Iterable[Mark]) -> list[SizedConstant]:
    """Parameter axes whose finiteness rests on a constant of the size of a width axis it
    meets; see the module docstring. ``marks``: those ``dims`` was solved with."""
    candidates = _candidates(graph, dims)
    seeds = _constant_seeds(cap, graph)
    if not candidates or not seeds:
        return []
    flipped = _flipped(graph, dims, marks, seeds)
    params = set(cap.params.values())
    hits = [(axis, owner) for axis, owner in graph.state.items()
            if dims.classes[axis] in candidates and dims.classes[axis] in flipped
            and owner in params]
    links = _links(graph, dims.classes) if hits else {}
    return [SizedConstant(owner, axis[1], graph.sizes[axis],
                          _constant_of(dims.classes, dims.classes[axis], flipped, links, seeds),
                          candidates[dims.classes[axis]])
            for axis, owner in hits]


def pinned_by_constants(cap: Capture, graph: AxisGraph, dims: Dims,
                        marks: Iterable[Mark]) -> list[SizedConstant]:
    """Parameter axes that are finite only through a constant made in forward, where that
    constant also pins an axis some weight *produces* (a Mamba scan state
    ``x.new_zeros(b, d_inner, d_state)`` fixes ``in_proj``'s output size): a weight's output
    bounded by nothing but a constant is a size taken from the config, very likely the
    width. DiT's 256 frequencies feed a weight's fan_in only: not listed here."""
    seeds = _constant_seeds(cap, graph)
    if not seeds:
        return []
    flipped = _flipped(graph, dims, marks, seeds)
    produced = {dims.classes[fan_out] for _i, fan_out, _n in graph.flows}
    producers = {dims.classes[fan_out]: node for _i, fan_out, node in graph.flows}
    pinned = flipped & produced
    if not pinned:
        return []
    params = set(cap.params.values())
    links = _links(graph, dims.classes)
    meets = producers[min(pinned)]
    return [SizedConstant(owner, axis[1], graph.sizes[axis],
                          _constant_of(dims.classes, dims.classes[axis], flipped, links, seeds),
                          meets)
            for axis, owner in graph.state.items()
            if owner in params and dims.classes[axis] in flipped]


def _constant_seeds(cap: Capture, graph: AxisGraph) -> list[Seed]:
    constants = _constant_nodes(cap)
    return [s for s in graph.seeds if s.strength == Strength.WEAK and s.node in constants]


def _flipped(graph: AxisGraph, dims: Dims, marks: Iterable[Mark],
             seeds: list[Seed]) -> set[int]:
    """Classes finite in ``dims`` that grow once the constants' seeds are dropped."""
    dropped = set(seeds)
    without = solve(replace(graph, seeds=[s for s in graph.seeds if s not in dropped]),
                    list(marks))
    return {c for axis, c in dims.classes.items()
            if not dims.is_width(axis) and without.is_width(axis)}


def _constant_nodes(cap: Capture) -> set[str]:
    """Tensors made in forward (``arange``, ``zeros``, ...) and lifted tensor constants."""
    made = {n.name for n in cap.graph.nodes if n.op == "call_function" and lookup(n) is constant}
    return made | set(cap.constants)


def _candidates(graph: AxisGraph, dims: Dims) -> dict[int, str]:
    """Finite fan_in class -> node making a width axis of its size, one or two weights on."""
    after: dict[int, list[tuple[Axis, str]]] = {}
    size: dict[int, int] = {}
    for fan_in, fan_out, node in graph.flows:
        if dims.is_width(fan_out):
            c = dims.classes[fan_in]
            after.setdefault(c, []).append((fan_out, node))
            size[c] = graph.sizes[fan_in]
    found: dict[int, str] = {}
    for c, outs in after.items():
        if dims.width.get(c, False) or size[c] <= 1:
            continue
        second = [o for a, _ in outs for o in after.get(dims.classes[a], [])]
        match = next((node for a, node in outs + second if graph.sizes[a] == size[c]), None)
        if match is not None:
            found[c] = match
    return found


def _links(graph: AxisGraph, classes: Mapping[Axis, int]) -> dict[int, set[int]]:
    """Classes joined by a composition (whole and parts: a ``cat`` of halves, a reshape)."""
    links: dict[int, set[int]] = {}
    for rel in graph.composes:
        group = {classes[rel.whole], *(classes[p] for p in rel.parts)}
        for c in group:
            links.setdefault(c, set()).update(group)
    return links


def _constant_of(classes: Mapping[Axis, int], start: int, flipped: set[int],
                 links: Mapping[int, set[int]], seeds: list[Seed]) -> str | None:
    """The nearest constant seed from class ``start``, through compositions of classes that
    rest on constants; seeds in graph order break ties."""
    seen, frontier = {start}, {start}
    while frontier:
        reached = next((s.node for s in seeds if classes.get(s.axis, -1) in frontier), None)
        if reached is not None:
            return reached
        frontier = {n for c in frontier for n in links.get(c, ()) if n in flipped} - seen
        seen |= frontier
    return None
