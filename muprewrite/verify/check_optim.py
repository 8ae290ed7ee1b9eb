"""The optimizer side of ``muprewrite check``: the groups, the gradients, the steps.

Per parameter: the hyperparameters of ``mup_param_groups`` against ``param_groups`` (lr,
weight decay, eps, and under a Muon rule which optimizer steps it and Muon's
``adjust_lr_fn``), then those of ``mup_optimizer`` against ``muprewrite.optimizer``; then
``steps`` steps of the two optimizers: each parameter's gradient at the first step, each
parameter after the first step, the losses, and each parameter after the last step.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..rules import Rule
from .check_report import Divergence, rel, tensors

__all__ = ["optimizers", "training", "NAMES"]

NAMES = {"adam": "AdamW", "sgd": "SGD", "muon": "Muon + AdamW"}
# the values at base width both optimizers get (Muon's lr and weight decay, AdamW's under a
# Muon rule: four distinct values, so that a swap shows)
_VALUES = {"lr": 1e-2, "weight_decay": 0.1, "eps": 1e-8}
_ADAM_VALUES = {"adam_lr": 3e-3, "adam_weight_decay": 0.05}
# bookkeeping keys of muprewrite's groups, not hyperparameters
_BOOKKEEPING = {"params", "param_names", "lr_factor", "base_lr"}


def optimizers(spec: str, emitted: ModuleType, model: nn.Module, expected: nn.Module,
               rule: Rule, tol: float
               ) -> tuple[Divergence | None, tuple[torch.optim.Optimizer, ...]]:
    """``mup_param_groups`` against ``param_groups``, then ``mup_optimizer`` against
    ``muprewrite.optimizer``, parameter by parameter; the two optimizers, to step."""
    from ..training.optimizer import optimizer
    from ..training.param_groups import param_groups

    values: dict[str, Any] = {**_VALUES, **(_ADAM_VALUES if rule.optimizer == "muon" else {})}
    try:
        ours = emitted.mup_param_groups(model, **values)
    except Exception as exc:  # the emitted code refuses, e.g. mup_init(self) was deleted
        return Divergence(spec, "optimizer groups", "mup_param_groups", "-", -1, math.inf,
                          f"it raised {type(exc).__name__}: {exc}"), ()
    theirs = param_groups(expected, rule=rule, **values)
    found = _hyperparameters(spec, model, ours, expected, theirs, "mup_param_groups",
                             "param_groups", tol)
    reference = optimizer(expected, rule=rule, **values)
    make = getattr(emitted, "mup_optimizer", None)
    if make is not None:
        mine = make(model, **values)
    else:  # a file emitted before mup_optimizer: the reference's optimizer on its groups
        mine = type(reference)(ours)  # type: ignore[call-arg]
    found = found or _hyperparameters(spec, model, mine.param_groups, expected,
                                      reference.param_groups, "mup_optimizer",
                                      "muprewrite.optimizer", tol)
    return found, (mine, reference)


def _hyperparameters(spec: str, model: nn.Module, ours: list[dict], expected: nn.Module,
                     theirs: list[dict], mine: str, reference: str, tol: float
                     ) -> Divergence | None:
    """Each parameter's hyperparameters in the two lists of groups (every key but the
    bookkeeping: lr, eps, weight decay, the optimizer that steps it, and what torch fills in):
    a factor that moves the loss less than the tolerance in a few steps (eps at 1e-8) still
    shows here, and so does a key only one side sets (an eps on a Muon group changes Muon)."""
    def table(net: nn.Module, groups: list[dict]) -> dict[str, dict[str, Any]]:
        names = {id(p): n for n, p in net.named_parameters()}
        return {names[id(p)]: {k: v for k, v in g.items() if k not in _BOOKKEEPING}
                for g in groups for p in g["params"] if p.requires_grad}
    got_all, expected_all = table(model, ours), table(expected, theirs)
    for name, values in expected_all.items():
        got = got_all.get(name)
        if got is None:
            return Divergence(spec, "optimizer group", name, "-", -1, float("inf"),
                              f"{mine} leaves it out")
        for key in sorted(values.keys() | got.keys(), key=lambda k: (k != "optimizer", k)):
            if key not in got or key not in values:
                where, value = (reference, values[key]) if key in values else (mine, got[key])
                return Divergence(spec, "optimizer group", name, "-", -1, float("inf"),
                                  f"{key} {_shown(value)} only in {where}")
            error = _difference(got[key], values[key])
            if error > tol:
                return Divergence(spec, "optimizer group", name, "-", -1, error,
                                  f"{key} {_shown(got[key])} in {mine}, "
                                  f"{_shown(values[key])} in {reference}")
    return None


def _difference(a: Any, b: Any) -> float:
    """The relative difference of two numbers; 0 or inf for other values (equal or not)."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)
    if number(a) and number(b):
        return abs(a - b) / max(abs(b), 1e-30)
    return 0.0 if type(a) is type(b) and a == b else math.inf


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def training(spec: str, model: nn.Module, expected: nn.Module,
             optimizers: tuple[torch.optim.Optimizer, ...], inputs: tuple[tuple, dict],
             steps: int, name: str, tol: float) -> Divergence | None:
    """``steps`` steps of each optimizer on its model, in lockstep: at the first step each
    parameter's gradient and each parameter after the step (a factor on one parameter's
    update shows by name, before the losses mix it), then every loss, and the parameters
    after the last step (which no loss sees)."""
    args, kwargs = inputs
    pairs = list(zip((model, expected), optimizers))
    theirs = dict(expected.named_parameters())
    ours = dict(model.named_parameters())
    for net, _opt in pairs:
        net.train()
    for step in range(steps):
        losses = []
        for net, opt in pairs:
            torch.manual_seed(4 + step)
            out = tensors(net(*args, **kwargs))
            loss = sum(o.double().square().mean() for o in out if o.is_floating_point())
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            losses.append(float(loss.detach()))  # type: ignore[union-attr]
        a, b = losses
        error = abs(a - b) / max(abs(b), 1e-30)
        if error > tol:
            return Divergence(spec, "training", f"{name} step {step + 1}", "train", 0, error,
                              "the losses differ")
        if step == 0:
            found = _per_parameter(spec, ours, theirs, tol, "gradient", "at the first step")
            if found is not None:
                return found
        for _net, opt in pairs:
            opt.step()
        if step == 0 or step == steps - 1:
            found = _per_parameter(spec, ours, theirs, tol, "training",
                                   f"after {step + 1} {name} step(s) of mup_optimizer and "
                                   "muprewrite.optimizer")
            if found is not None:
                return found
    return None


def _per_parameter(spec: str, ours: dict[str, nn.Parameter], theirs: dict[str, nn.Parameter],
                   tol: float, what: str, when: str) -> Divergence | None:
    for param, value in ours.items():
        other = theirs.get(param)
        if what == "gradient":
            a = value.grad if value.grad is not None else None
            b = other.grad if other is not None else None
            if a is None and b is None:
                continue
            error = rel(a, b) if a is not None and b is not None else float("inf")
        else:
            error = rel(value, other) if other is not None else float("inf")
        if error > tol:
            return Divergence(spec, what, param, "train", 0, error, f"differs {when}")
    return None
