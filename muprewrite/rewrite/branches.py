"""Stage 4b — residual branches: x + m_L^-alpha * F(x) under a depth rule.

The analysis finds each residual branch and the module whose output the branch operand is a
linear function of (gates, layer-scale, dropout, drop-path only multiply it): multiplying that
module's output by m_L^-alpha equals multiplying the branch at the add. ``apply`` does it
with a forward hook on the module: ``state_dict`` keys do not change, ``torch.compile``
traces through the hook, FSDP2/DDP wrap the module as before. A branch that ends in an op of
the block's own forward (``x + F.gelu(self.fc(x))``) has no such module: refused, with the
line of the add and the fix.

m_L is that of the branch's own residual stream (``Report.branch_depths``, counted in block
calls, see ``analysis/streams.py``): a hook runs once per call, so a block object applied L
times is scaled once per call; one module object listed under several paths gets one hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..analysis.report import Report
from ..errors import MuprewriteError
from ..rules import Rule, RuleError

__all__ = ["BranchEdit", "branch_edits", "install_branches", "check_depth_rule"]

HOOK_ATTR = "_muprewrite_branch_factor"


@dataclass(frozen=True)
class BranchEdit:
    """Multiply the output of ``module`` (the end of the branch added at ``source``)."""

    module: str
    factor: float
    source: str


def check_depth_rule(report: Report, rule: Rule) -> None:
    """A base of another depth needs a rule that says what depth does."""
    ratios = set(report.branch_depths.values()) | {report.depth_ratio}
    if ratios != {1.0} and not rule.has_depth:
        raise RuleError(f"the base has {report.depth_base} residual blocks and the model "
                        f"{report.depth}: rule {rule.id!r} transfers across width only",
                        fix="use rule='completep' (or 'depth-mup') to transfer across depth, "
                            "or build the base with the model's number of blocks")


def branch_edits(report: Report, rule: Rule, multiplier: float = 1.0
                 ) -> tuple[BranchEdit, ...]:
    """One edit per branch module; none at the base's depth or under a width-only rule.
    ``multiplier``: the branch multiplier base hyperparameter (needs a depth rule)."""
    ratio = report.depth_ratio
    if multiplier != 1.0 and not rule.has_depth:
        raise RuleError(f"branch_multiplier is a base hyperparameter of depth rules; rule "
                        f"{rule.id!r} does not scale residual branches",
                        fix="use rule='completep' (or 'depth-mup'), or leave branch_multiplier "
                            "at 1")
    if multiplier != 1.0 and (report.residuals is None or not report.residuals.branches):
        raise MuprewriteError("branch_multiplier is set, but the analysis found no residual "
                              "branch to put it on", fix="leave branch_multiplier at 1 for a "
                              "model without residual blocks")
    ratios = {report.branch_depths.get(b.add, ratio)
              for b in (report.residuals.branches if report.residuals is not None else ())}
    if not rule.has_depth or (ratios <= {1.0} and multiplier == 1.0) or report.residuals is None:
        return ()
    edits: dict[str, BranchEdit] = {}
    for branch in report.residuals.branches:
        m_l = report.branch_depths.get(branch.add, ratio)  # m_L of the branch's own stream
        factor = multiplier * (rule.branch_multiplier(m_l) if m_l != 1.0 else 1.0)
        if not branch.module:
            raise MuprewriteError(
                f"the residual branch added at {branch.source or branch.add} ends in an op of "
                "the block's own forward, so apply cannot scale it by "
                f"m_L^-{rule.depth_alpha:g}", where=branch.source,
                fix="end the branch in a submodule (e.g. self.mlp = nn.Sequential(fc, GELU()), "
                    "x = x + self.mlp(x)), or keep the base at the model's depth")
        edit = edits.setdefault(branch.module, BranchEdit(branch.module, factor, branch.source))
        if edit.factor != factor:
            raise MuprewriteError(
                f"module {branch.module!r} ends residual branches of streams that deepen "
                f"differently ({edit.source} and {branch.source}), so no one branch multiplier "
                "fits every call of it", where=branch.source,
                fix="give each stack its own modules, or deepen every stack by the same ratio")
    return tuple(edits.values())


def _scale(module: nn.Module, args: Any, output: Any) -> Any:
    factor = getattr(module, HOOK_ATTR)
    if isinstance(output, tuple):  # e.g. nn.MultiheadAttention: (out, weights)
        return (output[0] * factor, *output[1:])
    return output * factor


def install_branches(model: nn.Module, edits: tuple[BranchEdit, ...]) -> None:
    """One hook per module object: a module listed under several paths (``ModuleList([blk] *
    n)``) runs it once per call, so each branch call is scaled exactly once."""
    done: dict[int, BranchEdit] = {}
    for edit in edits:
        module = model.get_submodule(edit.module)
        first = done.setdefault(id(module), edit)
        if first is not edit:
            if first.factor != edit.factor:
                raise MuprewriteError(
                    f"{first.module!r} and {edit.module!r} are one module whose calls need "
                    f"different branch multipliers ({first.factor:g}, {edit.factor:g})",
                    where=edit.source, fix="give each stack its own modules")
            continue
        object.__setattr__(module, HOOK_ATTR, edit.factor)
        module.register_forward_hook(_scale)
