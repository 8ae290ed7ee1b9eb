"""How each parameter is consumed: the op, the argument slot, and its fan axes there.

Fan axes come from the consuming op, not from the module type: ``nn.Linear`` weights are
``[fan_out, fan_in]``, embeddings ``[fan_in (rows), fan_out]``, GPT-2's Conv1D (``addmm``)
``[fan_in, fan_out]``, an ``x @ W`` weight ``[..., fan_in, fan_out]``, an einsum operand's
contracted letters are its fan_in. Shape-only ops between the parameter and its consumer
(``W.t()``, ``W.view(...)``, casts) and rescales by one-element tensors (``W / sigma`` in
spectral norm, ``W * c``) are followed and the axes mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import fx

from ..capture.source import node_module, node_source
from ..dims.registry import op_name
from ..dims.rules.contract import einsum_letters

__all__ = ["Kind", "Use", "param_uses"]

Kind = Literal["weight", "bias", "norm", "embedding", "table"]

_FOLLOW = {"t", "transpose", "permute", "_to_copy", "to", "type_as", "contiguous", "clone",
           "detach", "alias", "numpy_T", "mT"}


@dataclass(frozen=True)
class Use:
    """One consumption of a parameter by a graph node."""

    node: str
    op: str
    slot: Kind
    fan_in: tuple[int, ...]  # parameter axes (empty for vector-like uses)
    fan_out: tuple[int, ...]
    module: str
    source: str


def param_uses(placeholder: fx.Node) -> list[Use]:
    ndim = placeholder.meta["val"].dim()
    uses: list[Use] = []
    _collect(placeholder, list(range(ndim)), uses, depth=0)
    return uses


def _collect(node: fx.Node, axis_map: list[int], uses: list[Use], depth: int) -> None:
    """``axis_map[i]`` = parameter axis that axis i of ``node`` comes from."""
    for user in node.users:
        name = op_name(user)
        if (name in _FOLLOW or _scalar_rescale(user, name, node)
                or _same_shape_view(user, name, node)) and depth < 6:
            mapped = _map_axes(user, name, axis_map)
            if mapped is not None:
                _collect(user, mapped, uses, depth + 1)
                continue
        slot, fan_in, fan_out = _slot(user, name, node, len(axis_map))
        src = node_source(user)
        uses.append(Use(user.name, name, slot,
                        tuple(axis_map[a] for a in fan_in), tuple(axis_map[a] for a in fan_out),
                        node_module(user), str(src) if src else ""))


def _same_shape_view(user: fx.Node, name: str, node: fx.Node) -> bool:
    """A flatten/view/reshape that leaves the shape as it was (spectral norm's flatten of a
    2-D weight)."""
    if name not in ("flatten", "view", "reshape", "_unsafe_view") or user.args[0] is not node:
        return False
    before, after = node.meta.get("val"), user.meta.get("val")
    return (hasattr(before, "shape") and hasattr(after, "shape")
            and tuple(before.shape) == tuple(after.shape))


def _scalar_rescale(user: fx.Node, name: str, node: fx.Node) -> bool:
    """``W / sigma`` or ``W * c`` with a one-element ``sigma``/``c`` (spectral norm, a
    hand-written multiplier): the consumer of the result consumes ``W``'s axes."""
    if name not in ("div", "mul") or len(user.args) != 2 or user.args[0] is not node and (
            name == "div" or user.args[1] is not node):
        return False
    other = user.args[1] if user.args[0] is node else user.args[0]
    if isinstance(other, (int, float)):
        return True
    val = other.meta.get("val") if isinstance(other, fx.Node) else None
    return val is not None and hasattr(val, "numel") and val.numel() == 1


def _map_axes(user: fx.Node, name: str, axis_map: list[int]) -> list[int] | None:
    n = len(axis_map)
    if name in ("t", "numpy_T", "mT") or (name == "transpose" and len(user.args) < 3):
        if n < 2:
            return list(axis_map)
        return axis_map[:-2] + [axis_map[-1], axis_map[-2]]
    if name == "transpose":
        a, b = user.args[1] % n, user.args[2] % n
        out = list(axis_map)
        out[a], out[b] = out[b], out[a]
        return out
    if name == "permute":
        return [axis_map[d % n] for d in user.args[1]]
    return list(axis_map)


def _slot(user: fx.Node, name: str, arg: fx.Node, n: int) -> tuple[Kind, tuple[int, ...], tuple[int, ...]]:
    pos = next((i for i, a in enumerate(user.args) if a is arg), None)
    if name == "linear":
        return ("weight", (1,), (0,)) if pos == 1 else ("bias", (), ())
    if name.startswith("conv") or name in ("convolution", "_convolution"):
        if pos != 1:
            return "bias", (), ()
        transposed = "transpose" in name or (name == "convolution" and bool(user.args[6]))
        spatial = tuple(range(2, n))
        return ("weight", (0,) + spatial, (1,)) if transposed else ("weight", (1,) + spatial, (0,))
    if name in ("embedding", "embedding_bag", "_embedding_bag") and pos == 0:
        return "embedding", (0,), (1,)
    if name in ("matmul", "mm", "bmm", "addmm", "baddbmm"):
        offset = 1 if name in ("addmm", "baddbmm") else 0
        if offset and pos == 0:
            return "bias", (), ()
        if n == 1:
            return "weight", (0,), ()
        left = pos == offset
        return ("weight", (n - 1,), (n - 2,)) if left else ("weight", (n - 2,), (n - 1,))
    if name == "einsum":
        return _einsum_slot(user, arg)
    if name in ("layer_norm", "rms_norm", "group_norm", "batch_norm", "native_layer_norm",
                "native_group_norm", "instance_norm", "_native_batch_norm_legit_functional",
                "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                "_fused_rms_norm"):
        return "norm", (), ()
    if name in ("add", "sub") and _is_contraction_output(user, arg):
        return "bias", (), ()
    return "table", (), ()


def _einsum_slot(user: fx.Node, arg: fx.Node) -> tuple[Kind, tuple[int, ...], tuple[int, ...]]:
    operands = list(user.args[1])
    ops, out = einsum_letters(user.args[0], [o.meta["val"].dim() for o in operands])
    labels = ops[operands.index(arg)]
    fan_in = tuple(i for i, c in enumerate(labels) if c not in out)
    fan_out = tuple(i for i, c in enumerate(labels) if c in out and not c.startswith("."))
    return "weight", fan_in, fan_out


def _is_contraction_output(add: fx.Node, param: fx.Node) -> bool:
    other = next((a for a in add.args if isinstance(a, fx.Node) and a is not param), None)
    return other is not None and op_name(other) in ("matmul", "mm", "bmm", "einsum", "linear",
                                                     "conv2d", "conv1d", "convolution")
