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

from ..errors import MuprewriteError, UsageError

__all__ = ["wsd", "wsd_factor", "power", "power_factor", "check_schedule", "lr_ratios",
           "RATIO_RTOL"]

RATIO_RTOL = 1e-9  # schedules multiply floats: ratios stay equal to rounding
Decay = Literal["linear", "cosine", "1-sqrt"]
PowerDecay = Literal["exponential", "linear", "cosine", "1-sqrt"]


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


# Power scheduler (Shen et al. 2024, arXiv:2408.13359 v2): a = 4, b = -0.51 (section 4).
POWER_A = 4.0
POWER_B = -0.51


def power_factor(step: int, *, lr_max: float, batch_size: int, seq_len: int,
                 warmup_tokens: int = 0, total_tokens: int | None = None,
                 decay_tokens: int | None = None, a: float = POWER_A, b: float = POWER_B,
                 final_factor: float = 0.0, decay: PowerDecay = "exponential") -> float:
    """The Power scheduler's lr at optimizer step ``step`` (0-based), as a fraction of
    ``lr_max``: ``min(1, batch_size * a * n**b / lr_max)`` over the ``n = step * batch_size *
    seq_len`` tokens trained before the step, after a linear warmup to its value at
    ``warmup_tokens`` and before a decay over the last ``decay_tokens`` of ``total_tokens``
    (none when ``total_tokens`` is None). ``power`` documents the sources.

    >>> # the paper's example (section 3.2, with the WSD fit a = 4.6): 10T tokens at batch
    >>> # size 1024 give an optimal lr of 0.0011
    >>> steps = 10**13 // (1024 * 4096)
    >>> round(power_factor(steps, lr_max=1.0, batch_size=1024, seq_len=4096, a=4.6), 4)
    0.0011
    """
    per_step = batch_size * seq_len
    n = step * per_step

    def law(tokens: int) -> float:  # Eq. 7 over lr_max; n = 0 sits at the cap
        return 1.0 if tokens <= 0 else min(1.0, batch_size * a * tokens ** b / lr_max)

    if warmup_tokens and n < warmup_tokens:  # Eq. 8, first line (one-step offset as wsd)
        return min(1.0, (n + per_step) / warmup_tokens) * law(warmup_tokens)
    if total_tokens is None:
        return law(n)
    decay_tokens = round(0.1 * total_tokens) if decay_tokens is None else decay_tokens
    start = total_tokens - decay_tokens
    if n < start or decay_tokens == 0:
        return law(n)
    t = min(1.0, (n - start) / decay_tokens)
    shape = {"exponential": (math.exp(1 - t) - 1) / (math.e - 1), "linear": 1 - t,
             "cosine": 0.5 * (1 + math.cos(math.pi * t)), "1-sqrt": 1 - math.sqrt(t)}[decay]
    return law(start) * (final_factor + (1 - final_factor) * shape)


