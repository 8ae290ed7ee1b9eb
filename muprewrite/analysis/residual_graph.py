"""The walks on one captured graph that finding residual streams needs (residual.py).

Ancestry by value, regions between a stream and its branch, module calls and their outputs,
norms (aten ops or hand-written norm modules), and per branch add the derivations of its
module and its norm. Why each walk stops where it does: docs/decisions/residual.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import fx

from ..dims.registry import op_name

if TYPE_CHECKING:
    from ..capture.export import Capture

__all__ = ["ADDS", "Add", "Branch", "Graph", "module_keys", "node_op", "shape_of"]

ADDS = frozenset({"add", "add_"})
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


def node_op(node: fx.Node) -> str:
    return op_name(node) if node.op == "call_function" else ""


def _inputs(node: fx.Node) -> list[fx.Node]:
    return [] if node_op(node) in _VALUE_FREE else node.all_input_nodes


def shape_of(node: object) -> tuple[int, ...] | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def module_keys(node: fx.Node) -> list[str]:
    return list(node.meta.get("nn_module_stack") or {})


def _first(node: fx.Node) -> fx.Node | None:
    arg = node.args[0] if node.args else None
    return arg if isinstance(arg, fx.Node) else None


@dataclass(frozen=True)
class Add:
    node: fx.Node
    stream: fx.Node
    branch: fx.Node
    origin: fx.Node  # what the branch is computed from: the stream, or for a parallel
    # branch (``x + f(x) + g(x)``: the second add's stream is the first add) its stream


class Graph:
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

    def region(self, add: Add) -> set[fx.Node]:
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
        return any(u.op == "output" or key not in module_keys(u) for u in _live_users(node))

    def call_norm_input(self, key: str) -> fx.Node | None:
        """The one activation input of a call that normalises it (hand-written norms)."""
        if key not in self._norm_input:
            members = self.calls[key]
            inside = set(members)
            outer = {p for n in members for p in n.all_input_nodes
                     if p not in inside and p.op != "get_attr" and p.name not in self.weights}
            ops = {node_op(n) for n in members}
            x = next(iter(outer)) if len(outer) == 1 else None
            normalises = ops <= _NORM_BODY and bool(ops & _REDUCTIONS) and bool(ops & _RESCALES)
            self._norm_input[key] = x if normalises and x is not None else None
        return self._norm_input[key]

    def norm_input(self, node: fx.Node) -> fx.Node | None:
        """``x`` when ``node`` is ``norm(x)``: an aten norm op, or a norm module's output."""
        if node_op(node) in _NORMS:
            return _first(node)
        keys = module_keys(node)
        if keys and self.leaves(node, keys[-1]):
            x = self.call_norm_input(keys[-1])
            return x if x is not None and shape_of(x) == shape_of(node) else None
        return None

    def root(self, node: fx.Node) -> tuple[fx.Node, bool]:
        """Walk back through views, casts, dropout and norms; (root, passed a norm)."""
        via_norm = False
        while True:
            prev = _first(node) if node_op(node) in _PASS else None
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
                if node_op(u) in _PASS and u not in out:
                    out.add(u)
                    stack.append(u)
        return out

    def is_norm_of(self, user: fx.Node, values: set[fx.Node]) -> bool:
        if node_op(user) in _NORMS:
            return _first(user) in values
        keys = module_keys(user)
        return bool(keys) and self.call_norm_input(keys[-1]) in values


class Branch:
    """Derivations for one branch add."""

    def __init__(self, g: Graph, add: Add) -> None:
        self.g, self.add = g, add
        self.host = set(module_keys(add.node))

    @cached_property
    def region(self) -> set[fx.Node]:
        return self.g.region(self.add)

    def linear_input(self, node: fx.Node) -> fx.Node | None:
        """The operand ``node`` is linear in, along the branch; None if it is not linear."""
        op = node_op(node)
        if op == "getitem":
            src = _first(node)
            if src is not None and node_op(src) in _LINEAR and (
                    node_op(src) != "native_dropout" or node.args[1] == 0):
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
        return next((k for k in module_keys(node) if k not in self.host and self.g.leaves(node, k)),
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
        while node_op(base) in _PASS and (prev := _first(base)) is not None:
            base = prev
        values = self.g.passed(base)
        return any(u in self.region and u not in values and self.g.is_norm_of(u, values)
                   for v in values for u in v.users)

    def post_norm_in_host(self) -> bool:
        """Every consumer of the add's output is a norm run inside the add's host module."""
        keys = module_keys(self.add.node)
        if not keys or not self.g.paths.get(keys[-1]):
            return False
        values = self.g.passed(self.add.node)
        users = [u for v in values for u in v.users if u not in values]
        return bool(users) and all(self.g.is_norm_of(u, values) and keys[-1] in module_keys(u)
                                   for u in users)


def _live_users(node: fx.Node) -> list[fx.Node]:
    """Users that read the value (not export's checks, shape-only ops, a dropout's mask)."""
    users = [u for u in node.users if node_op(u) not in _CHECKS | _VALUE_FREE]
    if node_op(node) == "native_dropout":
        return [u for u in users if u.args[1:2] == (0,)]
    return users
