"""The sweep's cost ledger: FLOPs per step against a hand count, on the CPU and on meta."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import tune_helpers as h

from muprewrite.training.tuning import Ledger, TrialCost, flops_per_step
from muprewrite.training.tuning.ledger import trial_costs


def test_flops_per_step_is_the_hand_count() -> None:
    for width in (8, 16, 48):
        assert flops_per_step(h.linear_net(width), h.X) == 22 * 64 * width


def test_flops_of_a_meta_target_allocate_nothing() -> None:
    width = 2 ** 24  # 80M parameters: 320 MB if it were allocated
    with torch.device("meta"):
        model = h.linear_net(width)
    assert flops_per_step(model, h.X) == 22 * 64 * width
    assert all(p.is_meta for p in model.parameters())


def test_cost_counts_every_trial_by_the_steps_it_ran() -> None:
    def trial(number, state, attrs, reported):
        return SimpleNamespace(number=number, state=SimpleNamespace(name=state),
                               user_attrs=attrs, intermediate_values=reported)

    trials = [trial(0, "COMPLETE", {"steps_run": 50}, {10: 1.0}),
              trial(1, "PRUNED", {"steps_run": 10}, {10: 3.0}),
              trial(2, "RUNNING", {}, {5: 2.0, 7: 2.0}),  # killed: its last report counts
              trial(3, "WAITING", {}, {})]
    costs = trial_costs(trials)
    assert costs == (TrialCost(0, "COMPLETE", 50), TrialCost(1, "PRUNED", 10),
                     TrialCost(2, "RUNNING", 7))
    ledger = Ledger(1_000, costs, target_flops_per_step=50_000, target_steps=200)
    assert ledger.cost == pytest.approx(67 * 1_000 / (50_000 * 200))
    assert ledger.summary() == "tuning cost: 0.67 % of one target run (3 trials, 67 proxy steps)"
    assert Ledger(1_000, costs).cost is None
