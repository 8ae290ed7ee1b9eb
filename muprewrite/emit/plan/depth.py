"""What the emitted block needs under a depth rule, checked on the models at emission.

``depth_block``: the residual blocks (the analysis' blocks, layer index ``*``), checked to
count as the analysis counted them in the model and in the base, and the modules whose
classes hold an edited residual add. The emitted file counts blocks by module name and
measures one m_L: a block called more than once (one object applied in a loop, listed twice)
or a model with several residual streams (an encoder and a decoder, each its own depth) is
refused here, with ``muprewrite.apply`` as the fix (it counts calls, per stream). ``partners_of``: the pairing the emitted ``mup_init``
will make (``runtime._mup_pair``, run here on the meta-device models), refused where a
parameter has no partner. ``base_entries``: ``MUP_PARAMS`` keyed by the base's parameters,
so that a model of any depth finds each parameter's entry through its partner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ...analysis.report import ParamInfo, Report
from ...analysis.streams import find_streams
from ...capture.export import Capture
from ...errors import first_few
from ...rules import Rule
from ..errors import EmitError
from ..find.sites import BRANCH_ATTRIBUTE, Sites
from .entries import Entry, module_pattern
from .runtime import _mup_blocks, _mup_pair

if TYPE_CHECKING:
    from ..find.project import Project
    from .edits import Edits

__all__ = ["DepthBlock", "depth_block", "partners_of", "base_entries"]

_FIX = "use muprewrite.apply(model, ..., rule=...) at runtime for this model"


@dataclass(frozen=True)
class DepthBlock:
    """What the emitted file needs to measure m_L and to place the branch multipliers."""

    alpha: float
    blocks: tuple[str, ...]  # module patterns of the residual blocks
    hosts: tuple[str, ...]  # module patterns of the modules holding a residual add


def depth_block(model: nn.Module, base: nn.Module, report: Report, rule: Rule,
                project: Project, edits: Mapping[Path, Edits], sites: Sites,
                cap: Capture) -> DepthBlock:
    assert report.residuals is not None and rule.depth_alpha is not None
    branches = report.residuals.branches
    blocks = tuple(dict.fromkeys(module_pattern(b.block) for b in branches))
    streams = find_streams(cap, report.residuals).distinct
    if len(streams) > 1:
        firsts = [f"{paths[0]} .. {paths[-1]} ({len(paths)} block calls)" for paths in streams]
        raise EmitError(f"the model has {len(streams)} residual streams ({'; '.join(firsts)}), "
                        "each with its own depth m_L; the emitted file measures one m_L for "
                        "all its blocks, so a stack deepened alone would get a wrong branch "
                        "multiplier", where=branches[0].source, fix=_FIX)
    for net, counted, what in ((model, report.depth, "model"),
                               (base, report.depth_base, "base")):
        found = sum(map(len, _mup_blocks(net, blocks).values()))
        if counted is not None and found != counted:
            raise EmitError(f"the {what} runs {counted} residual block calls, but has {found} "
                            f"module(s) named like {', '.join(blocks)}: a block is called more "
                            "than once (one block object applied in a loop, listed twice, or "
                            "called again), so the emitted file, which counts blocks by module "
                            "name, could not measure m_L", where=branches[0].source, fix=_FIX)
    inside = [path for path in [*sites.multipliers, *sites.lookups]
              if module_pattern(path) != path]
    if inside:
        raise EmitError(f"the forward multiplier held by {inside[0]} sits in a repeated block; "
                        "the emitted file names it by its path, which a model of another depth "
                        "does not share", fix=_FIX)
    return DepthBlock(float(rule.depth_alpha), blocks, _hosts(model, project, edits))


def _hosts(model: nn.Module, project: Project, edits: Mapping[Path, Edits]) -> tuple[str, ...]:
    """Module patterns of every module whose class (or a base class) holds an edited add."""
    classes = {(file, cls) for file, fe in edits.items()
               for cls, attributes in fe.defaults.items() if BRANCH_ATTRIBUTE in attributes}
    out: dict[str, None] = {}
    for path, module in model.named_modules():
        for cls in type(module).__mro__:
            site = project.class_site(cls)
            if site is not None and (site[0], cls.__name__) in classes:
                out[module_pattern(path)] = None
    return tuple(out)


def partners_of(model: nn.Module, base: nn.Module, depth: DepthBlock) -> dict[str, str]:
    """Model parameter -> base parameter, as the emitted file pairs them."""
    partners = _mup_pair(model, base, depth.blocks)
    ours = dict(model.named_parameters())
    theirs = dict(base.named_parameters())
    unmatched = [n for n, ref in partners.items()
                 if ref not in theirs or ours[n].dim() != theirs[ref].dim()]
    unmatched += sorted(set(theirs) - set(partners.values()))
    if unmatched:
        raise EmitError(f"the emitted file would pair the model's residual blocks ("
                        f"{', '.join(depth.blocks)}) with the base's by position, but "
                        f"{len(unmatched)} parameter(s) find no partner: "
                        f"{first_few(unmatched, 5)}", fix=_FIX)
    return partners


def base_entries(report: Report, rule: Rule, partners: Mapping[str, str],
                 entry: Callable[[ParamInfo, Rule, bool], Entry | None]
                 ) -> dict[str, Entry | None]:
    """Base parameter -> the entry of the model parameters paired with it (all equal)."""
    out: dict[str, Entry | None] = {}
    for info in report:
        key, value = partners[info.name], entry(info, rule, True)
        if key in out and out[key] != value:
            raise EmitError(f"{info.name} and another parameter paired with the base's {key} "
                            "take different muP factors, so one entry of the emitted file "
                            "cannot serve both", fix=_FIX)
        out[key] = value
    return out
