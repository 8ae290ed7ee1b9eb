"""Depth per residual stream: calls of residual blocks, not modules, and m_L per stream.

CompleteP and depth-muP scale each residual branch by m_L^-alpha, m_L = L / L_base, where L
is the number of blocks the residual stream passes through. This module counts L from the
capture, so that:

- a block **called** several times counts once per call: one block object reused L times
  (ALBERT: ``for _ in range(n): x = self.block(x)``), one module listed twice
  (``nn.ModuleList([blk] * n)``, ``[b0, b1, b0]``), a ``forward`` that runs ``blocks[0]``
  again. A call is one ``nn_module_stack`` key of the block (export suffixes repeated calls
  ``@1``, ``@2``, ...). The forward hook of ``rewrite/branches.py`` runs once per call, so
  each branch call is scaled by m_L^-alpha exactly once.
- **streams that deepen differently** get their own m_L: an encoder of 2 -> 8 blocks beside
  a decoder that stays at 2 scales the encoder's branches by 4^-alpha and the decoder's by 1.
  Two branches share a stream when one's stream operand is computed from the other's add
  without passing through a branch operand (the chain of adds, a norm of it for post-LN, a
  concatenation with a long skip as in U-ViT), or when one call of a block hosts both (the
  image and context streams of an MMDiT joint block). Cross-attention reads another stream
  inside a branch: that does not join them.

The model's streams are paired with the base's in graph order; they must run blocks of the
same kinds (layer indices aside), else the base is refused. A parameter inside the branches
of two streams that deepen differently (a weight shared by encoder and decoder blocks) has
no single m_L: refused, named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass

from torch import fx

from ..capture.export import Capture
from ..dims.align import layer_pattern
from ..errors import UsageError, first_few
from .residual import ResidualStream

__all__ = ["Streams", "find_streams", "stream_ratios", "param_ratios"]

_INLINE = "<an add in the root forward>"  # the block of a branch no module hosts


@dataclass(frozen=True)
class Streams:
    """``groups``: per stream (graph order), the indices of its branches in
    ``ResidualStream.branches``; ``calls``: per stream, its block calls in call order, as
    (call key, block path)."""

    groups: tuple[tuple[int, ...], ...]
    calls: tuple[tuple[tuple[str, str], ...], ...]

    def depth(self, i: int) -> int:
        return len(self.calls[i])

    @property
    def distinct(self) -> dict[tuple[str, ...], int]:
        """Block paths in call order -> block calls, per distinct stream (a stream run again
        by another input set, the same blocks in the same order, counts once)."""
        seen: dict[tuple[str, ...], int] = {}
        for calls in self.calls:
            seen.setdefault(tuple(path for _key, path in calls), len(calls))
        return seen

    @property
    def total(self) -> int:
        """Block calls over the distinct streams."""
        return sum(self.distinct.values())

    def kinds(self, i: int) -> frozenset[str]:
        return frozenset(layer_pattern(path) for _key, path in self.calls[i])


def _stack(node: fx.Node | None) -> list[tuple[str, str]]:
    if node is None:
        return []
    return [(str(k), str(v[0])) for k, v in (node.meta.get("nn_module_stack") or {}).items()]


def _call_key(by_name: Mapping[str, fx.Node], add: str, output: str, block: str) -> str:
    """The ``nn_module_stack`` key of the block call hosting the branch (the innermost call
    of a module at the block's path); the block path itself when no call has it (a block
    named after a module path or an add: counted once, as before)."""
    for name in (add, output):
        keys = [k for k, path in _stack(by_name.get(name)) if path == block]
        if keys:
            return keys[-1]
    return f"path:{block}"


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def find_streams(cap: Capture, residuals: ResidualStream) -> Streams:
    """Group the branches of ``residuals`` into residual streams (module docstring)."""
    by_name = {n.name: n for n in cap.graph.nodes}
    branches = residuals.branches
    keys = [_call_key(by_name, b.add, b.module_output, b.block) for b in branches]
    union = _Union(len(branches))
    first_of_key: dict[str, int] = {}
    for i, key in enumerate(keys):
        union.join(i, first_of_key.setdefault(key, i))
    adds = {b.add: i for i, b in enumerate(branches)}
    operands = {b.branch for b in branches}
    for i, b in enumerate(branches):
        start = by_name.get(b.stream)
        for node in _stops([start] if start is not None else [], adds.keys() | operands,
                           lambda n: n.all_input_nodes):
            if node.name in adds:
                union.join(i, adds[node.name])
    members: dict[int, list[int]] = {}
    for i in range(len(branches)):
        members.setdefault(union.find(i), []).append(i)
    groups = sorted((tuple(m) for m in members.values()), key=lambda g: g[0])
    labels = [_INLINE if b.block == b.add else b.block for b in branches]
    calls = tuple(tuple(dict.fromkeys((keys[i], labels[i]) for i in g)) for g in groups)
    return Streams(tuple(groups), calls)


def _stops(starts: Iterable[fx.Node], stops: Set[str],
           step: Callable[[fx.Node], Iterable[fx.Node]]) -> Iterator[fx.Node]:
    """The nodes named in ``stops`` that a walk from ``starts`` along ``step`` (inputs or
    users) reaches without passing another of them; each node is visited once."""
    stack, seen = list(starts), set()
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.name in stops:
            yield node
        else:
            stack.extend(step(node))


def stream_ratios(model: str, ours: Streams, theirs: Streams) -> tuple[float, ...]:
    """m_L per stream of the model: its block calls over its base partner's."""
    problems = []
    if len(ours.groups) != len(theirs.groups):
        problems.append(f"the model has {len(ours.groups)} residual stream(s), the base "
                        f"{len(theirs.groups)}")
    else:
        for i in range(len(ours.groups)):
            if ours.kinds(i) != theirs.kinds(i):
                problems.append(f"residual stream {i + 1} runs blocks "
                                f"{', '.join(sorted(ours.kinds(i)))} in the model but "
                                f"{', '.join(sorted(theirs.kinds(i)))} in the base")
    if problems:
        raise UsageError(f"cannot tell the depth ratio m_L of each residual stream: "
                         f"{first_few(problems, 3)}",
                         fix=f"build the base from {model}'s constructor with the same options, "
                             "changing only the width and the number of blocks of each stack "
                             "(keep at least one block in every stack)")
    return tuple(ours.depth(i) / theirs.depth(i) for i in range(len(ours.groups)))


def param_ratios(cap: Capture, residuals: ResidualStream, streams: Streams,
                 ratios: tuple[float, ...]) -> dict[str, float]:
    """m_L of every parameter inside the branches: that of the streams whose branch operands
    its uses reach; a parameter reaching streams of different m_L is refused."""
    stream_of = {residuals.branches[i].branch: s for s, g in enumerate(streams.groups)
                 for i in g}
    reached: dict[str, set[int]] = {}
    for node in cap.graph.nodes:
        name = cap.params.get(node.name) if node.op == "placeholder" else None
        if name is None or name not in residuals.inside:
            continue
        reached.setdefault(name, set()).update(
            stream_of[hit.name] for hit in _stops([node], stream_of.keys(), lambda n: n.users))
    out: dict[str, float] = {}
    for name, found in reached.items():
        values = sorted({ratios[s] for s in found})
        if len(values) > 1:
            raise UsageError(
                f"parameter {name!r} lies inside residual branches of streams whose depth "
                f"grows differently (m_L = {', '.join(f'{v:g}' for v in values)}), so it has "
                "no single depth factor",
                fix="give each stack its own parameters, or deepen the stacks that share it "
                    "by the same ratio")
        out[name] = values[0] if values else 1.0
    return out
