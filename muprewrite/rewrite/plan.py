"""Stage 4 — plan: from a Report and a rule to per-parameter factors and per-module edits.

A pure function of (report, capture, rule, parameter aliases); it touches no tensor. The
plan says, for every parameter, the factors on its init scale, learning rate, Adam eps and
weight decay, and, for every module whose forward must change ("host"), which parameter
uses take a forward multiplier and which attention calls take a logit factor. Call sites
are located in the captured graph: the innermost module that ran them, and their ordinal
among calls of the same family within one call of that module (kept for the record and the
source emitter). The runtime edit does not count calls: a host's ``logits`` table gives the
factor by head size, for every attention call on any path of its forward (table.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal

from torch import fx

from ..analysis.attention import (
    MATMUL_OPS,
    SDPA_OPS,
    SOFTMAX_OPS,
    AttentionPattern,
    attention_host,
    find_attention,
)
from ..analysis.report import Diagnostic, ParamInfo, Report
from ..analysis.uses import Use
from ..dims.registry import op_name
from ..rules import Exponents, Rule, RuleError, Scaling
from ..rules.hparams import DEFAULT_HPARAMS, HPARAM_ROWS, HParams, param_class
from .branches import BranchEdit, branch_edits, check_depth_rule
from .constants import constant_corrections
from .factors import ParamPlan
from .frozen import frozen_diagnostics, frozen_projections
from .table import LogitTable, logit_tables, within

__all__ = ["ParamPlan", "UseEdit", "AttentionEdit", "HostEdit", "Plan", "param_factors", "rule_factors",
           "tied_multiplier", "multiplied_uses", "make_plan", "FAMILIES"]

Family = Literal["sdpa", "softmax", "matmul"]

# graph op names (aten overload packets) of each call family: the attention finder's sets
FAMILIES: Mapping[str, Family] = MappingProxyType(
    {**dict.fromkeys(SDPA_OPS, "sdpa"), **dict.fromkeys(SOFTMAX_OPS, "softmax"),
     **dict.fromkeys(MATMUL_OPS, "matmul")})
# ops between q.k^T and softmax through which a factor on the softmax input equals a factor
# on the logits (positive scalings, -inf masks, casts)
_HOMOGENEOUS = {"mul", "div", "masked_fill", "where", "_to_copy", "to", "clone", "contiguous",
                "type_as"}


@dataclass(frozen=True)
class UseEdit:
    """Multiply the direct consumers of a parameter (inside one host's forward) by ``factor``."""

    param: str  # path relative to the host module
    name: str  # canonical name, for messages
    factor: float
    skip_gather: bool  # a tied weight: its embedding lookups take ``gather``, not ``factor``
    gather: float = 1.0


@dataclass(frozen=True)
class AttentionEdit:
    """Multiply the attention logits of the ``ordinal``-th ``family`` call by ``factor``."""

    site: str
    source: str
    family: Family
    ordinal: int
    factor: float


@dataclass(frozen=True)
class HostEdit:
    """``logits``: the runtime key of the attention edits (None: no attention edit)."""

    module: str
    uses: tuple[UseEdit, ...]
    attention: tuple[AttentionEdit, ...]
    logits: LogitTable | None = None


@dataclass(frozen=True)
class Plan:
    """``diagnostics``: what the plan left out and why (frozen parameters, see frozen.py)."""

    rule: str
    report: Report
    params: Mapping[str, ParamPlan]
    hosts: tuple[HostEdit, ...]
    diagnostics: tuple[Diagnostic, ...] = ()
    optimizer: str = "adam"  # the rule's optimizer family (a custom rule file is not reloaded)
    branches: tuple[BranchEdit, ...] = ()  # residual branch multipliers (depth rules)
    muon_adjust_lr_fn: str | None = None  # a Muon rule's adjust_lr_fn (None: not a Muon rule)
    weight_decay_coupling: str = "coupled"  # per-step decay lr*wd, or wd ("independent")
    hparams: HParams = DEFAULT_HPARAMS  # the base hyperparameters folded into the factors

    def __getitem__(self, name: str) -> ParamPlan:
        return self.params[name]

    def __deepcopy__(self, memo: dict) -> Plan:
        return self  # immutable: a deep-copied model shares its plan


def _m(info: ParamInfo) -> tuple[float, float]:
    return (info.m_in or 1.0), (info.m_out or 1.0)


def tied_multiplier(rule: Rule, row: Scaling) -> Exponents:
    """Exponents of a tied embedding/readout weight's multiplier at its readout uses.

    Its readout contribution (init x multiplier) must scale as an output weight's at the
    readout's fan-in, which is the embedding's m_out: output(m_out, 1) / row(m_in, m_out).
    """
    out = rule.scaling("output", "weight")
    return Exponents(-(row.init.m_in + row.multiplier.m_in),
                     out.init.m_in + out.multiplier.m_in - (row.init.m_out + row.multiplier.m_out))


def param_factors(report: Report, rule: Rule, hparams: HParams = DEFAULT_HPARAMS
                  ) -> dict[str, ParamPlan]:
    """Per-parameter factors of ``rule``; needs a report made with ``base``.

    A tied embedding/readout weight takes its embedding row (init, lr, eps, weight decay)
    and, at its readout uses, the multiplier that makes its readout contribution scale as an
    output weight's: effective(output) / effective(embedding), at the readout's fan-in.
    Unused and frozen parameters (``requires_grad=False`` when analysed) take no factor at
    all: a frozen parameter keeps the function it computes (no init change, no forward
    multiplier, tied or not), and the optimizer never sees it.
    ``hparams``: the base hyperparameters, multiplied into the rule's factors (see
    :mod:`muprewrite.rules.hparams`); frozen and unused parameters take none of them either.
    """
    check_depth_rule(report, rule)  # a base of another depth needs a depth rule
    plans = {info.name: _identity(info.name) if info.role == "unused" or not info.trainable
             else with_hparams(rule_factors(info, rule), info, hparams) for info in report}
    for name, (readout, lookup) in constant_corrections(report).items():  # the model's own
        plans[name] = replace(plans[name], multiplier=plans[name].multiplier * readout,
                              gather=plans[name].gather * lookup)  # width constants
    return plans


def with_hparams(plan: ParamPlan, info: ParamInfo, hparams: HParams) -> ParamPlan:
    """``plan`` with the base hyperparameters of ``info``'s class (``HPARAM_ROWS``)
    multiplied in."""
    if hparams.is_default():
        return plan
    field = {"lookup": "gather"}  # a tied embedding's lookups
    rows = HPARAM_ROWS[param_class(info.role, info.kind, info.tied)]
    return replace(plan, **{field.get(q, q): getattr(plan, field.get(q, q)) * getattr(hparams, h)
                            for q, h in rows})


def _identity(name: str) -> ParamPlan:
    return ParamPlan(name, 1.0, 1.0, 1.0, 1.0, 1.0)


def rule_factors(info: ParamInfo, rule: Rule) -> ParamPlan:
    """The factors ``rule`` gives one used parameter, whether or not it is trainable."""
    m_in, m_out = _m(info)
    m_depth = info.m_depth or 1.0  # m_L inside residual branches, 1 elsewhere
    row = rule.scaling(info.role, info.kind)
    multiplier = row.multiplier.factor(m_in, m_out)
    if info.tied:
        multiplier = tied_multiplier(rule, row).factor(m_in, m_out)
    elif multiplier != 1.0 and info.kind not in ("weight", "embedding"):
        raise RuleError(f"rule {rule.id!r} gives the {info.kind} parameter {info.name!r} "
                        f"a forward multiplier; only weights and embeddings can take one",
                        where=str(rule.path),
                        fix=f"move the factor into [kind.{info.kind}] init instead")
    if rule.muon is not None and rule.steps_with_muon(info.role, info.kind, len(info.shape)):
        return ParamPlan(info.name, row.init.factor(m_in, m_out, m_depth),
                         rule.muon.lr.factor(m_in, m_out, m_depth), 1.0,
                         rule.muon.weight_decay.factor(m_in, m_out, m_depth), multiplier,
                         muon=True)
    no_decay = rule.vector_weight_decay == "none" and vector_like(info)
    return ParamPlan(info.name, row.init.factor(m_in, m_out, m_depth),
                     row.lr.factor(m_in, m_out, m_depth), row.eps.factor(m_in, m_out, m_depth),
                     0.0 if no_decay else row.weight_decay.factor(m_in, m_out, m_depth),
                     multiplier)


def vector_like(info: ParamInfo) -> bool:
    """Tensor Programs' vector-like parameters (one width axis, or none that contracts over
    width): input weights and embeddings, readouts, biases and norm gains."""
    return info.role in ("input", "output") or info.kind in ("bias", "norm")


def make_plan(report: Report, graph: fx.Graph, rule: Rule,
              aliases: Mapping[str, tuple[str, ...]], hparams: HParams = DEFAULT_HPARAMS) -> Plan:
    """``aliases``: canonical parameter name -> every name it has in the module tree;
    ``hparams``: the base hyperparameters (default: all 1, the rule alone)."""
    params = param_factors(report, rule, hparams)
    uses: dict[str, list[UseEdit]] = {}
    for host, edit in _use_edits(report, params, aliases):
        uses.setdefault(host, []).append(edit)
    diags = frozen_diagnostics(report, {i.name: rule_factors(i, rule) for i in report
                                        if not i.trainable and i.role != "unused"})
    attention = _attention_edits(report, graph, rule, diags, hparams.attention_multiplier)
    tables = logit_tables(report, graph, {h: [e.site for e in a] for h, a in attention.items()},
                          {e.site: e.factor for a in attention.values() for e in a})
    hosts = [HostEdit(h, tuple(uses.get(h, ())), tuple(attention.get(h, ())), tables.get(h))
             for h in dict.fromkeys([*uses, *attention])]
    return Plan(rule.id, report, MappingProxyType(params), tuple(hosts), tuple(diags),
                rule.optimizer, branch_edits(report, rule, hparams.branch_multiplier),
                rule.muon.adjust_lr_fn if rule.muon is not None else None,
                rule.weight_decay_coupling, hparams)


def _use_edits(report: Report, params: Mapping[str, ParamPlan],
               aliases: Mapping[str, tuple[str, ...]]) -> Iterator[tuple[str, UseEdit]]:
    """(host, edit) per parameter per host. A tied weight's edit in a host scales only the
    kinds of use that host makes itself (readout, lookup): an enclosing host's mode also
    sees the calls of the hosts below it, and must leave their uses alone."""
    kinds: dict[tuple[str, str, str], set[bool]] = {}
    for name, use in multiplied_uses(report, params):
        host, rel = _host_of(use.module, aliases.get(name, (name,)))
        kinds.setdefault((host, rel, name), set()).add(use.slot == "embedding")
    for (host, rel, name), lookups in kinds.items():
        plan = params[name]
        if not report[name].tied:
            yield host, UseEdit(rel, name, plan.multiplier, skip_gather=False)
            continue
        yield host, UseEdit(rel, name, plan.multiplier if False in lookups else 1.0,
                            skip_gather=True, gather=plan.gather if True in lookups else 1.0)


def _attention_edits(report: Report, graph: fx.Graph, rule: Rule, diags: list[Diagnostic],
                     multiplier: float = 1.0) -> dict[str, list[AttentionEdit]]:
    """Host -> the logit edits of the sites whose d_head grows (frozen ones: a diagnostic);
    with an attention ``multiplier`` (a base hyperparameter) every site takes it."""
    nodes = {n.name: n for n in graph.nodes}
    sites = {s.node: s for s in report.attention}
    hosts: dict[str, list[AttentionEdit]] = {}
    for pattern in find_attention(graph):
        site = sites[pattern.node]
        grows = rule.attention != "unchanged" and site.d_head_grows
        if not grows and multiplier == 1.0:
            continue
        frozen = frozen_projections(nodes, report, pattern)
        if frozen:
            diags.append(_frozen_attention(site.source or site.node, frozen))
            continue
        if grows and site.d_head_base is None:
            raise RuleError(f"attention at {site.source or site.node}: d_head grows but its "
                            "base size is unknown", fix="analyze with base=<model at base width>")
        factor = multiplier * (rule.attention_scale(site.d_head, site.d_head_base, True)
                               if grows and site.d_head_base is not None else 1.0)
        family, target = _logit_call(pattern)
        host, key = attention_host(nodes[target], nodes.get(pattern.logits or ""))
        ordinal = _ordinal(graph, nodes[target], family, key)
        hosts.setdefault(host, []).append(
            AttentionEdit(pattern.node, site.source, family, ordinal, factor))
    return hosts


def _frozen_attention(where: str, frozen: list[str]) -> Diagnostic:
    return Diagnostic("info", "frozen-attention", where,
                      f"attention logits left at their scale: query/key come from frozen "
                      f"{', '.join(frozen[:3])}{' ...' if len(frozen) > 3 else ''}",
                      "set requires_grad=True on the projections before apply if they are "
                      "to be trained")


def multiplied_uses(report: Report, params: Mapping[str, ParamPlan]
                    ) -> Iterator[tuple[str, Use]]:
    """(parameter, use) for every use that takes a forward multiplier: all uses of a
    parameter whose multiplier is not 1, except a tied weight's embedding lookups, which
    take its ``gather`` factor (the input multiplier) where that is not 1."""
    for name, plan in params.items():
        info = report[name]
        for use in info.uses:
            lookup = info.tied and use.slot == "embedding"
            if (plan.gather if lookup else plan.multiplier) != 1.0:
                yield name, use


def _logit_call(pattern: AttentionPattern) -> tuple[Family, str]:
    if pattern.kind == "sdpa":
        return "sdpa", pattern.node
    if all(op in _HOMOGENEOUS for op in pattern.path) or pattern.logits is None:
        return "softmax", pattern.node
    return "matmul", pattern.logits  # an additive bias or a soft cap sits between


def _ordinal(graph: fx.Graph, target: fx.Node, family: Family, key: str) -> int:
    """Index of ``target`` among same-family calls in the same call of its module."""
    count = 0
    for node in graph.nodes:
        if node is target:
            return count
        if node.op == "call_function" and FAMILIES.get(op_name(node)) == family and (
                not key or key in (node.meta.get("nn_module_stack") or {})):
            count += 1
    raise AssertionError(f"{target.name} not in its graph")


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def _host_of(module: str, names: tuple[str, ...]) -> tuple[str, str]:
    """The module whose forward sees the use, and the parameter's path relative to it."""
    for alias in names:
        owner = _owner(alias)
        if within(owner, module):  # the parameter lives under the using module
            return module, alias[len(module) + 1:] if module else alias
    # used by a module it does not belong to (passed in as an argument): go up to a module
    # that holds both
    owner_parts = _owner(names[0]).split(".") if _owner(names[0]) else []
    parts = module.split(".") if module else []
    common: list[str] = []
    for a, b in zip(owner_parts, parts):
        if a != b:
            break
        common.append(a)
    host = ".".join(common)
    return host, names[0][len(host) + 1:] if host else names[0]
