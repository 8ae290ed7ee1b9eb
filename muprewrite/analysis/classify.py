"""Stage 3 — classify: a pure function from (capture, solved dims) to per-parameter facts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import fx

from ..capture.export import Capture
from ..dims import Dims
from .report import Diagnostic, ParamInfo, Role
from .uses import Use, param_uses

__all__ = ["ParamFacts", "classify_params", "role_from_fans"]


@dataclass(frozen=True)
class ParamFacts:
    """What the model itself says of a parameter (independent of the graph)."""

    shape: tuple[int, ...]
    trainable: bool
    base_shape: tuple[int, ...] | None


def role_from_fans(width: set[int], fan_in: tuple[int, ...], fan_out: tuple[int, ...],
                   ndim: int) -> Role:
    if not width:
        return "fixed"
    if not fan_in and not fan_out:  # vector-like or free table
        return "hidden" if len(width) >= 2 else "input"
    wide_in = any(a in width for a in fan_in)
    wide_out = any(a in width for a in fan_out)
    if wide_in and wide_out:
        return "hidden"
    if wide_out:
        return "input"
    if wide_in:
        return "output"
    return "input"  # width only on batch-like axes of the parameter


def _vector_fans(use: Use, width: set[int], ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if use.fan_in or use.fan_out:
        return use.fan_in, use.fan_out
    if len(width) >= 2 and ndim >= 2:
        return (ndim - 1,), (ndim - 2,)
    return (), tuple(sorted(width))


def _primary(uses: list[Use]) -> Use:
    for slot in ("embedding", "weight"):
        for use in uses:
            if use.slot == slot:
                return use
    return uses[0]


def _mult(axes: tuple[int, ...], width: set[int], facts: ParamFacts) -> float | None:
    if facts.base_shape is None:
        return None
    m = 1.0
    for a in axes:
        if a in width and facts.base_shape[a]:
            m *= facts.shape[a] / facts.base_shape[a]
    return m


def _width_axes(nodes: list[fx.Node], dims: Dims, facts: ParamFacts) -> set[int]:
    if nodes:
        return {d for d in range(len(facts.shape)) if dims.is_width((nodes[0].name, d))}
    if facts.base_shape is not None:
        return {d for d, (a, b) in enumerate(zip(facts.shape, facts.base_shape)) if a != b}
    return set()


def classify_params(cap: Capture, dims: Dims, facts: Mapping[str, ParamFacts]
                    ) -> tuple[dict[str, ParamInfo], list[Diagnostic]]:
    """Role, kind, width and fan axes of every parameter, in ``named_parameters()`` order."""
    placeholders: dict[str, list[fx.Node]] = {}
    for node in cap.graph.nodes:
        if node.op == "placeholder" and node.name in cap.params:
            placeholders.setdefault(cap.params[node.name], []).append(node)
    infos: dict[str, ParamInfo] = {}
    diags: list[Diagnostic] = []
    for name, fact in facts.items():
        infos[name] = _classify_one(name, placeholders.get(name, []), dims, fact, diags)
    return infos, diags


def _classify_one(name: str, nodes: list[fx.Node], dims: Dims, fact: ParamFacts,
                  diags: list[Diagnostic]) -> ParamInfo:
    uses = [u for node in nodes for u in param_uses(node)]
    nodes = [n for n in nodes if n.users] or nodes
    width = _width_axes(nodes, dims, fact)
    ndim = len(fact.shape)
    if not uses:
        diags.append(Diagnostic("info", "unused", name, "no captured op uses this parameter; "
                                "left as it is", "if it is used on another code path, "
                                "capture with inputs that take that path"))
        return ParamInfo(name, fact.shape, "unused", "table", tuple(sorted(width)), (), (),
                         None, None, False, fact.trainable, ())
    primary = _primary(uses)
    fan_in, fan_out = _vector_fans(primary, width, ndim)
    role = role_from_fans(width, fan_in, fan_out, ndim)
    roles = {u.node: role_from_fans(width, *_vector_fans(u, width, ndim), ndim) for u in uses}
    tied = primary.slot == "embedding" and any(
        u.slot == "weight" and roles[u.node] == "output" for u in uses)
    if not tied and len(set(roles.values())) > 1:
        diags.append(Diagnostic("warning", "mixed-roles", name,
                                f"used in several roles {sorted(set(roles.values()))}; "
                                f"classified by its use at {primary.node}",
                                "give each use its own parameter, or check the rule"))
    return ParamInfo(name, fact.shape, role, primary.slot, tuple(sorted(width)), fan_in,
                     fan_out, _mult(fan_in, width, fact), _mult(fan_out, width, fact), tied,
                     fact.trainable, tuple(uses))
