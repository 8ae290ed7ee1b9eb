"""What ``apply`` planned, checked again before an optimizer is built from the plan.

``apply`` marks every module that owns a parameter of the plan; ``param_groups`` then finds
the edits made to the model since: a parameter added or removed, a shape changed (compared
with the plan's report), a planned module replaced by a new one (an unmarked owner: a new
fine-tuning head ``model.head = nn.Linear(...)`` has neither the readout multiplier nor the
init scale), a host module or a residual branch module that lost its edit. The mark is plain
data on the module, so it survives what changes a model legitimately: ``copy.deepcopy``,
pickling, ``to()``/``to_empty()`` (which may replace parameter objects, not modules),
FSDP2's ``fully_shard`` (a class swap, names kept), DDP and ``torch.compile`` (unwrapped).
A parameter object reassigned on a planned module (``head.weight = nn.Parameter(...)``) is
not seen: its module keeps the forward edits, and its init is the caller's.
"""

from __future__ import annotations

from torch import nn

from ..errors import UsageError, first_few
from .branches import HOOK_ATTR
from .hosts import HOST_ATTR
from .plan import Plan

__all__ = ["PLANNED_ATTR", "record", "edits_after_apply", "refuse_edits"]

PLANNED_ATTR = "_muprewrite_planned"


def record(model: nn.Module) -> None:
    """Mark every module of ``model`` that owns a parameter (the ones the plan describes)."""
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is not None:
            object.__setattr__(module, PLANNED_ATTR, True)


def edits_after_apply(model: nn.Module, plan: Plan) -> list[str]:
    """How ``model`` differs from the model ``plan`` was made for; empty if it does not."""
    params = dict(model.named_parameters())
    out = [m.replace("in the report", "in the plan") for m in plan.report.mismatches({n: tuple(p.shape) for n, p in params.items()})]
    replaced = [n for n in params if n in plan.report.params
                and not getattr(model.get_submodule(n.rpartition(".")[0]), PLANNED_ATTR, False)]
    if replaced:
        out.append(f"{', '.join(repr(n) for n in replaced[:6])}"
                   f"{' ...' if len(replaced) > 6 else ''} belong to a module put in after "
                   "apply (it has none of the plan's edits: init scale, forward multiplier)")
    out += [f"module {e.module or '(root)'!r} lost its forward edit (replaced after apply)"
            for e in plan.hosts if not _has(model, e.module, HOST_ATTR)]
    out += [f"module {e.module!r} lost its residual branch multiplier (replaced after apply)"
            for e in plan.branches if not _has(model, e.module, HOOK_ATTR)]
    return out


def refuse_edits(model: nn.Module, plan: Plan) -> None:
    """Raise naming every edit since ``apply`` (see :func:`edits_after_apply`)."""
    found = edits_after_apply(model, plan)
    if found:
        raise UsageError(f"{type(model).__name__} was edited after muprewrite.apply: "
                         f"{first_few(found)}; its muP plan no longer describes it",
                         fix="call muprewrite.apply again on the edited model (build it fresh, "
                             "make the edit, then apply with a base edited alike), or undo the "
                             "edit")


def _has(model: nn.Module, path: str, attr: str) -> bool:
    try:
        return hasattr(model.get_submodule(path), attr)
    except AttributeError:  # the module itself is gone
        return False
