"""Residual streams: the branches that depth rules (CompleteP, depth-muP) scale by m_L^-alpha.

A pure function of a :class:`~muprewrite.capture.export.Capture`, in five stages:
candidate adds, long skips and nested adds set aside, per branch its module, block and
norm, the parameters inside branches, diagnostics. The rules of each stage and the models
behind them: docs/decisions/residual.md. The graph walks: residual_graph.py.

>>> import torch
>>> from muprewrite.capture.export import capture
>>> layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
>>> net = torch.nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
>>> stream = find_residuals(capture(net, [((torch.randn(2, 4, 16),), {})]))
>>> stream.depth, len(stream.branches), stream.branches[0].norm, stream.branches[0].module
(3, 6, 'post', 'layers.0.self_attn')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from torch import fx

from ..capture.source import node_source
from .diagnostic import Diagnostic
from .residual_graph import ADDS, Add, Branch, Graph, module_keys, node_op, shape_of

if TYPE_CHECKING:
    from ..capture.export import Capture

__all__ = ["Norm", "ResidualBranch", "ResidualStream", "find_residuals"]

Norm = Literal["pre", "post", "none"]

_INT = re.compile(r"\d+")


@dataclass(frozen=True)
class ResidualBranch:
    """One ``stream + branch`` add; see docs/decisions/residual.md for each field's definition."""

    add: str
    stream: str
    branch: str
    source: str
    block: str
    module: str
    module_output: str
    norm: Norm


@dataclass(frozen=True)
class ResidualStream:
    """Every residual branch of one capture (graph order), the block count L, the parameters
    inside branches, the long skips (file:line), and what to tell the user."""

    branches: tuple[ResidualBranch, ...]
    depth: int
    inside: frozenset[str]
    long_skips: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]


def _candidates(g: Graph) -> list[Add]:
    found: dict[fx.Node, Add] = {}
    for n in g.nodes:
        if node_op(n) not in ADDS or len(n.args) < 2:
            continue
        a, b = n.args[0], n.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or a is b:
            continue
        if shape_of(n) is None or not shape_of(a) == shape_of(b) == shape_of(n):
            continue
        pairs = ((a, b), (b, a))
        direct = [Add(n, s, br, s) for s, br in pairs if g.is_ancestor(s, br)]
        parallel = [Add(n, s, br, found[s].origin) for s, br in pairs  # x + f(x) + g(x)
                    if s in found and g.is_ancestor(found[s].origin, br)]
        if direct or parallel:
            found[n] = (direct or parallel)[0]
    return list(found.values())


def _split(g: Graph, cands: list[Add]) -> tuple[list[Add], list[Add]]:
    """(branches, long skips) among the candidates."""
    regions = {c.node: g.region(c) for c in cands}
    roots = {c.node: g.root(c.stream)[0] for c in cands}
    long = {c.node for c in cands
            if any(o.node in regions[c.node] and roots[o.node] is roots[c.node] for o in cands)}
    nested = {o.node for c in cands if c.node not in long
              for o in cands if o.node in regions[c.node]}
    branches = [c for c in cands if c.node not in long and c.node not in nested]
    skips = [c for c in cands if c.node in long and c.node not in nested]
    return branches, skips


def _indexed_prefix(path: str, innermost: bool) -> str:
    parts = path.split(".") if path else []
    ends = [i for i, p in enumerate(parts) if _INT.fullmatch(p)]
    if not ends:
        return ""
    return ".".join(parts[:(ends[-1] if innermost else ends[0]) + 1])


def _block(add_path: str, module: str, add_name: str) -> str:
    return (_indexed_prefix(add_path, True) or _indexed_prefix(module, False) or add_path
            or module or add_name)


def _modules(g: Graph, items: list[Branch]) -> list[tuple[str, str]]:
    """(module path, output node) per branch, "" where a hook would touch anything else."""
    found = [b.module() for b in items]
    outputs = {n for _k, n in found if n is not None}
    by_path: dict[str, list[str]] = {}
    for call, path in g.paths.items():
        by_path.setdefault(path, []).append(call)
    result = []
    for key, out in found:
        if key is None or out is None:
            result.append(("", ""))
            continue
        path = g.paths[key]
        calls_ok = all(n in outputs for k in by_path[path] for n in g.calls[k] if g.leaves(n, k))
        result.append((path, out.name) if calls_ok else ("", ""))
    return result


def _norms(g: Graph, items: list[Branch]) -> list[Norm]:
    roots = [g.root(b.add.stream) for b in items]
    norms: list[Norm] = []
    for b in items:
        nexts = [via for root, via in roots if root is b.add.node]
        # the last add of a stream: a norm after it inside its host is a post-LN norm,
        # unless the branch normalises its own input (pre-LN: that is the final norm)
        post = any(nexts) if nexts else not b.pre_norm() and b.post_norm_in_host()
        norms.append("post" if post else "pre" if b.pre_norm() else "none")
    return norms


def _inside(g: Graph, branches: list[Add]) -> frozenset[str]:
    stops = {b.branch for b in branches}
    streams = {(b.node, b.stream) for b in branches}
    escapes: dict[fx.Node, bool] = {}
    reaches: dict[fx.Node, bool] = {}
    for n in reversed(g.nodes):
        if n in stops:
            escapes[n], reaches[n] = False, True
            continue
        escapes[n] = any(u.op == "output" or (u, n) in streams or escapes[u] for u in n.users)
        reaches[n] = any(reaches[u] for u in n.users)
    verdict: dict[str, bool] = {}
    for node in g.nodes:
        param = g.cap.params.get(node.name) if node.op == "placeholder" else None
        if param is None or (not reaches[node] and not escapes[node]):
            continue
        verdict[param] = verdict.get(param, True) and reaches[node] and not escapes[node]
    return frozenset(name for name, inside in verdict.items() if inside)


def _source(node: fx.Node) -> str:
    src = node_source(node)
    return str(src) if src is not None else ""


def _diagnostics(branches: tuple[ResidualBranch, ...]) -> tuple[Diagnostic, ...]:
    if not branches:
        return (Diagnostic(
            "info", "no-residual", "",
            "no residual branch found: no add of two same-shape tensors where one is computed "
            "from the other", "depth rules need a residual stream; width rules apply as usual"),)
    post = [b for b in branches if b.norm == "post"]
    if not post:
        return ()
    return (Diagnostic(
        "warning", "post-ln", post[0].source or post[0].add,
        f"{len(post)} of {len(branches)} residual branches are post-LN (the add's output is "
        "normalised before it becomes the next stream value); depth-transfer rules (CompleteP, "
        "depth-muP) were derived and validated on pre-LN residual networks only",
        "move the norm onto the branch (x + f(norm(x))) before transferring across depth, or "
        "keep the depth of the base"),)


def find_residuals(cap: Capture) -> ResidualStream:
    """The residual branches of ``cap``'s graph, their blocks, and the parameters inside."""
    g = Graph(cap)
    adds, skips = _split(g, _candidates(g))
    items = [Branch(g, a) for a in adds]
    branches = []
    for b, (module, output), norm in zip(items, _modules(g, items), _norms(g, items)):
        keys = module_keys(b.add.node)
        add_path = g.paths[keys[-1]] if keys else ""
        branches.append(ResidualBranch(
            b.add.node.name, b.add.stream.name, b.add.branch.name, _source(b.add.node),
            _block(add_path, module, b.add.node.name), module, output, norm))
    found = tuple(branches)
    return ResidualStream(found, len({b.block for b in found}), _inside(g, adds),
                          tuple(_source(s.node) or s.node.name for s in skips),
                          _diagnostics(found))
