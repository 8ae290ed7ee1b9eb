"""Stage 5c — re-initialise: rescale each parameter so its init scale follows the rule.

The user's own init (whatever distribution, seeded by their RNG) is kept in shape and only
multiplied by a scalar, so that its RMS becomes ``rule init factor x RMS of the same
parameter in the base model`` — the init the hyperparameters were tuned with. Nothing is
re-drawn, so no RNG state is consumed. Left as they are: parameters whose shape equals the
base's (nothing grows), all-zero parameters (zero init stays zero), frozen and unused ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MuprewriteError
from .plan import Plan

__all__ = ["rescale_init"]


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().square().mean().sqrt()) if t.numel() else 0.0


def rescale_init(model: nn.Module, base: nn.Module, plan: Plan) -> dict[str, float]:
    """Multiply parameters in place; return the factor applied to each changed one."""
    base_params = dict(base.named_parameters())
    applied: dict[str, float] = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            info = plan.report.params.get(name)
            if info is None or info.role == "unused" or not param.requires_grad:
                continue
            reference = base_params.get(name)
            if reference is None or tuple(reference.shape) == tuple(param.shape):
                continue
            if param.is_meta:
                continue  # nothing to rescale; materialised later by the user's own init
            if reference.is_meta:
                raise MuprewriteError(
                    f"the base model's {name!r} is on the meta device, so the init the "
                    "hyperparameters were tuned with cannot be measured",
                    fix="build base on the CPU (it is the small proxy model), or pass "
                        "init=False to keep the current init")
            rms = _rms(param)
            if rms == 0.0:
                continue
            factor = plan[name].init * _rms(reference) / rms
            param.mul_(factor)
            applied[name] = factor
    return applied
