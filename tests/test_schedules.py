"""Schedules keep muP's learning-rate ratios, and the ratio check catches one that does not.

The groups come from ``muprewrite.param_groups`` on a rewritten model, so each carries the
ratio muP asks for (``lr_factor``); a schedule passes when every group's lr stays in that
ratio to the others at every step.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

import muprewrite
from muprewrite import MuprewriteError
from muprewrite.errors import UsageError
from muprewrite.training.schedules import (
    check_schedule,
    lr_ratios,
    power,
    power_factor,
    wsd,
    wsd_factor,
)

TOTAL = 200


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 3))


def _optimizer() -> torch.optim.Optimizer:
    model = muprewrite.apply(_mlp(128), torch.randn(2, 8), base=_mlp(32))
    opt = torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-3))
    assert len({round(r, 9) for r in lr_ratios(opt)}) > 1  # the muP ratios are there
    return opt


@pytest.mark.parametrize("decay", ["linear", "cosine", "1-sqrt"])
def test_wsd_shape(decay: str) -> None:
    f = [wsd_factor(s, total_steps=100, warmup_steps=10, decay_steps=20, final_factor=0.1,
                    decay=decay) for s in range(100)]  # type: ignore[arg-type]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[10:80] == [1.0] * 70
    assert all(a >= b for a, b in zip(f[80:], f[81:])) and f[99] > 0.1
    assert wsd_factor(100, total_steps=100, decay_steps=20, final_factor=0.1,
                      decay=decay) == pytest.approx(0.1)  # type: ignore[arg-type]


def test_wsd_keeps_every_ratio_exactly_and_saves() -> None:
    opt = _optimizer()
    expected = lr_ratios(opt)
    base = [g["lr"] for g in opt.param_groups]
    sched = wsd(opt, total_steps=TOTAL, warmup_steps=20, decay_steps=50, decay="cosine")
    for step in range(TOTAL):
        factor = wsd_factor(step, total_steps=TOTAL, warmup_steps=20, decay_steps=50,
                            decay="cosine")
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [b * factor for b in base], rel=1e-12)
        if factor:
            assert lr_ratios(opt) == pytest.approx(expected, rel=1e-12)
        opt.step()
        sched.step()
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)  # picklable (no lambda)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=False)["last_epoch"] == TOTAL


@pytest.mark.parametrize("make", [
    lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL),
    lambda o: lr_scheduler.StepLR(o, step_size=30, gamma=0.5),
    lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.1, total_iters=20),
                                            lr_scheduler.CosineAnnealingLR(o, T_max=180)],
                                        milestones=[20]),
    lambda o: lr_scheduler.OneCycleLR(o, max_lr=[g["lr"] for g in o.param_groups],
                                      total_steps=TOTAL),
    lambda o: wsd(o, total_steps=TOTAL, warmup_steps=10),
    lambda o: power(o, batch_size=4, seq_len=8, warmup_tokens=320, total_tokens=32 * TOTAL),
], ids=["cosine", "step", "warmup-then-cosine", "onecycle-per-group", "wsd", "power"])
def test_schedulers_that_scale_every_group_alike_pass(make) -> None:  # type: ignore[no-untyped-def]
    opt = _optimizer()
    sched = make(opt)
    before = ([g["lr"] for g in opt.param_groups], sched.state_dict())
    check_schedule(opt, sched, steps=TOTAL - 1)
    assert [g["lr"] for g in opt.param_groups] == before[0]  # left as it was
    assert sched.state_dict() == before[1]


def test_a_decay_to_zero_keeps_the_ratios() -> None:
    """At the end of a decay every group's lr is 0: no ratio is broken there."""
    opt = _optimizer()
    check_schedule(opt, wsd(opt, total_steps=TOTAL, final_factor=0.0), steps=TOTAL + 20)
    check_schedule(opt, lr_scheduler.CosineAnnealingLR(opt, T_max=TOTAL), steps=TOTAL)


