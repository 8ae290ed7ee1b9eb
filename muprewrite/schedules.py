"""Learning-rate schedules that keep muP's ratios, and a check for any schedule.

μP lives in the *ratios* between the optimizer groups' learning rates (hidden matrices at
1/m of the rest, ...). A schedule that multiplies every group by the same factor keeps them;
one that writes the same value into every group (``group["lr"] = lr`` in a training loop,
``OneCycleLR(max_lr=3e-4)`` with one number) silently turns the model back into standard
parametrization. ``check_schedule`` runs any scheduler forward on a copy of the optimizer's
state and says whether, and where, the ratios break.

>>> import torch
>>> from torch import nn
>>> model = nn.Linear(4, 4)
>>> opt = torch.optim.AdamW([{"params": [model.weight], "lr": 1e-3},
...                          {"params": [model.bias], "lr": 4e-3}])
>>> sched = wsd(opt, total_steps=100, warmup_steps=10, decay_steps=20)
>>> check_schedule(opt, sched, steps=100)  # every group scaled alike: passes
>>> [round(g["lr"] / opt.param_groups[0]["lr"], 12) for g in opt.param_groups]
[1.0, 4.0]
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

from .errors import MuprewriteError, UsageError

__all__ = ["wsd", "wsd_factor", "check_schedule", "lr_ratios", "RATIO_RTOL"]

RATIO_RTOL = 1e-9  # schedules multiply floats: ratios stay equal to rounding
Decay = Literal["linear", "cosine", "1-sqrt"]


def wsd_factor(step: int, *, total_steps: int, warmup_steps: int = 0,
               decay_steps: int | None = None, final_factor: float = 0.0,
               decay: Decay = "linear") -> float:
    """Warmup-stable-decay: linear warmup to 1 over ``warmup_steps``, 1 until the last
    ``decay_steps`` (default: the last 20 %), then down to ``final_factor`` by ``decay``."""
    decay_steps = round(0.2 * total_steps) if decay_steps is None else decay_steps
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    start = total_steps - decay_steps
    if step < start or decay_steps == 0:
        return 1.0
    t = min(1.0, (step - start) / decay_steps)
    shape = {"linear": 1 - t, "cosine": 0.5 * (1 + math.cos(math.pi * t)),
             "1-sqrt": 1 - math.sqrt(t)}[decay]
    return final_factor + (1 - final_factor) * shape


def wsd(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int = 0,
        decay_steps: int | None = None, final_factor: float = 0.0,
        decay: Decay = "linear") -> LambdaLR:
    """A ``torch.optim.lr_scheduler`` (``LambdaLR``) for warmup-stable-decay: every group's lr
    is its own initial lr times one factor (``wsd_factor``), so muP's ratios hold exactly.
    ``scheduler.step()`` once per optimizer step; ``state_dict`` saves and loads it."""
    _check_wsd(total_steps, warmup_steps, decay_steps, final_factor, decay)
    factor = _WSD(total_steps, warmup_steps, decay_steps, final_factor, decay)
    return LambdaLR(optimizer, factor)


class _WSD:
    """A picklable lr_lambda (a lambda would not pickle with the scheduler)."""

    def __init__(self, total: int, warmup: int, decay_steps: int | None, final: float,
                 decay: Decay) -> None:
        self.total, self.warmup, self.decay_steps = total, warmup, decay_steps
        self.final, self.decay = final, decay

    def __call__(self, step: int) -> float:
        return wsd_factor(step, total_steps=self.total, warmup_steps=self.warmup,
                          decay_steps=self.decay_steps, final_factor=self.final,
                          decay=self.decay)


def _check_wsd(total: int, warmup: int, decay_steps: int | None, final: float,
               decay: str) -> None:
    if not isinstance(total, int) or total < 1:
        raise UsageError(f"total_steps must be a positive integer, got {total!r}",
                         fix="wsd(opt, total_steps=10_000, warmup_steps=500)")
    decay_steps = round(0.2 * total) if decay_steps is None else decay_steps
    if not (0 <= warmup <= total and 0 <= decay_steps <= total - warmup):
        raise UsageError(f"warmup_steps {warmup} and decay_steps {decay_steps} do not fit in "
                         f"total_steps {total}", fix="warmup + decay must be <= total_steps")
    if not 0.0 <= final <= 1.0 or decay not in ("linear", "cosine", "1-sqrt"):
        raise UsageError(f"final_factor {final!r} / decay {decay!r}",
                         fix="final_factor in [0, 1]; decay 'linear', 'cosine' or '1-sqrt'")


def lr_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each group's lr over the first group's (muP's part of the learning rates)."""
    groups = optimizer.param_groups
    first = float(groups[0]["lr"])
    return [float(g["lr"]) / first if first else math.nan for g in groups]


