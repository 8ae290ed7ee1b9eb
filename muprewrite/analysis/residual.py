"""Residual streams: the branches that depth rules (CompleteP, depth-muP) scale by m_L^-alpha.

A pure function of a :class:`~muprewrite.capture.Capture`; stages, in order:

1. **candidates**: every ``add`` / ``add_`` whose two tensor operands and output have one
   shape, where one operand (the *stream*) is an ancestor of the other (the *branch*).
   Ancestry follows values only: ``new_empty`` / ``zeros_like`` / ``rand_like`` / size
   queries do not make a tensor derived from their input (a drop-path mask is not part of
   the branch). ``x + pos_embed``, ``logits + mask``, ``h + bias``, ``t_emb + y_emb`` are
   no candidates: neither operand is computed from the other. A parallel block written
   ``x + attn(h) + mlp(h)`` (``h = norm(x)``) gives two: the second add's stream is the
   first add and its branch is computed from the first add's stream. Summed first
   (GPT-NeoX: ``mlp(h) + attn(h) + x``) it gives one branch, whose operand is an inline add
   (no module: see 3).
2. **long skips and nested adds**: a candidate's *region* is what lies between its stream
   and its branch (descendants of the stream that are ancestors of the branch). A candidate
   whose region holds another candidate on the same stream (same *root*: its stream operand
   traced back through views, casts, dropout and norms) skips over residual adds (U-Net
   style): it is listed in ``long_skips``, not as a branch. A candidate inside the region of
   another candidate that is no long skip is an add *within* a branch (``x + 0.044715 x^3``
   in GPT-2's hand-written GELU, a residual inside an MLP): no branch either. Every other
   candidate is a branch; its stream may be the stem, the previous add, a norm of it
   (post-LN) or a concatenation of two streams (Flux single blocks): the chain itself is not
   required, so multi-stream models (MMDiT / SD3: image and context streams with joint
   attention) get their branches on each stream. U-ViT's long skips concatenate
   (``skip_linear(cat([x, skip]))``): no add, so no branch and no long skip.
3. **per branch**: ``module`` walks back from the branch operand through ops linear in it
   (views, casts, dropout, slices, ``mul`` / ``div`` by a scalar or a tensor not derived
   from the stream: gates, layer-scale, drop-path masks) to the output node of a module
   call (``nn_module_stack``: a node of the call with a user outside it), the outermost one
   not hosting the add. A call the walk can cross linearly (Dropout, DropPath, LayerScale
   modules) is crossed. The module is kept only if the chain from its output to the add has
   one consumer at each step and every output of every call of that module is the module
   output of some branch (a forward hook scaling it touches branches only); else ``""``.
   A branch ending in an inline op of the host's forward (``x + F.gelu(self.fc(x))``) gets
   ``""``: the rewriter refuses it at ``source``.
   ``block``: the innermost module hosting the add whose path ends in an integer index
   (``blocks.3``); else the branch module's path up to its first integer component; else
   the add's host module (a non-indexed ``mid_block``); else the branch module; else the
   add's node name. A ``Residual`` wrapper held in a per-layer ``Sequential``
   (``layers.0.1``) therefore counts as its own block.
   ``norm``: ``"post"`` when a later branch's stream is this add's output through a norm,
   or (last add of its stream, its branch not starting with a norm) when every consumer of
   the output is a norm run inside the module hosting the add (so a vit-pytorch
   ``Transformer``'s final norm after pre-LN blocks is not taken for one, nor one outside
   the host; a post-LN add written in the root forward is ``"post"`` only by the first
   test). Else ``"pre"``
   when the branch starts with a norm of the stream, else ``"none"``. Norms are the aten
   norm ops or a module call with one activation input, a reduction and a rescale
   (hand-written RMSNorm).
4. **inside**: a parameter is inside iff a forward walk from its placeholder, stopping at
   branch operands, reaches a branch operand but never a residual add through its stream
   operand nor an output. Post-LN norm gains lie on the stream: outside. A tied parameter
   is inside iff every placeholder of it is; a parameter reaching neither is in no set.
5. **diagnostics**: ``post-ln`` (warning) when a branch is post-LN; ``no-residual`` (info).

>>> import torch
>>> from muprewrite.capture import capture
>>> layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
>>> net = torch.nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
>>> stream = find_residuals(capture(net, [((torch.randn(2, 4, 16),), {})]))
>>> stream.depth, len(stream.branches), stream.branches[0].norm, stream.branches[0].module
(3, 6, 'post', 'layers.0.self_attn')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import torch
from torch import fx

from ..capture.source import node_source
from ..dims.registry import op_name
from .diagnostic import Diagnostic

if TYPE_CHECKING:
    from ..capture.export import Capture

__all__ = ["Norm", "ResidualBranch", "ResidualStream", "find_residuals"]

Norm = Literal["pre", "post", "none"]

_ADDS = frozenset({"add", "add_"})
_NORMS = frozenset({"layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm",
                    "group_norm", "native_group_norm", "batch_norm", "instance_norm",
                    "_native_batch_norm_legit", "_native_batch_norm_legit_no_training"})
_REDUCTIONS = frozenset({"mean", "var", "var_mean", "std", "std_mean", "sum", "norm",
                         "linalg_vector_norm"})
_RESCALES = frozenset({"rsqrt", "sqrt", "div", "reciprocal"})
# every op a hand-written norm module may run (no matmul: a block is never taken for a norm)
_NORM_BODY = _NORMS | _REDUCTIONS | _RESCALES | {
    "pow", "square", "abs", "add", "sub", "mul", "neg", "clamp", "clamp_min", "maximum",
    "_to_copy", "to", "type_as", "float", "getitem", "view", "reshape", "unsqueeze", "expand",
    "ones_like", "detach", "_assert_tensor_metadata"}
# checks export inserts (for ``.to(dtype)``): consumers that compute nothing
_CHECKS = frozenset({"_assert_tensor_metadata", "_assert_scalar", "_assert_async"})
_VALUE_FREE = frozenset({"new_empty", "new_zeros", "new_ones", "new_full", "empty_like",
                         "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
                         "randint_like", "sym_size", "sym_numel", "sym_stride", "size"})
# value-preserving unary ops: a stream through them is the same stream
_PASS = frozenset({"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "contiguous",
                   "clone", "unsqueeze", "squeeze", "flatten", "unflatten", "alias", "_to_copy",
                   "to", "type_as", "dropout", "feature_dropout", "alpha_dropout"})
# further ops linear in their first operand (a branch through them scales with it)
_LINEAR = _PASS | {"expand", "slice", "select", "narrow", "neg", "movedim", "native_dropout",
                   "split", "split_with_sizes", "chunk", "unbind", "tensor_split"}
_INT = re.compile(r"\d+")


@dataclass(frozen=True)
class ResidualBranch:
    """One ``stream + branch`` add; see the module docstring for each field's definition."""

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


