"""Decide, for every class of equal axes, whether it grows with width.

Evidence is applied strongest first, each step followed by propagation through
compositions (a whole grows iff some part grows):

1. strong finite seeds: model inputs, size-1 axes, kernel extents, embedding rows;
2. attention marks: the heads convention at every attention site (which of heads and
   d_head grows), and the attention width itself; then bottlenecks: an axis that a weight
   produces from a width axis and another weight maps into a width axis is width too
   (a fixed-size bottleneck between wide layers is not a thing models do);
3. model outputs are finite — unless step 2 showed them to be width (a backbone);
4. weak finite seeds: constants built in forward, tables read along finite axes;
5. a spatial convolution mapping C channels to C (U-ViT's output conv) where one side is
   finite by an input or output keeps the other side finite too;
6. parameter and buffer axes not yet decided grow with width (nothing finite bounds them),
   except an axis joined to no other axis at all (a table's rows summed away): finite;
7. a width axis split into several undecided factors: the last grows (documented default);
8. everything still undecided is finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import networkx as nx

from .axes import Axis, AxisGraph, Compose, Strength

__all__ = ["Mark", "Note", "Dims", "solve", "bounded"]

FINITE, WIDTH = False, True


@dataclass(frozen=True)
class Mark:
    """Evidence from outside the axis graph (attention sites, a second capture)."""

    axis: Axis
    width: bool
    reason: str
    node: str


@dataclass(frozen=True)
class Note:
    """Something the solver assumed or overrode; becomes a Report diagnostic."""

    code: str
    node: str
    message: str


@dataclass(frozen=True)
class Dims:
    """The solved dimension graph: class of every axis and whether it grows with width."""

    classes: Mapping[Axis, int]
    width: Mapping[int, bool]
    reason: Mapping[int, str]
    sizes: Mapping[Axis, int]
    notes: tuple[Note, ...]

    def is_width(self, axis: Axis) -> bool:
        return self.width.get(self.classes[axis], False)

    def why(self, axis: Axis) -> str:
        return self.reason.get(self.classes[axis], "")


class _Solver:
    def __init__(self, graph: AxisGraph) -> None:
        self.graph = graph
        self.cls: dict[Axis, int] = {}
        for i, comp in enumerate(nx.connected_components(graph.equal)):
            for axis in comp:
                self.cls[axis] = i
        self.status: dict[int, bool] = {}
        self.reason: dict[int, str] = {}
        self.notes: list[Note] = []
        self.boundary: set[int] = set()  # finite by a model input or output
        self.rels = [
            (self.cls[c.whole], [self.cls[p] for p in c.parts], c)
            for c in graph.composes
        ]

    def set(self, axis: Axis, width: bool, reason: str) -> bool:
        c = self.cls[axis]
        if c in self.status:
            return False
        self.status[c] = width
        self.reason[c] = reason
        return True

    def propagate(self) -> None:
        changed = True
        while changed:
            changed = False
            for whole, parts, rel in self.rels:
                changed |= self._apply(whole, parts, rel)

    def _apply(self, whole: int, parts: list[int], rel: Compose) -> bool:
        st = self.status
        w = st.get(whole)
        changed = False
        if w is FINITE:
            for p in parts:
                if p not in st:
                    st[p], self.reason[p] = FINITE, f"part of a finite axis ({rel.kind} at {rel.node})"
                    changed = True
        known = [st.get(p) for p in parts]
        if w is None and all(k is FINITE for k in known):
            st[whole], self.reason[whole] = FINITE, f"made of finite axes ({rel.kind} at {rel.node})"
            return True
        if w is None and any(k is WIDTH for k in known):
            st[whole], self.reason[whole] = WIDTH, f"contains a width axis ({rel.kind} at {rel.node})"
            return True
        if st.get(whole) is WIDTH and WIDTH not in known:
            open_ = list(dict.fromkeys(p for p, k in zip(parts, known) if k is None))
            if len(open_) == 1:
                st[open_[0]] = WIDTH
                self.reason[open_[0]] = f"only part of a width axis that can grow ({rel.kind} at {rel.node})"
                return True
        return changed

    def seeds(self, strength: Strength) -> None:
        for seed in self.graph.seeds:
            if seed.strength != strength:
                continue
            c = self.cls[seed.axis]
            if self.status.get(c) is WIDTH:
                code = "width-constant" if strength == Strength.WEAK else "width-output"
                self.notes.append(Note(code, seed.node, f"{seed.reason}: axis of size "
                                       f"{self.graph.sizes[seed.axis]} is width-sized; "
                                       "treated as width"))
                continue
            if c not in self.status:
                self.status[c], self.reason[c] = FINITE, seed.reason
                if strength == Strength.WEAK:
                    self.notes.append(Note("finite-constant", seed.node,
                                           f"{seed.reason}: size {self.graph.sizes[seed.axis]} "
                                           "taken as finite"))
        self.propagate()

    def marks(self, marks: Iterable[Mark]) -> None:
        for mark in marks:
            c = self.cls.get(mark.axis)
            if c is None:
                continue
            if c in self.status and self.status[c] != mark.width:
                self.notes.append(Note("mark-overridden", mark.node,
                                       f"{mark.reason} contradicts: {self.reason[c]}"))
                continue
            self.set(mark.axis, mark.width, mark.reason)
        self.propagate()

    def bottlenecks(self) -> None:
        flows = [(self.cls[i], self.cls[o]) for i, o, _ in self.graph.flows]
        changed = True
        while changed:
            changed = False
            fed = {o for i, o in flows if self.status.get(i) is WIDTH}
            feeding = {i for i, o in flows if self.status.get(o) is WIDTH}
            for c in fed & feeding:
                if c not in self.status:
                    self.status[c], self.reason[c] = WIDTH, "between width axes (weights on both sides)"
                    changed = True
            self.propagate()

    def reads(self) -> None:
        for table, index, node in self.graph.reads:
            if self.status.get(self.cls[index]) is FINITE and self.cls[table] not in self.status:
                self.set(table, FINITE, f"table read along a finite axis at {node}")
        self.propagate()

    def square_maps(self) -> None:
        for fan_in, fan_out, node in self.graph.maps:
            a, b = self.cls[fan_in], self.cls[fan_out]
            if self.graph.sizes[fan_in] != self.graph.sizes[fan_out]:
                continue
            for known, other in ((a, b), (b, a)):
                if known in self.boundary and other not in self.status:
                    self.status[other] = FINITE
                    self.reason[other] = f"size-preserving map at {node} from a finite axis"
                    self.notes.append(Note("square-map", node, "a weight maps a finite axis to "
                                           "one of the same size; both taken as finite"))
        self.propagate()

    def state(self) -> None:
        members: dict[int, int] = {}
        for c in self.cls.values():
            members[c] = members.get(c, 0) + 1
        for axis, owner in self.graph.state.items():
            if self.graph.sizes.get(axis, 1) == 1 or self.cls[axis] in self.status:
                continue
            if members[self.cls[axis]] == 1 and not self._in_compose(self.cls[axis]):
                continue  # joined to nothing at all: decided by isolated()
            self.set(axis, WIDTH, f"axis of {owner} bounded by nothing finite")
        self.propagate()

    def _in_compose(self, c: int) -> bool:
        return any(c == whole or c in parts for whole, parts, _ in self.rels)

    def isolated(self) -> None:
        for axis, owner in self.graph.state.items():
            if self.cls[axis] not in self.status:
                self.set(axis, FINITE, f"axis of {owner} joined to no other axis")
                self.notes.append(Note("isolated-axis", axis[0], f"axis {axis[1]} of {owner} "
                                       f"(size {self.graph.sizes[axis]}) is joined to no other "
                                       "axis; taken as finite"))

    def ambiguous(self) -> None:
        while True:
            for whole, parts, rel in self.rels:
                known = [self.status.get(p) for p in parts]
                open_ = [p for p, k in zip(parts, known) if k is None]
                if self.status.get(whole) is WIDTH and WIDTH not in known and open_:
                    real = [p for p, k, a in zip(parts, known, rel.parts) if k is None
                            and self.graph.sizes.get(a, -1) != -1]
                    pick = real[-1] if real else open_[-1]
                    self.status[pick] = WIDTH
                    self.reason[pick] = f"last factor of a width axis split at {rel.node} (assumed)"
                    self.notes.append(Note("ambiguous-split", rel.node,
                                           "a width axis is split into several factors; "
                                           "assumed the last one grows"))
                    self.propagate()
                    break
            else:
                return

    def result(self) -> Dims:
        for c in set(self.cls.values()):
            if c not in self.status:
                self.status[c], self.reason[c] = FINITE, "no width evidence"
        return Dims(MappingProxyType(self.cls), MappingProxyType(self.status),
                    MappingProxyType(self.reason), MappingProxyType(self.graph.sizes),
                    tuple(self.notes))


def solve(graph: AxisGraph, marks: Iterable[Mark] = ()) -> Dims:
    """Run the evidence steps in order (see module docstring) and return the decisions."""
    s = _Solver(graph)
    s.seeds(Strength.STRONG)
    s.marks(marks)
    s.bottlenecks()
    s.seeds(Strength.OUTPUT)
    s.boundary = {c for c, w in s.status.items() if w is FINITE}
    s.seeds(Strength.WEAK)
    s.reads()
    s.square_maps()
    s.state()
    s.ambiguous()
    s.isolated()
    return s.result()


def bounded(graph: AxisGraph, dims: Dims) -> dict[Axis, tuple[Strength, str]]:
    """The axes that ``dims`` takes as finite because the data bounds them, with the
    strongest such evidence and its reason: a model input, an embedding table's rows, a
    kernel extent (``Strength.STRONG``), or a model output (``Strength.OUTPUT``; skipped where
    ``dims`` found the output to be width: a backbone). The heads convention, weak constants
    and the lack of evidence do not count: a base's measurement may overrule those."""
    s = _Solver(graph)
    s.seeds(Strength.STRONG)
    strong = {c for c, w in s.status.items() if w is FINITE}
    for axis, c in s.cls.items():
        if c not in s.status and dims.is_width(axis):
            s.status[c], s.reason[c] = WIDTH, dims.why(axis)  # as ``dims`` decided
    s.seeds(Strength.OUTPUT)
    return {axis: (Strength.STRONG if c in strong else Strength.OUTPUT, s.reason[c])
            for axis, c in s.cls.items() if s.status.get(c) is FINITE and not dims.is_width(axis)}