def _expected(optimizer: torch.optim.Optimizer) -> list[float]:
    """The ratios muP asks for: from ``lr_factor`` (muprewrite.param_groups records it in each
    group), else the groups' ratios as they stand."""
    factors = [g.get("lr_factor") for g in optimizer.param_groups]
    if all(isinstance(f, (int, float)) and f > 0 for f in factors):
        return [float(f) / float(factors[0]) for f in factors]  # type: ignore[arg-type]
    return lr_ratios(optimizer)


def _broken(optimizer: torch.optim.Optimizer, expected: list[float]) -> int | None:
    """The first group whose lr / its muP ratio differs from group 0's (an lr of 0 in every
    group, at the end of a decay, keeps the ratios)."""
    scaled = [float(g["lr"]) / e for g, e in zip(optimizer.param_groups, expected)]
    return next((i for i, v in enumerate(scaled)
                 if not math.isclose(v, scaled[0], rel_tol=RATIO_RTOL)), None)


def _error(n: int, bad: int, now: list[float], expected: list[float],
           scheduler: Any) -> MuprewriteError:
    when = "before any scheduler step" if n == 0 else f"after {n} scheduler step(s)"
    return MuprewriteError(
        f"{when}, group {bad}'s lr is {now[bad]:.6g}x group 0's instead of "
        f"{expected[bad]:.6g}x: the schedule does not scale every group alike, so the muP "
        "ratios are lost", where=type(scheduler).__name__,
        fix="scale every group by one factor (LambdaLR, muprewrite.schedules.wsd, torch's "
            "schedulers); never write one lr into every group (OneCycleLR: pass max_lr as a "
            "list, one value per group, in the groups' ratios)")


def check_schedule(optimizer: torch.optim.Optimizer, scheduler: Any, steps: int = 1000,
                   step: Callable[[Any], None] | None = None) -> None:
    """Run ``scheduler`` ``steps`` steps ahead and raise ``MuprewriteError`` at the first step
    where any group's lr leaves its muP ratio to the others (from each group's ``lr_factor``,
    which ``muprewrite.param_groups`` records; else the ratios as they stand). The optimizer's
    and the scheduler's states are restored afterwards; parameters are not touched.
    ``step``: how to advance the scheduler (default ``scheduler.step()``; e.g.
    ``lambda s: s.step(loss)`` for ``ReduceLROnPlateau``)."""
    if not optimizer.param_groups:
        raise UsageError("the optimizer has no parameter groups", fix="pass the optimizer "
                         "built from muprewrite.param_groups(model, lr=...)")
    expected = _expected(optimizer)
    bad = _broken(optimizer, expected)
    if bad is not None:
        raise _error(0, bad, lr_ratios(optimizer), expected, scheduler)
    saved_opt = copy.deepcopy(optimizer.state_dict())
    saved_sched = copy.deepcopy(scheduler.state_dict())
    lrs = [g["lr"] for g in optimizer.param_groups]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for n in range(1, steps + 1):
                (step or (lambda s: s.step()))(scheduler)
                bad = _broken(optimizer, expected)
                if bad is not None:
                    raise _error(n, bad, lr_ratios(optimizer), expected, scheduler)
    finally:
        optimizer.load_state_dict(saved_opt)
        scheduler.load_state_dict(saved_sched)
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