def _op(node: fx.Node) -> str:
    return op_name(node) if node.op == "call_function" else ""


def _inputs(node: fx.Node) -> list[fx.Node]:
    return [] if _op(node) in _VALUE_FREE else node.all_input_nodes


def _shape(node: object) -> tuple[int, ...] | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _keys(node: fx.Node) -> list[str]:
    return list(node.meta.get("nn_module_stack") or {})


def _first(node: fx.Node) -> fx.Node | None:
    arg = node.args[0] if node.args else None
    return arg if isinstance(arg, fx.Node) else None


@dataclass(frozen=True)
class _Add:
    node: fx.Node
    stream: fx.Node
    branch: fx.Node
    origin: fx.Node  # what the branch is computed from: the stream, or for a parallel
    # branch (``x + f(x) + g(x)``: the second add's stream is the first add) its stream


class _Graph:
    """Indexes of one captured graph: topological order, module calls, weight placeholders."""

    def __init__(self, cap: Capture) -> None:
        self.cap = cap
        self.nodes = list(cap.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.calls: dict[str, list[fx.Node]] = {}
        self.paths: dict[str, str] = {}
        for n in self.nodes:
            for key, (path, _type) in (n.meta.get("nn_module_stack") or {}).items():
                self.calls.setdefault(key, []).append(n)
                self.paths[key] = str(path)
        self.weights = set(cap.params) | set(cap.buffers) | set(cap.constants)
        self._norm_input: dict[str, fx.Node | None] = {}

    def is_ancestor(self, a: fx.Node, b: fx.Node) -> bool:
        low, stack, seen = self.index[a], [b], {b}
        if low > self.index[b]:
            return False
        while stack:
            for p in _inputs(stack.pop()):
                if p is a:
                    return True
                if p not in seen and self.index[p] > low:
                    seen.add(p)
                    stack.append(p)
        return False

    def region(self, add: _Add) -> set[fx.Node]:
        """Descendants of the origin that are ancestors of the branch (branch included)."""
        low, stack, anc = self.index[add.origin], [add.branch], {add.branch}
        while stack:
            for p in _inputs(stack.pop()):
                if p not in anc and self.index[p] > low:
                    anc.add(p)
                    stack.append(p)
        region: set[fx.Node] = set()
        for n in sorted(anc, key=self.index.__getitem__):
            if any(p is add.origin or p in region for p in _inputs(n)):
                region.add(n)
        return region

    def leaves(self, node: fx.Node, key: str) -> bool:
        return any(u.op == "output" or key not in _keys(u) for u in _live_users(node))

    def call_norm_input(self, key: str) -> fx.Node | None:
        """The one activation input of a call that normalises it (hand-written norms)."""
        if key not in self._norm_input:
            members = self.calls[key]
            inside = set(members)
            outer = {p for n in members for p in n.all_input_nodes
                     if p not in inside and p.op != "get_attr" and p.name not in self.weights}
            ops = {_op(n) for n in members}
            x = next(iter(outer)) if len(outer) == 1 else None
            normalises = ops <= _NORM_BODY and bool(ops & _REDUCTIONS) and bool(ops & _RESCALES)
            self._norm_input[key] = x if normalises and x is not None else None
        return self._norm_input[key]

    def norm_input(self, node: fx.Node) -> fx.Node | None:
        """``x`` when ``node`` is ``norm(x)``: an aten norm op, or a norm module's output."""
        if _op(node) in _NORMS:
            return _first(node)
        keys = _keys(node)
        if keys and self.leaves(node, keys[-1]):
            x = self.call_norm_input(keys[-1])
            return x if x is not None and _shape(x) == _shape(node) else None
        return None

    def root(self, node: fx.Node) -> tuple[fx.Node, bool]:
        """Walk back through views, casts, dropout and norms; (root, passed a norm)."""
        via_norm = False
        while True:
            prev = _first(node) if _op(node) in _PASS else None
            if prev is None:
                prev = self.norm_input(node)
                if prev is None:
                    return node, via_norm
                via_norm = True
            node = prev

    def passed(self, node: fx.Node) -> set[fx.Node]:
        """``node`` and its views / casts."""
        out, stack = {node}, [node]
        while stack:
            for u in stack.pop().users:
                if _op(u) in _PASS and u not in out:
                    out.add(u)
                    stack.append(u)
        return out

    def is_norm_of(self, user: fx.Node, values: set[fx.Node]) -> bool:
        if _op(user) in _NORMS:
            return _first(user) in values
        keys = _keys(user)
        return bool(keys) and self.call_norm_input(keys[-1]) in values


def _candidates(g: _Graph) -> list[_Add]:
    found: dict[fx.Node, _Add] = {}
    for n in g.nodes:
        if _op(n) not in _ADDS or len(n.args) < 2:
            continue
        a, b = n.args[0], n.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or a is b:
            continue
        if _shape(n) is None or not _shape(a) == _shape(b) == _shape(n):
            continue
        pairs = ((a, b), (b, a))
        direct = [_Add(n, s, br, s) for s, br in pairs if g.is_ancestor(s, br)]
        parallel = [_Add(n, s, br, found[s].origin) for s, br in pairs  # x + f(x) + g(x)
                    if s in found and g.is_ancestor(found[s].origin, br)]
        if direct or parallel:
            found[n] = (direct or parallel)[0]
    return list(found.values())


def _split(g: _Graph, cands: list[_Add]) -> tuple[list[_Add], list[_Add]]:
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


class _Branch:
    """Derivations for one branch add."""

    def __init__(self, g: _Graph, add: _Add) -> None:
        self.g, self.add = g, add
        self.host = set(_keys(add.node))

    @cached_property
    def region(self) -> set[fx.Node]:
        return self.g.region(self.add)

    def linear_input(self, node: fx.Node) -> fx.Node | None:
        """The operand ``node`` is linear in, along the branch; None if it is not linear."""
        op = _op(node)
        if op == "getitem":
            src = _first(node)
            if src is not None and _op(src) in _LINEAR and (
                    _op(src) != "native_dropout" or node.args[1] == 0):
                return src
            return None
        if op in _LINEAR:
            return _first(node)
        if op in ("mul", "mul_", "div", "div_"):
            tensors = [a for a in node.args[:2] if isinstance(a, fx.Node)]
            on = [a for a in tensors if a in self.region]
            if len(on) == 1 and (op.startswith("mul") or on[0] is node.args[0]):
                return on[0]
        return None

    def call_left(self, node: fx.Node) -> str | None:
        """The outermost call not hosting the add whose output ``node`` is."""
        return next((k for k in _keys(node) if k not in self.host and self.g.leaves(node, k)),
                    None)

    def crosses(self, node: fx.Node, key: str) -> bool:
        """Whether the walk from the call's output leaves the call through linear ops only."""
        members = set(self.g.calls[key])
        cur: fx.Node | None = node
        while cur is not None and cur in members:
            cur = self.linear_input(cur)
        return cur is not None

    def module(self) -> tuple[str | None, fx.Node | None]:
        """(call key, output node) of the module the branch is a linear function of."""
        chain: list[fx.Node] = []
        cur: fx.Node | None = self.add.branch
        while cur is not None:
            key = self.call_left(cur)
            if key is not None and not self.crosses(cur, key):
                single = all(len(_live_users(n)) == 1 for n in [*chain, cur])
                return (key, cur) if single else (None, None)
            chain.append(cur)
            cur = self.linear_input(cur)
        return None, None

    def pre_norm(self) -> bool:
        base = self.add.origin  # export may hand the add a no-op cast run inside the norm
        while _op(base) in _PASS and (prev := _first(base)) is not None:
            base = prev
        values = self.g.passed(base)
        return any(u in self.region and u not in values and self.g.is_norm_of(u, values)
                   for v in values for u in v.users)

    def post_norm_in_host(self) -> bool:
        """Every consumer of the add's output is a norm run inside the add's host module."""
        keys = _keys(self.add.node)
        if not keys or not self.g.paths.get(keys[-1]):
            return False
        values = self.g.passed(self.add.node)
        users = [u for v in values for u in v.users if u not in values]
        return bool(users) and all(self.g.is_norm_of(u, values) and keys[-1] in _keys(u)
                                   for u in users)


def _live_users(node: fx.Node) -> list[fx.Node]:
    """Users that read the value (not export's checks, shape-only ops, a dropout's mask)."""
    users = [u for u in node.users if _op(u) not in _CHECKS | _VALUE_FREE]
    if _op(node) == "native_dropout":
        return [u for u in users if u.args[1:2] == (0,)]
    return users


def _indexed_prefix(path: str, innermost: bool) -> str:
    parts = path.split(".") if path else []
    ends = [i for i, p in enumerate(parts) if _INT.fullmatch(p)]
    if not ends:
        return ""
    return ".".join(parts[:(ends[-1] if innermost else ends[0]) + 1])


def _block(add_path: str, module: str, add_name: str) -> str:
    return (_indexed_prefix(add_path, True) or _indexed_prefix(module, False) or add_path
            or module or add_name)


def _modules(g: _Graph, items: list[_Branch]) -> list[tuple[str, str]]:
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


def _norms(g: _Graph, items: list[_Branch]) -> list[Norm]:
    roots = [g.root(b.add.stream) for b in items]
    norms: list[Norm] = []
    for b in items:
        nexts = [via for root, via in roots if root is b.add.node]
        # the last add of a stream: a norm after it inside its host is a post-LN norm,
        # unless the branch normalises its own input (pre-LN: that is the final norm)
        post = any(nexts) if nexts else not b.pre_norm() and b.post_norm_in_host()
        norms.append("post" if post else "pre" if b.pre_norm() else "none")
    return norms


def _inside(g: _Graph, branches: list[_Add]) -> frozenset[str]:
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
    g = _Graph(cap)
    adds, skips = _split(g, _candidates(g))
    items = [_Branch(g, a) for a in adds]
    branches = []
    for b, (module, output), norm in zip(items, _modules(g, items), _norms(g, items)):
        keys = _keys(b.add.node)
        add_path = g.paths[keys[-1]] if keys else ""
        branches.append(ResidualBranch(
            b.add.node.name, b.add.stream.name, b.add.branch.name, _source(b.add.node),
            _block(add_path, module, b.add.node.name), module, output, norm))
    found = tuple(branches)
    return ResidualStream(found, len({b.block for b in found}), _inside(g, adds),
                          tuple(_source(s.node) or s.node.name for s in skips),
                          _diagnostics(found))