def power(optimizer: torch.optim.Optimizer, *, batch_size: int, seq_len: int,
          warmup_tokens: int = 0, total_tokens: int | None = None,
          decay_tokens: int | None = None, a: float = POWER_A, b: float = POWER_B,
          lr_max: float | None = None, final_factor: float = 0.0,
          decay: PowerDecay = "exponential") -> LambdaLR:
    """The Power scheduler (Shen et al. 2024, "Power Scheduler: A Batch Size and Token Number
    Agnostic Learning Rate Scheduler", arXiv:2408.13359) as a ``LambdaLR``: every group's lr
    is its own initial lr times one factor (``power_factor``), so muP's ratios hold exactly.
    ``scheduler.step()`` once per optimizer step; ``state_dict`` saves and loads it.

    What the paper says (v2, read in full):

    - Eq. 7: ``eta_power(n) = min(eta_max, beta * a * n**b)``, "where beta is the batch size,
      n is the number of tokens already trained, a is the amplitude of the learning rate, b is
      a power-law exponent ... and eta_max is the learning rate upper bound".
    - Eq. 8: linear warmup ``n / N_warmup * eta_power(N_warmup)``, then ``eta_power(n)``, then
      ``f(n, N, N_decay) * eta_power(N - N_decay)`` over the last ``N_decay``.
    - Section 4: "we select a = 4 and b = -0.51"; "we set eta_max to 0.02" (Table 3: warmup
      1B tokens, sequence length 4096, batch sizes 32-512). The a = 4.6 of Eq. 5
      (``gamma = eta_opt / beta = 4.6 T**-0.51``) is the fit of the best *WSD* lr, not the
      Power scheduler's a.
    - beta counts sequences, not tokens: with Eq. 5 the paper predicts 0.0011 for "a 10
      trillion token corpus and a batch size 1024", which is 1024 * 4.6 * 1e13**-0.51 (the
      doctest of ``power_factor`` checks it).
    - Decay (section 5): "we exponentially decay the learning rate to 0 for the last 100B
      tokens" (of 1T); the 3B runs decay exponentially to zero in a second stage.

    The muP part: the paper's eta is the lr at base width, and muP divides it by m_width for
    the hidden matrices (its Table 1 and section 3.2). ``muprewrite.param_groups`` gives each
    group ``lr = lr_max * lr_factor``, so the paper's lr for a group is ``lr_factor *
    min(lr_max, beta a n^b) = group lr * min(1, beta a n^b / lr_max)``: one factor for every
    group, the ratios exact. ``lr_max`` is therefore the base lr the groups were built with
    (the paper's 0.02 at its base width 256 and its muP multipliers); by default it is read
    from the groups (``lr / lr_factor``, or the one lr they share) and a value that disagrees
    with them is refused. IBM's own implementation (dolomite-engine,
    ``optimization/scheduler.py``, ``PowerScheduler``) computes the same factor,
    ``min(1, a / lr * (steps * c)**b)`` with ``lr`` group 0's lr and ``c`` the tokens per
    step; its config comment reads ``{"a": batch_size, "b": -0.51, "c": batch_size *
    sequence_length}``, which by Eq. 7 means its ``a`` is beta times the paper's a (an
    inference: the comment does not say so).

    Not settled by the paper, chosen here and said so:

    - The exponential decay's formula is not given, and an exponential never reaches 0.
      ``"exponential"`` is dolomite-engine's ``ExponentialScheduler`` shape, ``(e**(1 - t) -
      1) / (e - 1)`` over ``t`` in [0, 1], which goes from 1 to exactly 0 (then
      ``final_factor``, a fraction of the lr where the decay starts). dolomite's
      ``PowerScheduler`` itself has no decay phase (it is run as a separate stage).
    - Eq. 8 counts warmup from n = 0, which gives the first step lr 0; the first step here
      gets ``1 / warmup_steps`` of it, as ``wsd`` does. n is the tokens trained *before* the
      step (dolomite: ``steps * c``).
    - ``decay_tokens`` defaults to 10 % of ``total_tokens`` (the paper's WSD runs and its 1B
      runs; its 3B runs used 20 % and 17 %).
    - a, b and eta_max were tuned for its LM setup (RedPajama, sequence length 4096, its muP
      multipliers and base width); for another base width, optimizer or data the paper's own
      advice applies: search a and b on a small proxy (its Fig. 5: the loss is flat in a over
      [3, 5] and sensitive to b).

    ``total_tokens=None`` runs warmup then the power law with no end, the paper's point: to
    decay later, build ``power(..., total_tokens=..., decay_tokens=...)`` with the same other
    arguments and load the old scheduler's state with its ``"lr_lambdas"`` entry set to
    ``[None] * len(...)`` (LambdaLR restores the lambda's settings from it otherwise)."""
    _check_power(batch_size, seq_len, warmup_tokens, total_tokens, decay_tokens, a, b,
                 final_factor, decay)
    lr_max = _power_lr_max(optimizer, lr_max)
    factor = _Power(lr_max, batch_size, seq_len, warmup_tokens, total_tokens, decay_tokens,
                    a, b, final_factor, decay)
    return LambdaLR(optimizer, factor)


class _Power:
    """A picklable lr_lambda for ``power``."""

    def __init__(self, lr_max: float, batch_size: int, seq_len: int, warmup: int,
                 total: int | None, decay_tokens: int | None, a: float, b: float,
                 final: float, decay: PowerDecay) -> None:
        self.lr_max, self.batch_size, self.seq_len = lr_max, batch_size, seq_len
        self.warmup, self.total, self.decay_tokens = warmup, total, decay_tokens
        self.a, self.b, self.final, self.decay = a, b, final, decay

    def __call__(self, step: int) -> float:
        return power_factor(step, lr_max=self.lr_max, batch_size=self.batch_size,
                            seq_len=self.seq_len, warmup_tokens=self.warmup,
                            total_tokens=self.total, decay_tokens=self.decay_tokens,
                            a=self.a, b=self.b, final_factor=self.final, decay=self.decay)


def _is_count(value: Any, positive: bool = False) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and value >= (1 if positive else 0))


