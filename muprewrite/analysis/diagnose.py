"""Turn solver notes, unhandled ops and base-width disagreements into Report diagnostics."""

from __future__ import annotations

from collections.abc import Iterable

from torch import fx

from ..capture.source import node_module, node_source
from ..dims import AxisGraph, Dims
from ..dims.constants import SizedConstant
from ..dims.registry import op_name
from ..dims.width_constants import WidthConstant
from .attention import AttentionPattern
from .diagnostic import Diagnostic

__all__ = ["solver_diagnostics", "base_disagreements", "routing_diagnostics",
           "constant_diagnostics", "width_constant_diagnostics", "attention_nodes",
           "accounting"]

_SEVERITY = {"ambiguous-split": "info", "square-map": "info", "isolated-axis": "info", "finite-constant": "info", "mark-overridden": "info",
             "width-constant": "warning", "width-output": "warning"}
_FIX = {
    "width-constant": "a constant built in forward is as wide as the model; pass base= to "
                      "measure instead of infer",
    "width-output": "the model returns a width-sized tensor (a backbone?); outputs were "
                    "treated as width where attention showed it; pass base= to be exact",
    "ambiguous-split": "pass base= (a model at another width) to measure which factor grows",
    "isolated-axis": "if this axis grows with width, pass base=",
    "square-map": "if that layer's width grows with the model, pass base=",
    "finite-constant": "if this size grows with the model's width, pass base=",
}


def _where(nodes: dict[str, fx.Node], name: str) -> str:
    node = nodes.get(name)
    src = node_source(node) if node is not None else None
    return f"{name} ({src.file}:{src.line})" if src else name


def solver_diagnostics(graph: fx.Graph, axes: AxisGraph, dims: Dims) -> list[Diagnostic]:
    nodes = {n.name: n for n in graph.nodes}
    out: list[Diagnostic] = []
    seen: set[tuple[str, str]] = set()
    for note in dims.notes:
        if (note.code, note.node) in seen:
            continue
        seen.add((note.code, note.node))
        out.append(Diagnostic(_SEVERITY.get(note.code, "info"), note.code,  # type: ignore[arg-type]
                              _where(nodes, note.node), note.message, _FIX.get(note.code, "")))
    for op, names in sorted(axes.unhandled.items()):
        if "treated as elementwise" in op:
            out.append(Diagnostic("info", "no-rule", _where(nodes, names[0]),
                                  f"op {op}: no dedicated rule ({len(names)} node(s)); its "
                                  "arguments broadcast to its output, so it was treated as "
                                  "elementwise"))
            continue
        out.append(Diagnostic("warning", "no-rule", _where(nodes, names[0]),
                              f"op {op} has no dimension rule ({len(names)} node(s)); axes "
                              "through it are not linked",
                              "pass base= so widths are measured, or report the op"))
    return out


def base_disagreements(single: Dims, measured: Dims, state: dict, sizes: dict) -> list[Diagnostic]:
    """Parameter axes where one capture's inference and the two-width diff differ."""
    out = []
    for axis, owner in state.items():
        if axis not in sizes or not sizes[axis]:
            continue  # a zero-size axis holds nothing to scale (noted as zero-size)
        inferred, actual = single.is_width(axis), measured.is_width(axis)
        if inferred and not actual:
            out.append(Diagnostic(
                "warning", "looks-fixed", f"{owner} axis {axis[1]}",
                f"size {single.sizes[axis]} is the same at both widths, yet nothing in the "
                "graph bounds it (a size rounded up to a multiple?)",
                "compare widths further apart so the diff sees it grow"))
        elif actual and not inferred:
            out.append(Diagnostic(
                "info", "inferred-finite", f"{owner} axis {axis[1]}",
                f"grows with width ({single.sizes[axis]} vs {sizes[axis]}) though a single "
                f"capture took it as finite ({single.why(axis)})"))
    return out


def routing_diagnostics(graph: fx.Graph, dims: Dims) -> list[Diagnostic]:
    """``topk`` along an axis a single capture took as width: a mixture-of-experts router's
    expert count looks like width unless ``base`` measures it."""
    nodes = {n.name: n for n in graph.nodes}
    out = []
    for node in graph.nodes:
        if node.op != "call_function" or op_name(node) != "topk":
            continue
        x = node.args[0]
        ndim = x.meta["val"].dim()
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", -1)
        axis = (x.name, int(dim) % ndim)
        if dims.is_width(axis):
            out.append(Diagnostic(
                "warning", "routing-width", _where(nodes, node.name),
                f"topk selects among {dims.sizes[axis]} along an axis taken as width; if it "
                "is a number of experts, the router's role is wrong",
                "pass base= (the model at another width) so the expert count is measured"))
    return out


def constant_diagnostics(graph: fx.Graph, found: list[SizedConstant]) -> list[Diagnostic]:
    """A weight reading a constant as wide as a width axis it meets (single capture only):
    name the parameter and the constant's line, and say both readings."""
    nodes = {n.name: n for n in graph.nodes}
    return [Diagnostic(
        "warning", "width-sized-constant", item.param,
        f"axis {item.axis} (size {item.size}) is finite only because of "
        f"{_constant_site(nodes.get(item.constant or ''))}, and the width axis it meets "
        f"at {_module_site(nodes.get(item.meets))} has the same size: if the constant is "
        "sized from the model's width (a timestep sinusoid as wide as the model), this axis "
        "grows too and the weight is hidden, not input; if it is a fixed size that merely "
        "equals this width (a 256-wide frequency embedding at width 256), the role is "
        "right. One capture cannot tell the two apart",
        "pass base= (a second width measures it)") for item in found]


def _constant_site(node: fx.Node | None) -> str:
    if node is None:
        return "a constant built in forward"
    src = node_source(node)
    made = f" made at {src.file}:{src.line} (`{src.code}`)" if src else ""
    return f"`{op_name(node)}`{made}"


def _module_site(node: fx.Node | None) -> str:
    if node is None:
        return "a weight"
    module = node_module(node)
    src = node_source(node)
    return (module or node.name) + (f" ({src.file}:{src.line})" if src else "")


_HOW = {"readout": "accounted: the readout multiplier is the rule's divided by {r:.6g}",
        "input": "accounted: the input multiplier is divided by {r:.6g}",
        "none": "scales no parameter's path: nothing to account for",
        "unaccounted": "not on a readout or an input: apply refuses it"}


def accounting(item: WidthConstant) -> str:
    """How a width-dependent constant is accounted for, in words."""
    return _HOW[item.account].format(r=item.ratio)


def width_constant_diagnostics(found: Iterable[WidthConstant]) -> list[Diagnostic]:
    """One diagnostic per width-dependent constant: where, both values, how accounted."""
    return [Diagnostic(
        "warning" if c.account == "unaccounted" else "info", "width-dependent-constant",
        c.source, f"a constant in forward is {c.model:.6g} here and {c.base:.6g} in the base "
        f"(ratio {c.ratio:.6g})" + (f", at {c.param!r}" if c.param else "") + "; "
        + accounting(c),
        "make the constant independent of the width, or move it onto the readout or the "
        "input" if c.account == "unaccounted" else "") for c in found]


def attention_nodes(sites: Iterable[AttentionPattern]) -> set[str]:
    """Nodes of attention logits (their scale belongs to the attention analysis)."""
    return {n for s in sites for n in (s.scale_node, s.logits, *s.path) if n}
