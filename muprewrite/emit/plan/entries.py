"""The entries of ``MUP_PARAMS``: each parameter's fan axes and the exponents of its factors.

A parameter's entry is keyed by its name with layer indices collapsed where every layer has
the same entry (``blocks.*.attn.qkv.weight``), so that one file serves any depth; under a depth
rule, by its base partner's name (``plan/depth.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ...analysis.report import ParamInfo, Report
from ...rewrite.plan import tied_multiplier, vector_like
from ...rules import Exponents, Rule
from ..cst.literals import number as _number
from ..cst.literals import numbers_tuple, string

__all__ = ["MUON_FLAG", "NO_DECAY_FLAG", "Entry", "layer_pattern", "module_pattern", "collapse",
           "param_entry", "width_axes"]

# flags in a parameter's exponents (factor 1, so mup_factors keeps them as they are): stepped
# by torch.optim.Muon (a Muon rule's hidden matrix); no weight decay (vector_weight_decay "none")
MUON_FLAG = "muon"
NO_DECAY_FLAG = "no_weight_decay"
_QUANTITIES = ("init", "multiplier", "lr", "eps", "weight_decay")

_V = TypeVar("_V")
_INDEX = re.compile(r"(^|\.)\d+(?=\.)")
_MODULE_INDEX = re.compile(r"(^|\.)\d+(?=\.|$)")


def layer_pattern(name: str) -> str:
    """``blocks.3.attn.qkv.weight`` -> ``blocks.*.attn.qkv.weight`` (the emitted lookup)."""
    return _INDEX.sub(r"\1*", name)


def module_pattern(path: str) -> str:
    """``blocks.3`` -> ``blocks.*``: a module path with every layer index collapsed."""
    return _MODULE_INDEX.sub(r"\1*", path)


@dataclass(frozen=True)
class Entry:
    """One parameter's line in ``MUP_PARAMS``: fan axes and the nonzero exponents."""

    fan_in: tuple[int, ...]
    fan_out: tuple[int, ...]
    # (quantity, exponent of m_in, of m_out[, of m_L under a depth rule])
    exponents: tuple[tuple[Any, ...], ...]
    in_branch: bool | None = None  # inside a residual branch (None: a width-only rule)

    def code(self) -> str:
        exps = ", ".join(f'{string(q)}: ({", ".join(_number(x) for x in xs)})'
                         for q, *xs in self.exponents)
        branch = "" if self.in_branch is None else f" {self.in_branch},"
        return f"({numbers_tuple(self.fan_in)}, {numbers_tuple(self.fan_out)},{branch} {{{exps}}})"


def collapse(values: Mapping[str, _V | None]) -> dict[str, _V]:
    """Merge names that differ only in layer indices when every such name has the same value.

    ``values`` holds every parameter (None: no entry), so that a pattern never covers a
    parameter that should have none.
    """
    groups: dict[str, list[str]] = {}
    for name in values:
        groups.setdefault(layer_pattern(name), []).append(name)
    out: dict[str, _V] = {}
    for pattern, names in groups.items():
        first = values[names[0]]
        if len(names) > 1 and all(values[n] == first for n in names):
            if first is not None:
                out[pattern] = first
            continue
        for n in names:
            entry = values[n]
            if entry is not None:
                out[n] = entry
    return out


def param_entry(info: ParamInfo, rule: Rule, depth: bool = False) -> Entry | None:
    """A parameter's line of MUP_PARAMS; ``depth``: with its m_L exponents and whether it
    lies inside a residual branch (such a parameter always has one: its init is rescaled).

    As ``rule_factors``: a matrix Muon steps takes the [muon] row's lr and weight decay (and no
    eps) and the flag MUON_FLAG; a vector-like parameter under ``vector_weight_decay = "none"``
    takes NO_DECAY_FLAG (weight decay 0) instead of weight decay exponents. A flag is an
    exponent-free quantity (factor 1), so it is kept whatever the exponents."""
    if info.role == "unused":
        return None
    row = rule.scaling(info.role, info.kind)
    exps: dict[str, Exponents] = {q: getattr(row, q) for q in _QUANTITIES}
    if info.tied:  # its readout use scales as an output weight's
        exps["multiplier"] = tied_multiplier(rule, row)
    flags: list[str] = []
    if rule.muon is not None and rule.steps_with_muon(info.role, info.kind, len(info.shape)):
        exps.update(lr=rule.muon.lr, weight_decay=rule.muon.weight_decay)
        del exps["eps"]
        flags.append(MUON_FLAG)
    elif rule.vector_weight_decay == "none" and vector_like(info):
        del exps["weight_decay"]
        flags.append(NO_DECAY_FLAG)
    if not depth:
        kept: tuple[tuple, ...] = tuple(
            (q, float(e.m_in) + 0.0, float(e.m_out) + 0.0)  # + 0.0: no -0.0 printed
            for q, e in exps.items() if e.m_in or e.m_out) + tuple((f, 0.0, 0.0) for f in flags)
        return Entry(info.fan_in, info.fan_out, kept) if kept else None
    inside = info.in_branch
    kept = tuple((q, float(e.m_in) + 0.0, float(e.m_out) + 0.0,
                  float(e.m_depth if inside else 0.0) + 0.0)
                 for q, e in exps.items() if e.m_in or e.m_out or inside and e.m_depth)
    kept += tuple((f, 0.0, 0.0, 0.0) for f in flags)
    return Entry(info.fan_in, info.fan_out, kept, inside) if kept or inside else None


def width_axes(report: Report, partners: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """Per parameter (its base partner under a depth rule), the axes that grow with width:
    the emitted ``mup_factors`` holds every other axis to the base's size."""
    axes: dict[str, tuple[int, ...] | None] = {}
    for info in report:
        key = partners.get(info.name, info.name)
        union = set(axes.get(key) or ()) | set(info.width_axes)
        axes[key] = tuple(sorted(union)) or None
    return collapse(axes)
