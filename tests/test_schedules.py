"""Schedules keep muP's learning-rate ratios, and the ratio check catches one that does not.

The groups come from ``muprewrite.param_groups`` on a rewritten model, so each carries the
ratio muP asks for (``lr_factor``); a schedule passes when every group's lr stays in that
ratio to the others at every step.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

import muprewrite
from muprewrite import MuprewriteError
from muprewrite.schedules import check_schedule, lr_ratios, wsd, wsd_factor

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
], ids=["cosine", "step", "warmup-then-cosine", "onecycle-per-group", "wsd"])
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