class OneLR(lr_scheduler.LRScheduler):
    """A hand-rolled warmup that writes one lr into every group: the muP ratios are lost."""

    def get_lr(self) -> list[float]:  # type: ignore[override]
        value = 1e-3 * min(1.0, (self.last_epoch + 1) / 10)
        return [value for _ in self.optimizer.param_groups]


@pytest.mark.parametrize("make, when", [
    (lambda o: lr_scheduler.OneCycleLR(o, max_lr=1e-3, total_steps=TOTAL), "before any"),  # its constructor wrote it
    (lambda o: OneLR(o), "before any"),  # its constructor already wrote the lr
    (lambda o: lr_scheduler.LambdaLR(o, [(lambda s: 1.0) if i else (lambda s: 0.9 ** s)
                                         for i in range(len(o.param_groups))]),
     "after 1 scheduler step"),  # per-group decays that differ
])
def test_a_schedule_that_overwrites_group_lrs_is_flagged(make, when: str) -> None:  # type: ignore[no-untyped-def]
    opt = _optimizer()
    sched = make(opt)
    with pytest.raises(MuprewriteError, match=f"{when}.*the muP ratios are lost") as caught:
        check_schedule(opt, sched, steps=50)
    assert "per group" in caught.value.fix or "one factor" in caught.value.fix


def test_groups_overwritten_in_a_loop_are_flagged() -> None:
    opt = _optimizer()
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=TOTAL)
    for group in opt.param_groups:  # the classic training-loop line
        group["lr"] = 3e-4
    with pytest.raises(MuprewriteError, match="before any scheduler step"):
        check_schedule(opt, sched)
    assert not math.isnan(lr_ratios(opt)[0])


# --- Power scheduler (Shen et al. 2024, arXiv:2408.13359) ------------------------------------

# The paper's 1B runs: batch 1024 x 4096 tokens, 1B warmup tokens, 1T tokens, exponential
# decay over the last 100B, a = 4, b = -0.51, eta_max = 0.02.
PAPER: dict[str, Any] = dict(lr_max=0.02, batch_size=1024, seq_len=4096, warmup_tokens=10**9,
             total_tokens=10**12, decay_tokens=10**11)
PER_STEP = 1024 * 4096


def _eta(n: float, a: float = 4.0, b: float = -0.51, batch: int = 1024,
         eta_max: float = 0.02) -> float:
    """Eq. 7 of the paper, as an lr: min(eta_max, beta * a * n^b)."""
    return min(eta_max, batch * a * n ** b)