def _check_power(batch_size: int, seq_len: int, warmup: int, total: int | None,
                 decay_tokens: int | None, a: float, b: float, final: float,
                 decay: str) -> None:
    example = ("power(opt, batch_size=1024, seq_len=4096, warmup_tokens=10**9, "
               "total_tokens=10**12, decay_tokens=10**11)")
    if not (_is_count(batch_size, True) and _is_count(seq_len, True)):
        raise UsageError(f"batch_size {batch_size!r} and seq_len {seq_len!r} must be positive "
                         "integers (sequences per optimizer step, tokens per sequence)",
                         fix=example)
    if not (_is_count(warmup) and (total is None or _is_count(total, True))
            and (decay_tokens is None or _is_count(decay_tokens))):
        raise UsageError(f"warmup_tokens {warmup!r}, total_tokens {total!r} and decay_tokens "
                         f"{decay_tokens!r} must be token counts (integers >= 0; total > 0)",
                         fix=example)
    if total is None:
        if decay_tokens:
            raise UsageError(f"decay_tokens {decay_tokens} without total_tokens: the decay "
                             "needs to know where the run ends", fix=example)
    else:
        decay_tokens = round(0.1 * total) if decay_tokens is None else decay_tokens
        if warmup + decay_tokens > total:
            raise UsageError(f"warmup_tokens {warmup} and decay_tokens {decay_tokens} do not "
                             f"fit in total_tokens {total}",
                             fix="warmup + decay must be <= total_tokens")
    if not (math.isfinite(a) and a > 0 and math.isfinite(b) and b < 0):
        raise UsageError(f"a {a!r} and b {b!r}: the power law needs a > 0 and b < 0",
                         fix=f"the paper's values: a={POWER_A}, b={POWER_B}")
    if not 0.0 <= final <= 1.0 or decay not in ("exponential", "linear", "cosine", "1-sqrt"):
        raise UsageError(f"final_factor {final!r} / decay {decay!r}",
                         fix="final_factor in [0, 1]; decay 'exponential', 'linear', "
                             "'cosine' or '1-sqrt'")


def _power_lr_max(optimizer: torch.optim.Optimizer, lr_max: float | None) -> float:
    """The base lr the groups were built with: each group's (initial) lr over its
    ``lr_factor``, or the one lr the groups share; ``lr_max`` must agree with it."""
    groups = optimizer.param_groups
    lrs = [float(g.get("initial_lr", g["lr"])) for g in groups]
    factors = [g.get("lr_factor") for g in groups]
    if all(isinstance(f, (int, float)) and f > 0 for f in factors):
        bases = [lr / f for lr, f in zip(lrs, factors)]  # type: ignore[operator]
    else:
        bases = lrs
    agree = all(math.isclose(x, bases[0], rel_tol=RATIO_RTOL) for x in bases)
    if lr_max is None:
        if not agree:
            raise UsageError("power() cannot tell the base lr: the groups' base lrs differ "
                             "(a Muon rule's lr and adam_lr), or they do not carry lr_factor",
                             fix="pass lr_max=<the lr the power law caps, tuned at base "
                             "width>; every group is scaled by the same factor")
        lr_max = bases[0]
    elif agree and not math.isclose(lr_max, bases[0], rel_tol=RATIO_RTOL):
        raise UsageError(f"lr_max {lr_max!r} is not the base lr the groups were built with "
                         f"({bases[0]!r}); the factor is min(1, beta*a*n^b / lr_max), so "
                         "the groups' lr must be lr_max (times their muP factor)",
                         fix="leave lr_max out, or build the groups with lr=lr_max")
    if not (math.isfinite(lr_max) and lr_max > 0):
        raise UsageError(f"lr_max must be a positive number, got {lr_max!r}",
                         fix="muprewrite.param_groups(model, lr=0.02)")
    return float(lr_max)


def lr_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each group's lr over the first group's (muP's part of the learning rates)."""
    groups = optimizer.param_groups
    first = float(groups[0]["lr"])
    return [float(g["lr"]) / first if first else math.nan for g in groups]


def _expected(optimizer: torch.optim.Optimizer) -> list[float]:
    """The ratios muP asks for: from ``lr_factor`` (muprewrite.param_groups records it in each
    group), else the groups' ratios as they stand."""
    groups = optimizer.param_groups
    factors = [g.get("lr_factor") for g in groups]
    if all(isinstance(f, (int, float)) and f > 0 for f in factors):
        # base_lr: the value tuned at base width, which differs between a Muon rule's Muon
        # and AdamW groups (lr, adam_lr); groups from older code lack it (one base)
        scaled = [float(f) * float(g.get("base_lr", 1.0))  # type: ignore[arg-type]
                  for f, g in zip(factors, groups)]
        return [v / scaled[0] for v in scaled]
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
        fix="scale every group by one factor (LambdaLR, muprewrite.training.schedules.wsd, torch's "
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
