"""Optimizer parameter groups for a rule: a pure transform handed to any torch optimizer.

>>> import torch
>>> from muprewrite import analyze, param_groups
>>> def mlp(w):
...     return torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
...                                torch.nn.ReLU(), torch.nn.Linear(w, 3))
>>> model = mlp(256)
>>> report = analyze(model, torch.randn(2, 8), base=mlp(64))
>>> opt = torch.optim.AdamW(param_groups(model, report, rule="mup", lr=1e-3, weight_decay=0.1))
>>> [(g["param_names"], g["lr"], g["weight_decay"]) for g in opt.param_groups if g["lr_factor"] != 1]
[(['2.weight'], 0.00025, 0.4)]

Each group carries its scaled ``lr``, ``weight_decay`` and (Adam rules) ``eps``, plus
``lr_factor`` (lr = base_lr * lr_factor), ``base_lr`` (the value tuned at base width) and
``param_names`` for inspection. LR schedulers rescale every group's lr by
the same factor, so the ratios between groups (the muP part) survive them.
"""

from __future__ import annotations

import numbers
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.report import Report
from ..capture.unwrap import unwrap
from ..errors import MuprewriteError, UsageError, first_few
from ..rewrite.attached import plan_of
from ..rewrite.fingerprint import refuse_edits
from ..rewrite.hosts import PENDING_ATTR
from ..rewrite.plan import param_factors
from ..rules import Rule, load_rule
from ..rules.hparams import HParamsLike, as_hparams

__all__ = ["param_groups", "NO_DECAY"]

NO_DECAY = (None, "vectors")  # the no_decay policies: the rule's, or none on ndim < 2 too


