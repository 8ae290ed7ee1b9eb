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
``lr_factor`` and ``param_names`` for inspection. LR schedulers rescale every group's lr by
the same factor, so the ratios between groups (the muP part) survive them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .analysis.report import Report
from .errors import MuprewriteError
from .rules import Rule, load_rule

__all__ = ["param_groups"]


def param_groups(model: nn.Module, report: Report, *, rule: str | Rule = "mup", lr: float,
                 weight_decay: float = 0.0, eps: float = 1e-8) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into groups scaled per ``rule``.

    ``report`` must come from ``analyze(model, ..., base=...)``: the width multipliers are
    what the factors are computed from. ``lr``, ``weight_decay`` and ``eps`` are the values
    tuned at base width. Frozen parameters are left out.
    """
    rule = load_rule(rule) if isinstance(rule, str) else rule
    if report.mode != "base":
        raise MuprewriteError("param_groups needs width multipliers, which a single capture "
                              "does not measure", fix="analyze(model, inputs, base=<the model "
                              "at base width>) and pass that report")
    groups: dict[tuple[float, float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name not in report.params:
            raise MuprewriteError(f"parameter {name!r} is not in the report",
                                  fix="pass the report of this very model (analyze it again "
                                      "after changing its structure)")
        info = report[name]
        row = rule.scaling(info.role, info.kind)
        m_in, m_out = info.m_in or 1.0, info.m_out or 1.0
        key = (row.lr.factor(m_in, m_out), row.weight_decay.factor(m_in, m_out),
               row.eps.factor(m_in, m_out))
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "lr": lr * key[0],
                           "weight_decay": weight_decay * key[1], "lr_factor": key[0]}
            if rule.optimizer == "adam":
                groups[key]["eps"] = eps * key[2]
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())
