"""Single-capture guesses, named per parameter (issue 24 item 4).

Without a base, ``analyze`` infers which axes grow. Where that inference is a guess that
decides a parameter's role, the parameter gets a ``warning`` naming it and the assumption
(the table then says "pass --base to be sure"). Stages, each a pure function of the capture,
the solved dimensions and the classified parameters:

1. **constant-pinned**: an axis a weight produces is finite only through a constant made in
   forward (a Mamba scan state ``x.new_zeros(b, d_inner, d_state)``): every parameter with an
   axis that rests on that constant is named (``dims/constants.py``);
2. **heads convention**: a parameter axis that *is* the number of heads at an attention
   site (a Swin relative-position bias table ``(2w-1, heads)``, per-head gates) is width or
   finite only by the heads convention;
3. **free tables**: a parameter used by no weight-like op (a Perceiver latent array
   ``(latents, width)``) with two or more axes taken as width because nothing bounds them: a
   count of latents, tokens or registers looks like width;
4. **routers**: ``topk`` along an axis taken as width (a mixture-of-experts router): the
   parameter producing that axis is named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import fx

from ..capture.export import Capture
from ..capture.source import node_source
from ..dims import AxisGraph, Dims
from ..dims.constants import SizedConstant, pinned_by_constants
from ..dims.registry import op_name
from ..dims.solve import Mark
from .attention import AttentionPattern
from .report import Diagnostic, ParamInfo

__all__ = ["guess_diagnostics"]

_FIX = "pass --base (base= in Python: the model at another width) to be sure"


def guess_diagnostics(cap: Capture, graph: AxisGraph, dims: Dims, marks: Iterable[Mark],
                      sites: Iterable[AttentionPattern], params: Mapping[str, ParamInfo],
                      named: Iterable[str] = ()) -> list[Diagnostic]:
    """One warning per parameter whose single-capture role rests on a guess (see the module
    docstring); parameters in ``named`` already carry such a warning."""
    axes = _param_axes(cap)
    heads = {dims.classes[a] for site in sites for a in site.heads if a in dims.classes}
    out: list[Diagnostic] = []
    seen = set(named)
    for found in (_pinned(cap, graph, dims, marks, params), _heads(axes, dims, heads, params),
                  _free_tables(axes, dims, params), _routers(cap, axes, dims, params)):
        for d in found:
            if d.where not in seen:
                seen.add(d.where)
                out.append(d)
    return out


def _param_axes(cap: Capture) -> dict[str, list[tuple[str, int]]]:
    """parameter -> its axes in the graph (those of its first placeholder)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for node in cap.graph.nodes:
        name = cap.params.get(node.name) if node.op == "placeholder" else None
        if name is not None and name not in out:
            out[name] = [(node.name, d) for d in range(node.meta["val"].dim())]
    return out


def _site(node: fx.Node | None) -> str:
    src = node_source(node) if node is not None else None
    return f"{src.file}:{src.line} (`{src.code}`)" if src else (node.name if node else "?")


def _pinned(cap: Capture, graph: AxisGraph, dims: Dims, marks: Iterable[Mark],
            params: Mapping[str, ParamInfo]) -> list[Diagnostic]:
    nodes = {n.name: n for n in cap.graph.nodes}
    found: list[SizedConstant] = pinned_by_constants(cap, graph, dims, marks)
    return [Diagnostic(
        "warning", "constant-pinned", item.param,
        f"axis {item.axis} (size {item.size}) is finite only because a constant made at "
        f"{_site(nodes.get(item.constant or ''))} has that size, and the same constant fixes "
        f"the output size of {_site(nodes.get(item.meets))}: if the constant is sized from "
        "the model's config (a scan state of d_inner channels), this axis grows with width "
        f"and the role {params[item.param].role!r} is a guess", _FIX)
        for item in found if item.param in params]


def _heads(axes: Mapping[str, list[tuple[str, int]]], dims: Dims, heads: set[int],
           params: Mapping[str, ParamInfo]) -> list[Diagnostic]:
    out = []
    for name, info in params.items():
        for axis in axes.get(name, []):
            why = dims.why(axis)
            if dims.classes[axis] in heads and why.startswith("heads convention"):
                grows = "width" if dims.is_width(axis) else "finite"
                out.append(Diagnostic(
                    "warning", "heads-guess", name,
                    f"axis {axis[1]} (size {dims.sizes[axis]}) is the number of heads of an "
                    f"attention site, taken as {grows} only by the {why}: if the other of "
                    f"heads and d_head grows, the role {info.role!r} is wrong",
                    f"{_FIX}, or --heads grow/fixed to say which grows"))
                break
    return out


def _free_tables(axes: Mapping[str, list[tuple[str, int]]], dims: Dims,
                 params: Mapping[str, ParamInfo]) -> list[Diagnostic]:
    out = []
    for name, info in params.items():
        if info.role == "unused" or any(u.fan_in or u.fan_out for u in info.uses):
            continue  # read by a weight-like op: its fans are measured, not guessed
        unbounded = [a for a in axes.get(name, []) if dims.is_width(a)
                     and "bounded by nothing finite" in dims.why(a)]
        if len(info.width_axes) >= 2 and unbounded:
            out.append(Diagnostic(
                "warning", "free-table-guess", name,
                f"a free table whose axes {list(info.width_axes)} are all taken as width, "
                f"axis {unbounded[0][1]} (size {dims.sizes[unbounded[0]]}) only because "
                f"nothing bounds it: if it is a count (latents, tokens, registers), it is "
                f"finite and the role is input, not {info.role!r}", _FIX))
    return out


def _routers(cap: Capture, axes: Mapping[str, list[tuple[str, int]]], dims: Dims,
             params: Mapping[str, ParamInfo]) -> list[Diagnostic]:
    chosen: dict[int, fx.Node] = {}
    for node in cap.graph.nodes:
        if node.op != "call_function" or op_name(node) != "topk":
            continue
        x = node.args[0]
        if not isinstance(x, fx.Node):
            continue
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", -1)
        axis = (x.name, int(dim) % x.meta["val"].dim())  # type: ignore[call-overload]
        if dims.is_width(axis):
            chosen.setdefault(dims.classes[axis], node)
    out = []
    for name, info in params.items():
        hit = next((chosen[dims.classes[a]] for a in axes.get(name, [])
                    if dims.classes[a] in chosen), None)
        if hit is not None:
            out.append(Diagnostic(
                "warning", "routing-width", name,
                f"its output picks among {info.shape} by topk at {_site(hit)} along an "
                f"axis taken as width; if that axis is a number of experts, it is finite "
                f"and the role is output, not {info.role!r}", _FIX))
    return out
