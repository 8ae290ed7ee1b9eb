"""``analyze(model, example_inputs)``: capture -> dimensions -> classification -> Report.

>>> import torch
>>> from muprewrite import analyze
>>> mlp = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
...                           torch.nn.ReLU(), torch.nn.Linear(64, 3))
>>> report = analyze(mlp, torch.randn(2, 8))
>>> [report[f"{i}.weight"].role for i in (0, 2, 4)]
['input', 'hidden', 'output']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from ..capture.export import Capture, capture
from ..capture.input_sets import InputSet, input_sets
from ..capture.source import node_module, node_source
from ..capture.unwrap import unwrap
from ..dims import Dims, build_axis_graph, solve
from ..dims.align import Alignment, layer_pattern
from ..dims.constants import width_sized_constants
from ..dims.diff import base_sizes, with_base
from ..dims.width_constants import width_constants
from ..errors import CaptureError, MuprewriteError, UsageError
from .attention import (
    HeadsConvention,
    find_attention,
    heads_marks,
    refuse_unplanned_attention,
)
from .base_axes import check_base_axes
from .classify import ParamFacts, classify_params
from .depth import (
    base_mismatch,
    depth_init_diagnostics,
    in_branches,
    measure_depths,
    pair_with_base,
)
from .diagnose import (
    attention_nodes,
    base_disagreements,
    constant_diagnostics,
    routing_diagnostics,
    solver_diagnostics,
    width_constant_diagnostics,
)
from .empty import check_zero_size, zero_size_notes
from .guesses import guess_diagnostics
from .report import AttentionSite, BufferInfo, Diagnostic, Report
from .residual import find_residuals

__all__ = ["analyze", "analyze_with_capture"]


def analyze(model: nn.Module, example_inputs: Any = None, *, base: nn.Module | None = None,
            heads: HeadsConvention = "grow",
            progress: Callable[[str], None] | None = None) -> Report:
    """Classify every parameter of ``model`` as input / hidden / output / fixed.

    ``example_inputs``: positional args (a tensor or tuple), or ``((args...), {kwargs})``;
    or ``InputSets(set_1, set_2, ...)``, one per path of the forward (with and without
    targets, a flag), all captured in one graph; defaults to ``model.example_inputs()``
    when the model defines it. Tensors may be on the
    meta device; nothing is allocated. ``base``: the same architecture at another width
    (meta device is fine): every axis is then measured by diffing the two captures.
    ``heads``: without ``base``, which side of a (heads, d_head) split grows — ``"grow"``
    (more heads, fixed d_head: DiT S/B/L/XL, Llama, SD3) or ``"fixed"`` (d_head grows).
    ``progress``: called with a short message as each stage starts (the CLI prints them).
    """
    return analyze_with_capture(model, example_inputs, base=base, heads=heads,
                                progress=progress)[0]


def analyze_with_capture(model: nn.Module, example_inputs: Any = None, *,
                         base: nn.Module | None = None, heads: HeadsConvention = "grow",
                         progress: Callable[[str], None] | None = None
                         ) -> tuple[Report, Capture]:
    """``analyze`` plus the capture it came from (the rewriter locates call sites in it)."""
    _check_arguments(model, base, heads, progress)
    say = progress or (lambda message: None)
    model, base = unwrap(model), unwrap(base) if base is not None else None
    check_zero_size(model, type(model).__name__)
    if base is not None:
        check_zero_size(base, f"base {type(base).__name__}")
    renamed = _check_base(model, base) if base is not None else []
    if example_inputs is None:
        if not callable(getattr(model, "example_inputs", None)):
            raise MuprewriteError(f"no example inputs for {type(model).__name__}",
                                  fix="pass example_inputs=(tensor, ...) or define "
                                      "model.example_inputs()")
        example_inputs = model.example_inputs()  # type: ignore[operator]  # checked callable above
    sets = input_sets(example_inputs)
    paths = f" on {len(sets)} input sets" if len(sets) > 1 else ""
    say(f"capturing {type(model).__name__} with torch.export{paths}")
    cap = capture(model, sets)
    extra = [_no_output(model)] if not cap.user_outputs and base is None else []
    say(f"building the dimension graph ({len(cap.graph.nodes)} nodes)")
    axes = build_axis_graph(cap)
    sites = find_attention(cap.graph)
    marks = heads_marks(sites, heads)
    dims = solve(axes, marks)
    diags = solver_diagnostics(cap.graph, axes, dims) + routing_diagnostics(cap.graph, dims)
    if base is None:
        diags += constant_diagnostics(cap.graph, width_sized_constants(cap, axes, dims, marks))
    sizes: dict = {}
    residuals = find_residuals(cap)
    base_cap: Capture | None = None
    pairing: Alignment | None = None
    if base is not None:
        say(f"capturing base {type(base).__name__} to measure widths")
        base_cap = _capture_base(base, sets)
        pairing = pair_with_base(model, cap, base_cap, renamed)
        sizes, aligned = base_sizes(cap, base_cap, pairing)
        if aligned:  # else the two programs differ: refused below
            check_base_axes(model, axes, dims, sizes)
        diags = [d for d in diags if d.code == "no-rule"]
        if all(dims.sizes[axis] == size for axis, size in sizes.items() if axis in dims.classes):
            # the base has the model's width (the proxy itself, or a base of another depth):
            # no axis is measured to grow, so which axes are width-like comes from the
            # single-capture solver; every multiplier is 1, but the roles (which matrices
            # Muon steps, which are vector-like, which are inside branches) must be the
            # ones a wider model gets
            measured = dims
            diags.append(_same_width(heads))
        else:
            measured = with_base(dims, sizes)
            diags += base_disagreements(dims, measured, axes.state, sizes)
        if not aligned:
            raise _unaligned(model, cap, base_cap)
        dims = measured
    depths = measure_depths(model, cap, residuals, base_cap,
                            find_residuals(base_cap) if base_cap is not None else None,
                            pairing is not None, renamed)
    residuals = depths.residuals  # its depth counted in block calls, per residual stream
    refuse_unplanned_attention(cap.graph, dims.is_width)
    say("classifying parameters")
    facts = _facts(model, base, pairing.params if pairing is not None else {})
    params, param_diags = classify_params(cap, dims, facts)
    if base is None:
        param_diags += guess_diagnostics(
            cap, axes, dims, marks, sites, params,
            [d.where for d in diags if d.code == "width-sized-constant"])
    params = in_branches(params, depths)
    found = tuple(width_constants(
        cap, base_cap, pairing, {n: p.role for n, p in params.items()},
        [n for n, p in params.items() if p.tied], attention_nodes(sites))
        ) if base_cap is not None else ()
    param_diags += width_constant_diagnostics(found)
    report = Report(
        model=type(model).__name__,
        mode="base" if base is not None else "single",
        heads=heads,
        params=MappingProxyType(params),
        attention=tuple(_site(cap, dims, s, sizes) for s in sites),
        buffers=_buffers(cap, dims),
        diagnostics=tuple(diags + param_diags + extra + zero_size_notes(model)
                          + list(residuals.diagnostics)
                          + depth_init_diagnostics(model, base, params, pairing)),
        residuals=residuals,
        depth_base=depths.depth_base,
        branch_depths=MappingProxyType(dict(depths.branches)),
        base_names=MappingProxyType(dict(pairing.params) if pairing is not None else {}),
        width_constants=found,
    )
    return report, cap


def _same_width(heads: str) -> Diagnostic:
    return Diagnostic("info", "base-same-width", "",
                      "the base has the model's width: every width multiplier is 1, and the "
                      f"roles come from this one capture (heads={heads!r}), as without base",
                      "to check them, analyze a wider model against this base")


def _check_arguments(model: nn.Module, base: nn.Module | None, heads: str,
                     progress: Callable[[str], None] | None) -> None:
    for what, value, example in (("model", model, "analyze(MyModel(width=256), inputs)"),
                                 ("base", base, "base=MyModel(width=64)")):
        if value is not None and not isinstance(value, nn.Module):
            raise UsageError(f"{what} must be an nn.Module, got {type(value).__name__}",
                             fix=f"pass the {what} itself: {example}")
    if heads not in ("grow", "fixed"):
        raise MuprewriteError(f"heads must be 'grow' or 'fixed', got {heads!r}",
                              fix="heads='grow' if width grows by adding heads, "
                                  "'fixed' if d_head grows")
    if progress is not None and not callable(progress):
        raise UsageError(f"progress must be a function of one message, got {progress!r}",
                         fix="progress=print, or leave it out")


def _check_base(model: nn.Module, base: nn.Module) -> list[str]:
    """``base`` is the same architecture: the same parameter names with the same number of
    axes (only sizes may differ); a parameter with no partner in base has no factor. Names
    that differ are returned, not refused, when the count of repeated blocks differs (a base
    of another depth, paired by position after capture, see dims/align.py)."""
    ours = {n: p.dim() for n, p in model.named_parameters()}
    theirs = {n: p.dim() for n, p in base.named_parameters()}
    problems = [f"{n!r} is not in base" for n in ours if n not in theirs]
    problems += [f"base has {n!r}, the model does not" for n in theirs if n not in ours]
    problems += [f"{n!r} has {ours[n]} axes, {theirs[n]} in base" for n in ours
                 if n in theirs and ours[n] != theirs[n]]
    if problems and not _depth_names_only(ours, theirs):
        raise base_mismatch(model, problems)
    return problems


def _capture_base(base: nn.Module, sets: list[InputSet]) -> Capture:
    try:
        return capture(base, sets)
    except CaptureError as exc:
        raise CaptureError(f"base: {exc.message}", where=exc.where,
                           fix=f"{exc.fix}; the example inputs must fit base too (none of "
                               "their axes may grow with width)") from exc


def _no_output(model: nn.Module) -> Diagnostic:
    return Diagnostic("warning", "no-output", f"{type(model).__name__}.forward",
                      "the forward returns no tensor, so nothing marks the output axes "
                      "finite: a readout looks like a hidden or input layer",
                      "return the model's output tensor(s) (a tuple or dict of tensors is "
                      "fine), or pass base= so widths are measured")


def _unaligned(model: nn.Module, cap: Capture, base_cap: Capture) -> UsageError:
    """The base ran another path than the model (a flag, a width-dependent branch): widths
    measured between two different programs would be guesses, so refuse."""
    ours, theirs = list(cap.graph.nodes), list(base_cap.graph.nodes)
    index = next((i for i, (a, b) in enumerate(zip(ours, theirs))
                  if a.op != b.op or a.target != b.target), min(len(ours), len(theirs)))
    where = ""
    for label, nodes in (("model", ours), ("base", theirs)):
        if index < len(nodes):
            src = node_source(nodes[index])
            where += f"{label}: {nodes[index].target} at {src or '?'}; "
    return UsageError(f"base runs another forward than {type(model).__name__}: the two "
                      f"captures part at op {index} ({where.rstrip('; ') or 'one ends first'})",
                      fix="build base with the same options (flags such as flash/fused "
                          "attention, depth, dropout), changing only the width")


def _depth_names_only(ours: dict[str, int], theirs: dict[str, int]) -> bool:
    """Whether the names differ only in integer path components (layer indices), as a base
    with another number of blocks does."""
    return ({layer_pattern(n): d for n, d in ours.items()}
            == {layer_pattern(n): d for n, d in theirs.items()} and set(ours) != set(theirs))


def _facts(model: nn.Module, base: nn.Module | None,
           paired: Mapping[str, str]) -> dict[str, ParamFacts]:
    base_shapes = {n: tuple(p.shape) for n, p in base.named_parameters()} if base else {}
    return {
        name: ParamFacts(tuple(p.shape), p.requires_grad,
                         base_shapes.get(paired.get(name, name)) if base is not None else None)
        for name, p in model.named_parameters()
    }


def _site(cap: Capture, dims: Dims, s, sizes: dict) -> AttentionSite:  # type: ignore[no-untyped-def]
    nodes = {n.name: n for n in cap.graph.nodes}
    node, query = nodes[s.node], nodes[s.q[0]]
    src = node_source(node)
    heads = s.heads[0] if s.heads else None
    return AttentionSite(
        node=s.node, kind=s.kind, module=node_module(node), source=str(src) if src else "",
        d_head=dims.sizes[s.q], heads=dims.sizes[heads] if heads else None,
        d_head_grows=dims.is_width(s.q), heads_grow=dims.is_width(heads) if heads else None,
        scale=s.scale, scale_node=s.scale_node, d_head_base=sizes.get(s.q),
        d_head_axis=s.q[1] - query.meta["val"].dim())


def _buffers(cap: Capture, dims: Dims) -> tuple[BufferInfo, ...]:
    out = []
    for node in cap.graph.nodes:
        if node.op == "placeholder" and node.name in cap.buffers:
            shape = tuple(int(s) for s in node.meta["val"].shape)
            width = tuple(d for d in range(len(shape)) if dims.is_width((node.name, d)))
            out.append(BufferInfo(cap.buffers[node.name], shape, width))
    return tuple(out)
