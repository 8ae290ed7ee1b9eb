"""The cost ledger: what the sweep cost, as a share of one training run of the target.

``cost = sum over trials of (proxy FLOPs/step x steps the trial ran)
/ (target FLOPs/step x target steps)``. FLOPs per step are one forward and one backward
pass on the example inputs (give each model one training batch of the size it trains
with), counted by ``torch.utils.flop_counter.FlopCounterMode``: matrix products,
convolutions and attention, the terms that dominate; elementwise ops and the optimizer step
are left out. A target built on the meta device is counted without allocating it. Every
trial counts, pruned and failed ones with the steps they reached (a trial killed mid-run
with its last reported step).

>>> import torch
>>> flops_per_step(torch.nn.Linear(8, 4, bias=False), torch.randn(2, 8))  # fwd + weight grad
256
>>> ledger = Ledger(100, (TrialCost(0, "COMPLETE", 50), TrialCost(1, "PRUNED", 10)), 10_000, 60)
>>> ledger.summary()
'tuning cost: 1.0 % of one target run (2 trials, 60 proxy steps)'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ...capture.input_sets import InputSets, first_set
from .errors import TuneError

__all__ = ["Ledger", "TrialCost", "flops_per_step", "trial_costs", "percent", "to_device",
           "STEPS_ATTR"]

STEPS_ATTR = "steps_run"  # user attribute: the optimizer steps a trial ran


def flops_per_step(model: nn.Module, inputs: Any = None) -> int:
    """FLOPs of one forward and backward of ``model`` on ``inputs`` (its first input set;
    default: ``model.example_inputs()``). Tensors are moved to the model's device, so a
    model on the meta device is counted from shapes alone."""
    if inputs is None:
        example = getattr(model, "example_inputs", None)
        if not callable(example):
            raise TuneError(f"cannot count the FLOPs of {type(model).__name__}: no example "
                            "inputs", fix="pass its inputs (inputs=/target_inputs=), or give "
                                          "the model an example_inputs() method")
        inputs = example()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    args, kwargs = first_set(inputs)
    args, kwargs = to_device(args, device), to_device(kwargs, device)
    model.train()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            out = model(*args, **kwargs)
            graded = [t for t in _tensors(out) if t.requires_grad and t.is_floating_point()]
            if graded:
                torch.stack([t.sum() for t in graded]).sum().backward()
    except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise TuneError(f"counting the FLOPs of {type(model).__name__}: its forward and "
                        f"backward on the example inputs raised {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}",
                        fix="check the inputs fit the model; on the meta device a forward "
                            "that reads values (.item()) cannot run: build it on the CPU at "
                            "a size that fits") from None
    finally:
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class TrialCost:
    """One trial's share: its number, final state and the optimizer steps it ran."""

    number: int
    state: str
    steps: int


@dataclass(frozen=True)
class Ledger:
    """The proxy FLOPs the sweep spent against one target run (``cost`` is a fraction;
    None without a target)."""

    proxy_flops_per_step: int
    trials: tuple[TrialCost, ...]
    target_flops_per_step: int | None = None
    target_steps: int | None = None

    @property
    def proxy_steps(self) -> int:
        return sum(t.steps for t in self.trials)

    @property
    def proxy_flops(self) -> int:
        return self.proxy_flops_per_step * self.proxy_steps

    @property
    def target_flops(self) -> int | None:
        if self.target_flops_per_step is None or self.target_steps is None:
            return None
        return self.target_flops_per_step * self.target_steps

    @property
    def cost(self) -> float | None:
        """Sweep FLOPs / one target run's FLOPs (0.031 is 3.1 %)."""
        target = self.target_flops
        return None if not target else self.proxy_flops / target

    def summary(self) -> str:
        what = f"{len(self.trials)} trials, {self.proxy_steps} proxy steps"
        if self.cost is None:
            return (f"tuning cost: {self.proxy_flops:.3g} FLOPs ({what}); give a target "
                    "model and its steps for the share of one target run")
        return f"tuning cost: {percent(self.cost)} % of one target run ({what})"

    def to_table(self) -> dict[str, Any]:
        """The card's ``[ledger]`` table (numbers only; absent values left out)."""
        table: dict[str, Any] = {"proxy_flops_per_step": self.proxy_flops_per_step,
                                 "proxy_steps": self.proxy_steps, "proxy_flops": self.proxy_flops,
                                 "trials": len(self.trials)}
        if self.target_flops is not None:
            table.update(target_flops_per_step=self.target_flops_per_step,
                         target_steps=self.target_steps, target_flops=self.target_flops)
        if self.cost is not None:
            table.update(cost=self.cost, cost_percent=100 * self.cost)
        return table


def trial_costs(trials: Iterable[Any]) -> tuple[TrialCost, ...]:
    """The steps each trial of a study ran (Optuna FrozenTrials): its ``steps_run``
    attribute, else its last reported step (a trial killed mid-run), else 0. Trials still
    waiting in the queue are left out."""
    costs = []
    for t in trials:
        if t.state.name == "WAITING":
            continue
        steps = t.user_attrs.get(STEPS_ATTR)
        if not isinstance(steps, int):
            steps = max(t.intermediate_values, default=0)
        costs.append(TrialCost(t.number, t.state.name, int(steps)))
    return tuple(costs)


def percent(fraction: float) -> str:
    """``0.031`` -> ``"3.1"``: a share as a percentage, two significant digits below 10."""
    value = 100 * fraction
    return f"{value:.0f}" if value >= 10 else f"{value:#.2g}"


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def to_device(value: Any, device: torch.device | str) -> Any:
    """Example inputs with every tensor moved to ``device`` (sets, tuples, dicts kept)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, InputSets):
        return InputSets(*(to_device(v, device) for v in value))
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_device(v, device) for v in value)
    return value
