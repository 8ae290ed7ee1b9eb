"""Width-dependent constants in the user's forward, found by diffing two captures.

T5 scales its tied readout by ``d_model ** -0.5``; an embedding may be multiplied by
``self.width ** 0.5``. Each is a Python float in the graph, so base and model captures hold
different scalars at the same op. μP's factors are ratios to the base, so the model's own
ratio ``r = c_model / c_base`` is already part of the scaling: the tool applies
``rule factor / r`` there, so that the total is the rule's factor (a readout's 1/m).

Stages: (1) pair the nodes of the two captures (same program, or the depth alignment);
(2) at every ``mul`` / ``div`` by a Python scalar, compare the scalars; (3) trace the
scaled tensor to the weight it feeds or comes from, through views and other scalar
multiplies: a readout use (an output weight, or a tied weight's readout; the constant on its
input or on its output, as a hand-written ``out(h) * base_width / width``) or an input use
(the output of an embedding lookup or an input weight) is *accounted*; a constant that scales no
parameter's path (sinusoid frequencies ``arange(half) / half``) needs nothing; any other is
*unaccounted* and ``apply`` refuses it, naming the line. Constants at or flowing into an
attention logit (``q * scale`` before ``q @ k^T``) are the attention analysis's, not listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from torch import fx

from ..capture.export import Capture
from .align import Alignment
from .registry import op_name

__all__ = ["WidthConstant", "width_constants"]

Account = Literal["readout", "input", "none", "unaccounted"]

_SCALE_OPS = {"mul": False, "mul_": False, "div": True, "div_": True}
_THROUGH = {"view", "reshape", "_unsafe_view", "permute", "transpose", "t", "expand",
            "clone", "contiguous", "_to_copy", "to", "dropout", "native_dropout", "unsqueeze",
            "squeeze", "flatten", "alias", "type_as", "slice", "select", "getitem"}
_USES = {"linear", "embedding", "matmul", "mm", "bmm", "addmm", "einsum", "conv1d", "conv2d"}


@dataclass(frozen=True)
class WidthConstant:
    """A scalar that differs between the model's and the base's capture at one op.

    ``factor``: the multiplier it applies (its reciprocal for a divisor), in the model and
    in the base; ``param`` / ``use``: the weight whose readout or input it scales
    (``account`` says which; ``correction`` = base / model factor is what the tool applies
    there on top of the rule)."""

    node: str
    source: str
    model: float
    base: float
    account: Account
    param: str | None = None
    use: str | None = None  # graph node of the parameter's use

    @property
    def ratio(self) -> float:
        return self.model / self.base

    @property
    def correction(self) -> float:
        return self.base / self.model


def width_constants(cap: Capture, base: Capture, alignment: Alignment | None,
                    roles: Mapping[str, str], tied: Iterable[str] = (),
                    skip: Iterable[str] = ()) -> list[WidthConstant]:
    """Every ``mul`` / ``div`` by a scalar that differs between ``cap`` and ``base``.
    ``roles``: parameter -> role; ``tied``: tied embedding/readout weights; ``skip``: nodes
    that belong to attention logits."""
    tied = set(tied)
    skipped = set(skip)
    out = []
    for ours, theirs in _pairs(cap, base, alignment):
        if ours.op != "call_function" or ours.name in skipped or _reaches(ours, skipped):
            continue
        divides = _SCALE_OPS.get(op_name(ours))
        if divides is None:
            continue
        for position, (x, y) in enumerate(zip(ours.args, theirs.args)):
            if not (_scalar(x) and _scalar(y)) or x == y or not x or not y:
                continue
            a, b = float(x), float(y)  # type: ignore[arg-type]  # checked by _scalar
            mine, its = (1.0 / a, 1.0 / b) if divides and position == 1 else (a, b)
            tensor = next((x for x in ours.args if isinstance(x, fx.Node)), None)
            out.append(_traced(cap, ours, tensor, mine, its, roles, tied))
    return out


def _reaches(node: fx.Node, targets: set[str], steps: int = 8) -> bool:
    """Whether ``node`` flows into one of ``targets`` (attention logits: a ``q * scale``
    before ``q @ k^T``) within a few ops."""
    frontier = [node]
    for _ in range(steps):
        frontier = [u for n in frontier for u in n.users]
        if any(u.name in targets for u in frontier):
            return True
    return False


def _scalar(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pairs(cap: Capture, base: Capture, alignment: Alignment | None
           ) -> list[tuple[fx.Node, fx.Node]]:
    ours, theirs = list(cap.graph.nodes), list(base.graph.nodes)
    if alignment is not None:
        named = {n.name: n for n in theirs}
        return [(n, named[alignment.nodes[n.name]]) for n in ours
                if alignment.nodes.get(n.name) in named]
    if len(ours) == len(theirs) and all(a.op == b.op and a.target == b.target
                                        for a, b in zip(ours, theirs)):
        return list(zip(ours, theirs))
    return []


def _source(node: fx.Node) -> str:
    from ..capture.source import node_source

    src = node_source(node)
    return str(src) if src is not None else node.name


def _traced(cap: Capture, node: fx.Node, tensor: fx.Node | None, model: float, base: float,
            roles: Mapping[str, str], tied: set[str]) -> WidthConstant:
    found = _forward(cap, node) or _backward(cap, tensor)
    if found is not None:
        param, use, reads = found
        role = roles.get(param, "")
        readout = role == "output" or param in tied and _tied_readout(cap, use)
        if readout:  # on the readout's input or its output: a readout multiplier
            return WidthConstant(node.name, _source(node), model, base, "readout", param, use)
        if reads == "from" and (role == "input" or param in tied and not readout):
            return WidthConstant(node.name, _source(node), model, base, "input", param, use)
        return WidthConstant(node.name, _source(node), model, base, "unaccounted", param, use)
    if tensor is not None and not _depends_on_params(cap, tensor):
        return WidthConstant(node.name, _source(node), model, base, "none")
    return WidthConstant(node.name, _source(node), model, base, "unaccounted")


def _param_of(cap: Capture, node: fx.Node) -> str | None:
    """The parameter a weight-like op reads as its weight (through a transpose or view)."""
    if op_name(node) not in _USES:
        return None
    for arg in node.args[1:] if op_name(node) != "embedding" else node.args[:1]:
        while isinstance(arg, fx.Node) and op_name(arg) in _THROUGH and arg.op != "placeholder":
            arg = arg.args[0]
        if isinstance(arg, fx.Node) and arg.op == "placeholder" and arg.name in cap.params:
            return cap.params[arg.name]
    return None


def _forward(cap: Capture, node: fx.Node) -> tuple[str, str, str] | None:
    """The weight the scaled tensor flows into, through views and scalar multiplies."""
    current = node
    for _ in range(16):
        users = list(current.users)
        if len(users) != 1:
            return None
        (user,) = users
        param = _param_of(cap, user)
        if param is not None:
            return param, user.name, "into"
        if op_name(user) not in _THROUGH and op_name(user) not in _SCALE_OPS:
            return None
        current = user
    return None


def _backward(cap: Capture, tensor: fx.Node | None) -> tuple[str, str, str] | None:
    """The weight that produced the scaled tensor, through views and scalar multiplies."""
    current = tensor
    for _ in range(16):
        if current is None or current.op != "call_function":
            return None
        param = _param_of(cap, current)
        if param is not None:
            return param, current.name, "from"
        if op_name(current) not in _THROUGH and op_name(current) not in _SCALE_OPS:
            return None
        current = next((a for a in current.args if isinstance(a, fx.Node)), None)
    return None


def _tied_readout(cap: Capture, use: str) -> bool:
    """A tied weight's readout: a weight-like op other than a lookup."""
    node = next(n for n in cap.graph.nodes if n.name == use)
    return op_name(node) != "embedding"


def _depends_on_params(cap: Capture, tensor: fx.Node) -> bool:
    seen, stack = set(), [tensor]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n.op == "placeholder" and (n.name in cap.params):
            return True
        stack.extend(a for a in n.all_input_nodes)
    return False
