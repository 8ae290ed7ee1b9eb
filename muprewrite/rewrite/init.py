"""Stage 5c — re-initialise: rescale each parameter so its init scale follows the rule.

The user's own init (whatever distribution, seeded by their RNG) is kept in shape and only
multiplied by a scalar, so that its RMS becomes ``rule init factor x RMS of the same
parameter in the base model`` — the init the hyperparameters were tuned with. Nothing is
re-drawn, so no RNG state is consumed. Left as they are: parameters whose shape equals the
base's (nothing grows), all-zero parameters (zero init stays zero), frozen and unused ones.

Two steps, so that a model built on the meta device can be materialised in between:
``init_targets`` reads the base once (at ``apply``) and ``rescale_to_targets`` scales the
model's values, now or after ``to_empty()`` and the user's own init.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MuprewriteError
from .plan import Plan

__all__ = ["init_targets", "rescale_to_targets"]


def _rms(t: torch.Tensor) -> float:
    if not t.numel():
        return 0.0
    squares = t.detach().double().square().mean()
    full = getattr(squares, "full_tensor", None)  # a DTensor (FSDP2): reduce across ranks
    return float((full() if full else squares).sqrt())


def init_targets(model: nn.Module, base: nn.Module, plan: Plan) -> dict[str, float]:
    """Target RMS of every parameter the rule rescales (name -> RMS)."""
    base_params = dict(base.named_parameters())
    targets: dict[str, float] = {}
    for name, param in model.named_parameters():
        info = plan.report.params.get(name)
        if info is None or info.role == "unused" or not param.requires_grad:
            continue
        reference = base_params.get(plan.report.base_name(name))
        deeper = info.in_branch and (info.m_depth or 1.0) != 1.0  # a depth-dependent init
        if reference is None:
            continue
        if tuple(reference.shape) == tuple(param.shape) and not deeper:
            if plan[name].init != 1.0:  # hidden_init at base width: the user's own draw scaled
                targets[name] = plan[name].init * _rms(reference if param.is_meta else param)
            continue
        if reference.is_meta:
            raise MuprewriteError(
                f"the base model's {name!r} is on the meta device, so the init the "
                "hyperparameters were tuned with cannot be measured",
                fix="build base on the CPU (it is the small proxy model), or pass "
                    "init=False to keep the current init")
        targets[name] = plan[name].init * _rms(reference)
    return targets


def rescale_to_targets(model: nn.Module, targets: dict[str, float]) -> dict[str, float]:
    """Multiply parameters in place to their target RMS; return the factor applied to each.

    All-zero parameters stay zero. Raises if a parameter is still on the meta device.
    """
    applied: dict[str, float] = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name not in targets:
                continue
            if param.is_meta:
                raise MuprewriteError(f"parameter {name!r} is still on the meta device",
                                      fix="materialise first: model.to_empty(device=...), "
                                          "then your own init, then rescale_init(model)")
            rms = _rms(param)
            if rms == 0.0:
                continue
            factor = targets[name] / rms
            param.mul_(factor)
            applied[name] = factor
    return applied