def test_power_factor_follows_the_paper_at_chosen_steps() -> None:
    lr = [0.02 * power_factor(s, **PAPER) for s in range(0, 250_000, 250)]
    # warmup, Eq. 8: linear up to eta_power(1B tokens), which is at the cap
    for s in (0, 10, 200):
        assert 0.02 * power_factor(s, **PAPER) == pytest.approx(
            (s + 1) * PER_STEP / 1e9 * _eta(1e9), rel=1e-12)
    assert _eta(1e9) == 0.02
    # min with eta_max: beta*a*n^b = 0.02 at n = (0.02 / 4096)^(1/-0.51) ~ 26.0B tokens
    crossing = (0.02 / 4096) ** (1 / -0.51)
    assert crossing == pytest.approx(25.96e9, rel=1e-3)
    assert power_factor(int(0.9 * crossing) // PER_STEP, **PAPER) == 1.0
    assert power_factor(int(1.1 * crossing) // PER_STEP + 1, **PAPER) < 1.0
    # the power-law region, and one number worked out by hand: 4096 * 10^(-11 * 0.51) = 0.01005
    for s in (10_000, 50_000, 200_000):
        assert 0.02 * power_factor(s, **PAPER) == pytest.approx(
            4096 * (s * PER_STEP) ** -0.51, rel=1e-12)
    assert _eta(1e11) == pytest.approx(0.01005, abs=5e-5)
    # decay: exponential from eta_power(900B) to 0 over the last 100B tokens
    start = 9 * 10**11
    for s in (start // PER_STEP + 1, 230_000, 238_000):
        t = (s * PER_STEP - start) / 1e11
        assert 0.02 * power_factor(s, **PAPER) == pytest.approx(
            _eta(start) * (math.exp(1 - t) - 1) / (math.e - 1), rel=1e-12)
    assert power_factor(10**12 // PER_STEP + 1, **PAPER) == 0.0
    # the shape: up, flat at the cap, down, never above the cap
    peak = max(range(len(lr)), key=lr.__getitem__)
    assert lr[peak] == 0.02 and all(x >= y for x, y in zip(lr[peak:], lr[peak + 1:]))


def test_power_warmup_ends_at_the_power_law_value_when_it_is_below_the_cap() -> None:
    args = dict(PAPER, warmup_tokens=40 * 10**9)  # past the ~26B-token crossing
    top = _eta(40e9) / 0.02
    assert 0.5 < top < 1.0
    for s in (0, 5_000, 9_535):
        assert power_factor(s, **args) == pytest.approx(
            min(1.0, (s + 1) * PER_STEP / 40e9) * top, rel=1e-12)
    first_after = -(-40 * 10**9 // PER_STEP)
    assert power_factor(first_after, **args) == pytest.approx(
        _eta(first_after * PER_STEP) / 0.02, rel=1e-12)


def test_power_without_total_tokens_never_decays() -> None:
    args = dict(PAPER, total_tokens=None, decay_tokens=None)
    s = 10**13 // PER_STEP  # 10T tokens, far past the 1T of PAPER
    assert 0.02 * power_factor(s, **args) == pytest.approx(
        4096 * (s * PER_STEP) ** -0.51, rel=1e-12)


# A short run that has every phase: 32 tokens a step, warmup 10 steps, the cap until step
# 50, the power law, and a decay over the last 40 of 200 steps.
SMALL_LR, SMALL_PER_STEP = 1e-3, 4 * 8
SMALL_A = SMALL_LR / (4 * (50 * SMALL_PER_STEP) ** -0.51)
SMALL: dict[str, Any] = dict(batch_size=4, seq_len=8, warmup_tokens=10 * SMALL_PER_STEP,
             total_tokens=TOTAL * SMALL_PER_STEP, decay_tokens=40 * SMALL_PER_STEP, a=SMALL_A)


def _small_factor(step: int) -> float:
    n = step * SMALL_PER_STEP
    law = min(1.0, 4 * SMALL_A * max(n, 1) ** -0.51 / SMALL_LR)
    if step < 10:
        return (step + 1) / 10
    if step < TOTAL - 40:
        return law
    t = min(1.0, (step - (TOTAL - 40)) / 40)
    at_start = 4 * SMALL_A * ((TOTAL - 40) * SMALL_PER_STEP) ** -0.51 / SMALL_LR
    return at_start * (math.exp(1 - t) - 1) / (math.e - 1)


def test_power_keeps_every_muP_ratio_over_a_whole_run() -> None:
    opt = _optimizer()  # muprewrite.param_groups(model, lr=1e-3)
    expected = lr_ratios(opt)
    base = [g["lr"] for g in opt.param_groups]
    sched = power(opt, **SMALL)
    check_schedule(opt, sched, steps=TOTAL + 10)
    factors = []
    for step in range(TOTAL + 5):
        factor = _small_factor(step)
        factors.append(factor)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [x * factor for x in base], rel=1e-12)
        if factor:
            assert lr_ratios(opt) == pytest.approx(expected, rel=1e-12)
        opt.step()
        sched.step()
    assert factors[10:51] == [1.0] * 41  # at the cap (lr_max)
    assert 1.0 > factors[51] > factors[100] > factors[159] > factors[160] > factors[199] > 0
    assert factors[TOTAL:] == [0.0] * 5


def test_power_state_dict_round_trip() -> None:
    opt = _optimizer()
    sched = power(opt, **SMALL)
    for _ in range(120):
        opt.step()
        sched.step()
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    assert pickle.loads(pickle.dumps(sched.lr_lambdas[0]))(120) == _small_factor(120)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    opt2 = _optimizer()
    sched2 = power(opt2, **SMALL)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert sched2.last_epoch == 120
    for _ in range(50):
        opt.step(); sched.step()  # noqa: E702
        opt2.step(); sched2.step()  # noqa: E702
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert sched2.get_last_lr()[0] / opt2.param_groups[0]["initial_lr"] == pytest.approx(
        _small_factor(170), rel=1e-12)


def test_power_open_ended_run_gets_its_decay_later() -> None:
    """The paper's point: run without a total, then add the decay from a checkpoint."""
    opt = _optimizer()
    base = [g["lr"] for g in opt.param_groups]
    stage1 = power(opt, **dict(SMALL, total_tokens=None, decay_tokens=None))
    for _ in range(100):
        opt.step()
        stage1.step()
    state = stage1.state_dict()
    stage2 = power(opt, **SMALL)
    stale = dict(state, lr_lambdas=list(state["lr_lambdas"]))
    stage2.load_state_dict(stale)  # LambdaLR restores stage 1's settings: no decay
    stale_factor: Any = stage2.lr_lambdas[0]
    assert stale_factor.total is None
    stage2 = power(opt, **SMALL)
    stage2.load_state_dict(dict(state, lr_lambdas=[None] * len(state["lr_lambdas"])))
    for step in range(101, TOTAL + 1):
        stage2.step()
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [x * _small_factor(step) for x in base], rel=1e-12)
    assert opt.param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(warmup_tokens=-1), "must be token counts"),
    (dict(total_tokens=-100), "must be token counts"),
    (dict(total_tokens=1000.0), "must be token counts"),
    (dict(total_tokens=1000, warmup_tokens=600, decay_tokens=500), "do not fit"),
    (dict(total_tokens=1000, warmup_tokens=950), "do not fit"),  # default decay: 10 %
    (dict(decay_tokens=100), "without total_tokens"),
    (dict(batch_size=0), "positive integers"),
    (dict(seq_len=2.5), "positive integers"),
    (dict(b=0.51), "b < 0"),
    (dict(a=-4.0), "a > 0"),
    (dict(decay="step"), "decay 'step'"),
    (dict(final_factor=1.5), "final_factor 1.5"),
    (dict(lr_max=0.02), "not the base lr"),  # the groups were built with lr=1e-3
])
def test_power_refuses_a_misspecified_argument(kwargs: dict[str, Any], message: str) -> None:
    model = nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = {"batch_size": 4, "seq_len": 8, **kwargs}
    with pytest.raises(UsageError, match=message) as caught:
        power(opt, **args)
    assert caught.value.fix
    assert "initial_lr" not in opt.param_groups[0]  # refused before touching the optimizer


def test_power_reads_the_base_lr_from_the_groups() -> None:
    groups = _optimizer().param_groups
    opt = torch.optim.AdamW(sorted(groups, key=lambda g: g["lr_factor"]))  # group 0 not at 1x
    assert opt.param_groups[0]["lr_factor"] != 1 and opt.param_groups[0]["lr"] != 1e-3
    factor: Any = power(opt, batch_size=4, seq_len=8).lr_lambdas[0]
    assert factor.lr_max == pytest.approx(1e-3)
    model = nn.Linear(4, 4)  # groups at different lrs and no lr_factor: say which is base
    plain = torch.optim.AdamW([{"params": [model.weight], "lr": 1e-3},
                               {"params": [model.bias], "lr": 4e-3}])
    with pytest.raises(UsageError, match="cannot tell the base lr"):
        power(plain, batch_size=4, seq_len=8)
    sched = power(plain, batch_size=4, seq_len=8, lr_max=2e-3)
    check_schedule(plain, sched, steps=50)
    assert lr_ratios(plain) == pytest.approx([1.0, 4.0], rel=1e-12)