def param_groups(model: nn.Module, report: Report | None = None, *,
                 rule: str | Rule | None = None, lr: float, weight_decay: float = 0.0,
                 eps: float = 1e-8, adam_lr: float | None = None,
                 adam_weight_decay: float | None = None,
                 hparams: HParamsLike = None, no_decay: str | None = None
                 ) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into groups scaled per the muP rule.

    Build the groups after wrapping or sharding (DDP, FSDP2's ``fully_shard``,
    ``torch.compile``): names are looked up in the model itself, so wrappers do not matter,
    and the groups hold the parameters the optimizer must step (FSDP2's sharded ones).
    For a model returned by ``apply``, nothing else is needed: the rule and the width
    multipliers come from the plan in effect. For a model that was not rewritten, pass the
    ``report`` of ``analyze(model, ..., base=...)`` and a ``rule`` (default ``"mup"``).
    ``lr``, ``weight_decay`` and ``eps`` are the values tuned at base width.

    Parameters frozen now are left out, as torch's optimizers would skip them. One that was
    frozen when the model was analysed got no muP factors (its function was kept), so
    training it now is refused. A report analysed from another model (another width,
    another structure) is refused too.

    Under a Muon rule (``mup-muon``), ``lr`` and ``weight_decay`` are Muon's, ``adam_lr``
    (required) and ``adam_weight_decay`` (default ``weight_decay``) AdamW's. Each group
    says which optimizer steps it (``group["optimizer"]``: "muon" or "adamw"), and the Muon
    groups carry the rule's ``adjust_lr_fn``; ``muprewrite.optimizer`` builds the pair.
    Under a rule with ``weight_decay_coupling = "independent"``, ``weight_decay`` is the
    per-step decay, and each group's torch ``weight_decay`` is that over its ``lr`` (torch's
    AdamW decays by lr * weight_decay), so a schedule still scales the decay with the lr.

    ``hparams`` (base hyperparameters, see :mod:`muprewrite.rules.hparams`): for a model from
    ``apply``, they are the ones given to ``apply`` (passing others is refused); with a
    ``report``, their learning-rate multipliers go into the groups (the forward multipliers
    need ``apply``).

    ``no_decay``: which parameters get no weight decay at all. None (default): the rule
    decides (every parameter takes its scaled weight decay, except vector-like ones under a
    rule with ``vector_weight_decay = "none"``); ``"vectors"``: also every parameter with
    fewer than 2 dimensions (biases, norm gains), nanoGPT's and most trainers' convention.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"param_groups needs the model (an nn.Module), got "
                         f"{type(model).__name__}", fix="param_groups(model, lr=...)")
    _check_numbers(lr=lr, weight_decay=weight_decay, eps=eps)
    if no_decay not in NO_DECAY:
        raise UsageError(f"no_decay={no_decay!r} is not a policy: {', '.join(map(repr, NO_DECAY))}",
                         fix='no_decay="vectors" (no weight decay on biases and norm gains), or '
                             "leave it out (the rule's weight decay on every parameter)")
    model = unwrap(model)  # torch.compile / DDP wrappers: the names are the model's own
    plan = plan_of(model)
    if getattr(model, PENDING_ATTR, False):
        warnings.warn("the model was built on the meta device and its init has not been "
                      "rescaled yet: call muprewrite.rescale_init(model) after to_empty() and "
                      "your own init", stacklevel=2)
    if plan is not None:
        asked = rule if isinstance(rule, str) or rule is None else rule.id
        if asked is not None and asked.endswith(".toml"):  # a custom rule file: its id
            asked = Path(asked).stem
        if asked is not None and asked != plan.rule:
            raise MuprewriteError(f"the model was rewritten with rule {plan.rule!r}, not "
                                  f"{asked!r}",
                                  fix="leave rule= out, or apply the other rule to a fresh model")
        if hparams is not None and as_hparams(hparams, plan.rule) != plan.hparams:
            raise MuprewriteError(f"the model was rewritten with base hyperparameters "
                                  f"{plan.hparams}, not {as_hparams(hparams, plan.rule)}",
                                  fix="leave hparams out of param_groups (apply put them in "
                                      "effect), or apply the others to a fresh model")
        refuse_edits(model, plan)  # a module replaced, a parameter added since apply
        factors, report = plan.params, plan.report
        family, adjust, coupling = (plan.optimizer, plan.muon_adjust_lr_fn,
                                    plan.weight_decay_coupling)
    else:
        if report is not None and not isinstance(report, Report):
            raise UsageError(f"report must be a muprewrite Report, got {type(report).__name__}",
                             fix="report = muprewrite.analyze(model, inputs, base=...); "
                                 "pass the rule by name: rule=\"mup\"")
        if report is None:
            raise MuprewriteError(f"{type(model).__name__} was not rewritten by "
                                  "muprewrite.apply, and no report was given",
                                  fix="model = muprewrite.apply(model, inputs, base=...), or "
                                      "pass report=analyze(model, inputs, base=...)")
        if report.mode != "base":
            raise MuprewriteError("param_groups needs width multipliers, which a single "
                                  "capture does not measure", fix="analyze(model, inputs, "
                                  "base=<the model at base width>) and pass that report")
        loaded = load_rule(rule or "mup") if not isinstance(rule, Rule) else rule
        factors = param_factors(report, loaded, as_hparams(hparams, loaded.id))
        family, coupling = loaded.optimizer, loaded.weight_decay_coupling
        adjust = loaded.muon.adjust_lr_fn if loaded.muon is not None else None
    _check_report(model, report)
    values = _values(family, lr, weight_decay, adam_lr, adam_weight_decay)
    groups: dict[tuple[bool, float, float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        f = factors[name]
        decay = 0.0 if no_decay == "vectors" and param.dim() < 2 else f.weight_decay
        key = (f.muon, f.lr, decay, f.eps)
        if key not in groups:
            base_lr, base_wd = values[f.muon]
            group_lr, group_wd = base_lr * f.lr, base_wd * decay
            if coupling == "independent" and group_wd:  # torch decays by lr * wd
                if not group_lr:
                    raise UsageError(f"{name!r}: an independent weight decay is handed to "
                                     "torch as weight_decay / lr, and its lr is 0",
                                     fix="pass a positive lr (a schedule may still reach 0)")
                group_wd /= group_lr
            group: dict[str, Any] = {"params": [], "param_names": [], "lr": group_lr,
                                     "weight_decay": group_wd, "lr_factor": f.lr,
                                     "base_lr": base_lr}
            if family == "muon":
                group["optimizer"] = "muon" if f.muon else "adamw"
            if f.muon:
                group["adjust_lr_fn"] = adjust
            elif family in ("adam", "muon"):
                group["eps"] = eps * f.eps
            groups[key] = group
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise UsageError(f"{type(model).__name__} has no trainable parameter",
                         fix="unfreeze what is to be trained (requires_grad=True) before "
                             "analysing it")
    return list(groups.values())


def _values(family: str, lr: float, weight_decay: float, adam_lr: float | None,
            adam_weight_decay: float | None) -> dict[bool, tuple[float, float]]:
    """(lr, weight decay) at base width for the Muon groups (True) and the others (False)."""
    _check_numbers(**{k: v for k, v in (("adam_lr", adam_lr),
                                        ("adam_weight_decay", adam_weight_decay)) if v is not None})
    if family != "muon":
        if adam_lr is not None or adam_weight_decay is not None:
            raise UsageError(f"adam_lr and adam_weight_decay are for Muon rules; this is a "
                             f"{family} rule, where lr and weight_decay are every group's",
                             fix="leave adam_lr/adam_weight_decay out, or use rule=\"mup-muon\"")
        return {False: (lr, weight_decay)}
    if adam_lr is None:
        raise UsageError("a Muon rule steps hidden matrices with Muon (lr=) and the rest with "
                         "AdamW, whose learning rate is adam_lr=: it is missing",
                         fix="muprewrite.optimizer(model, lr=0.02, adam_lr=3e-3), or "
                             "param_groups(model, lr=..., adam_lr=...) to split the groups "
                             "yourself")
    adam_wd = weight_decay if adam_weight_decay is None else adam_weight_decay
    return {True: (lr, weight_decay), False: (adam_lr, adam_wd)}


def _check_numbers(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
            raise UsageError(f"{name} must be a number, got {type(value).__name__} {value!r}",
                             fix=f"{name}=1e-3 (the value tuned at base width)")


def _check_report(model: nn.Module, report: Report) -> None:
    """The report must describe this very model: same names and shapes, and nothing trained
    now that was frozen when it was analysed."""
    mismatches = report.mismatches({n: tuple(p.shape) for n, p in model.named_parameters()})
    if mismatches:
        raise UsageError(f"the report does not describe {type(model).__name__}: "
                         f"{first_few(mismatches)}",
                         fix="pass the report of this very model: analyze(model, inputs, "
                             "base=...) on the model you train, at its width and structure")
    thawed = [n for n, p in model.named_parameters()
              if p.requires_grad and not report[n].trainable]
    if thawed:
        raise UsageError(f"{thawed[0]!r} was frozen when the model was analysed, so it got no "
                         f"muP factors, and it is trainable now"
                         + (f" ({len(thawed) - 1} more)" if len(thawed) > 1 else ""),
                         fix="set requires_grad as it will be in training before apply/"
                             "analyze, or freeze it again")
