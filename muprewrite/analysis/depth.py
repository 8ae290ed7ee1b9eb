"""A base of another depth: pair it with the model, check the pairing, mark branch parameters.

The model and its base may differ in the number of repeated blocks (and in width). Their
parameters then differ in name (``blocks.7.*`` has no namesake in a 2-block base), so they
are paired by position instead (``dims/align.py``): block i of the model with a block of the
base, the stem and the head by name. A base that differs in anything else is refused with
the unmatched names, as before. Whether a depth difference is *allowed* is the rule's call
(a width-only rule refuses it when planning); the analysis only measures it, in block calls
per residual stream (``streams.py``: m_L per branch and per parameter inside branches).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..capture.export import Capture
from ..capture.source import node_source
from ..dims.align import Alignment, align_depths
from ..errors import UsageError, first_few
from .report import Diagnostic, ParamInfo
from .residual import ResidualStream
from .streams import Streams, find_streams, param_ratios, stream_ratios

__all__ = ["base_mismatch", "pair_with_base", "check_depths", "in_branches",
           "depth_init_diagnostics", "Depths", "measure_depths"]

DEPTH_INIT_TOLERANCE = 0.2  # |RMS / base RMS - 1| above which an equal-shape init is flagged


def base_mismatch(model: nn.Module, problems: list[str]) -> UsageError:
    return UsageError(f"base is not {type(model).__name__} at another width or depth: "
                      f"{first_few(problems, 10)}",
                      fix="build base with the same constructor and options (heads layout, "
                          "flags, ...), changing only the width and, under a depth rule such "
                          "as completep, the number of blocks")


def pair_with_base(model: nn.Module, cap: Capture, base: Capture,
                   renamed: list[str]) -> Alignment | None:
    """The pairing of a base with another number of blocks; None when none is needed (the
    same program at another width) or possible (then the width diff refuses the base)."""
    if not renamed and len(cap.graph.nodes) == len(base.graph.nodes):
        return None  # one program at two widths (or two programs: the width diff refuses)
    pairing = align_depths(cap, base)
    if pairing is None and renamed:  # names that differ only in layer indices: the ops differ
        raise UsageError(
            f"base is not {type(model).__name__} at another width or depth: its parameter "
            "names differ from the model's only in their layer indices, as another number of "
            f"blocks gives ({len(renamed)} differ, e.g. {renamed[0]}), but "
            "its forward runs other ops, so its blocks cannot be paired with the model's: "
            f"{_op_difference(cap, base)}",
            fix="build base with the same constructor and options (activation, dropout, "
                "flash attention, biases, ...), changing only the width and, under a depth "
                "rule such as completep, the number of blocks")
    return pairing


def _op_difference(cap: Capture, base: Capture) -> str:
    """The ops one capture runs and the other does not, with the line of the first."""
    def ops(c: Capture) -> dict[str, torch.fx.Node]:
        out: dict[str, torch.fx.Node] = {}
        for node in c.graph.nodes:
            if node.op == "call_function":
                out.setdefault(str(node.target), node)
        return out

    ours, theirs = ops(cap), ops(base)
    parts = []
    for who, mine, other in (("the model", ours, theirs), ("the base", theirs, ours)):
        only = [target for target in mine if target not in other]
        if only:
            src = node_source(mine[only[0]])
            parts.append(f"only {who} runs {', '.join(only[:3])}"
                         + (f" (first at {src})" if src is not None else ""))
    return "; ".join(parts) or ("both run the same ops, in another order or number per block "
                                "(a block that differs from the others, an extra call)")


def check_depths(model: nn.Module, ours: Streams, theirs: Streams, renamed: list[str]) -> None:
    """A pairing by position is only legitimate between different numbers of block calls."""
    depths = [len(c) for c in ours.calls]
    if depths == [len(c) for c in theirs.calls]:
        why = renamed or ["the two captures differ in length, but not in their number of "
                          f"residual block calls ({', '.join(map(str, depths)) or 0})"]
        raise base_mismatch(model, why)


@dataclass(frozen=True)
class Depths:
    """The model's residual streams measured against the base's: ``residuals`` with its
    depth counted in block calls (see ``streams.py``), the base's count, m_L per branch add
    (node name) and per parameter inside the branches."""

    residuals: ResidualStream
    depth_base: int | None
    branches: Mapping[str, float]
    params: Mapping[str, float]


def measure_depths(model: nn.Module, cap: Capture, residuals: ResidualStream,
                   base_cap: Capture | None, base_residuals: ResidualStream | None,
                   paired: bool, renamed: list[str]) -> Depths:
    ours = find_streams(cap, residuals)
    counted = dataclasses.replace(residuals, depth=ours.total)
    if base_cap is None or base_residuals is None:
        return Depths(counted, None, {}, {})
    theirs = find_streams(base_cap, base_residuals)
    if paired:
        check_depths(model, ours, theirs, renamed)
    if not ours.groups or not theirs.groups:
        return Depths(counted, theirs.total, {}, {})
    ratios = stream_ratios(type(model).__name__, ours, theirs)
    branches = {residuals.branches[i].add: ratios[s] for s, g in enumerate(ours.groups)
                for i in g}
    return Depths(counted, theirs.total, branches,
                  param_ratios(cap, residuals, ours, ratios))


def in_branches(params: Mapping[str, ParamInfo], depths: Depths) -> dict[str, ParamInfo]:
    """``params`` with ``in_branch`` and, with a base, ``m_depth`` (m_L of its stream)."""
    out = {}
    for name, info in params.items():
        inside = name in depths.residuals.inside
        ratio = depths.params.get(name, 1.0) if inside and depths.depth_base else None
        out[name] = dataclasses.replace(info, in_branch=inside, m_depth=ratio)
    return out


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().square().mean().sqrt()) if t.numel() else 0.0


def depth_init_diagnostics(model: nn.Module, base: nn.Module | None,
                           params: Mapping[str, ParamInfo],
                           pairing: Alignment | None) -> list[Diagnostic]:
    """Flag inits that already depend on depth (GPT-2's c_proj std 0.02/sqrt(2 n_layer),
    Megatron's scaled output init): a parameter inside a branch whose shape equals its base
    partner's but whose init RMS differs from it. A depth rule rescales it to the base's RMS
    (times the rule's width factor), so the branch multiplier does not stack on top of it."""
    if base is None or pairing is None:
        return []
    ours, theirs = dict(model.named_parameters()), dict(base.named_parameters())
    flagged = []
    for name, info in params.items():
        partner = theirs.get(pairing.params.get(name, name))
        param = ours.get(name)
        if (not info.in_branch or partner is None or param is None or param.is_meta
                or partner.is_meta or tuple(param.shape) != tuple(partner.shape)):
            continue
        mine, reference = _rms(param), _rms(partner)
        if reference and mine and abs(mine / reference - 1) > DEPTH_INIT_TOLERANCE:
            flagged.append(f"{name} ({mine / reference:.2f}x the base's)")
    if not flagged:
        return []
    return [Diagnostic("info", "depth-init", flagged[0].split(" ")[0],
                       f"{len(flagged)} parameter(s) inside residual branches have an init that "
                       f"depends on depth: {first_few(flagged, 5)}; a depth rule rescales them "
                       "to the base model's init scale, and the residual branch multiplier "
                       "takes the place of that depth scaling",
                       "nothing to do under completep / depth-mup; under a width-only rule "
                       "keep the base at the model's depth")]
