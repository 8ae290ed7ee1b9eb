"""Planning a file with base hyperparameters (``emit(..., hparams=...)``): which sites and classes.

With base hyperparameters every use of an input or output weight and every attention takes an
edit (so that each MUP_* constant has its uses whatever its value), each parameter a class that
says the constants it takes (``param_class``, keyed by its base partner under a depth rule),
and the constants their names (``CONSTANTS``). The block's text is ``write/tuned_block.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from torch import fx, nn

from ...analysis.report import ParamInfo, Report
from ...analysis.uses import Use
from ...rewrite.plan import ParamPlan, Plan, make_plan
from ...rules import Rule
from ...rules.hparams import HPARAM_NAMES, Card, HParamsLike, hparam_class
from ...rules.hparams import param_class as classify
from ..errors import EmitError
from ..find.locate import locate
from ..find.sites import Sites

if TYPE_CHECKING:
    from ..find.project import Project

__all__ = ["CONSTANTS", "ATTENTION", "param_class", "tuned_uses", "locate_tuned", "classes_of",
           "card_name"]

CONSTANTS = {name: f"MUP_{name.upper()}" for name in HPARAM_NAMES}  # field -> constant
ATTENTION = CONSTANTS["attention_multiplier"]


def param_class(info: ParamInfo) -> str | None:
    """Which base hyperparameters a parameter takes (a key of ``HPARAM_ROWS``); None: none
    (unused, frozen)."""
    if info.role == "unused" or not info.trainable:
        return None
    if info.tied and hparam_class(info.role, info.kind) != "input":
        raise EmitError(f"internal: the tied weight {info.name!r} has role {info.role!r}",
                        fix="please report it with the model file")
    return classify(info.role, info.kind, info.tied)


def tuned_uses(report: Report, params: Mapping[str, ParamPlan]) -> Iterator[tuple[str, Use]]:
    """(parameter, use) for every use that takes a forward multiplier in a file with base
    hyperparameters: those with a factor of the rule or of the values given, and every use
    of an input or output weight and a tied embedding, so that each constant can be edited."""
    for name, plan in params.items():
        info = report[name]
        editable = param_class(info) in ("input", "output", "tied")
        for use in info.uses:
            lookup = info.tied and use.slot == "embedding"
            if editable or (plan.gather if lookup else plan.multiplier) != 1.0:
                yield name, use


def locate_tuned(model: nn.Module, project: Project, plan: Plan, graph: fx.Graph, rule: Rule,
                 names: Mapping[str, tuple[str, ...]], logits: Mapping[str, str]) -> Sites:
    """The sites of ``plan`` (made with the base hyperparameters), and also every use of an
    input or output weight and every attention site whatever its d_head, so that each
    constant has its uses whatever its value; every attention takes the head size factor
    (where d_head is fixed, with that size as the base's: 1 at the emitted widths), so that
    a width with another head size is right too."""
    every = make_plan(plan.report, graph, rule, names,
                      replace(plan.hparams, attention_multiplier=2.0))  # every site: not 1
    growing = {s.node for s in plan.report.attention  # a fixed head size takes it too (1
               if rule.attention != "unchanged"}       # there), right at any head size
    return locate(model, project, every, names, logits, uses=tuned_uses(plan.report, plan.params),
                  growing=growing, attention_multiplier=ATTENTION)


def classes_of(report: Report, partners: Mapping[str, str]) -> dict[str, str | None]:
    """Parameter (the base's partner, under a depth rule) -> its class (None: none)."""
    out: dict[str, str | None] = {}
    for info in report:
        key, value = partners.get(info.name, info.name), param_class(info)
        if out.setdefault(key, value) != value:
            raise EmitError(f"{info.name} and another parameter paired with the base's {key} "
                            "take different base hyperparameters, so one entry of the emitted "
                            "file cannot serve both",
                            fix="use muprewrite.apply(model, ..., hparams=...) at runtime")
    return out


def card_name(hparams: HParamsLike) -> str:
    """The file name of the card ``hparams`` was read from ("" for values given in code)."""
    if isinstance(hparams, str | os.PathLike):
        return Path(hparams).name
    if isinstance(hparams, Card) and hparams.path is not None:
        return hparams.path.name
    return ""
