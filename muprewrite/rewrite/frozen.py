"""Frozen parameters keep their function: what the plan leaves out for them, and why.

A parameter with ``requires_grad=False`` when the model is analysed (a frozen pretrained
base under LoRA adapters, a sin-cos position table) is not trained, so muP has nothing to
say about its updates, and any factor on it would change the function it was trained or
built to compute. The plan therefore gives it no init rescale, no forward multiplier (a
frozen tied embedding/readout keeps both uses as they are), no optimizer group, and an
attention site whose query or key comes from a frozen projection keeps its logit scale.
Each such decision is recorded as an ``info`` Diagnostic on the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import fx

from ..analysis.attention import AttentionPattern
from ..analysis.report import Diagnostic, Report
from .factors import ParamPlan

__all__ = ["frozen_diagnostics", "frozen_projections"]

_PROJECTION_SLOTS = ("weight", "embedding")
_SEARCH_LIMIT = 2000  # graph nodes visited per attention site


def frozen_diagnostics(report: Report, would: Mapping[str, ParamPlan]) -> list[Diagnostic]:
    """One ``frozen`` diagnostic per frozen parameter the rule would have changed.

    ``would``: the rule's factors for each frozen parameter, as if it were trained.
    """
    out = []
    for name, plan in would.items():
        info = report[name]
        changes = [f"{what} x{value:g}" for what, value in
                   (("init", plan.init), ("forward multiplier", plan.multiplier),
                    ("learning rate", plan.lr)) if value != 1.0]
        if changes:
            out.append(Diagnostic(
                "info", "frozen", name,
                f"frozen (requires_grad=False) {info.role} parameter left as it is; as a "
                f"trained one the rule would give it {', '.join(changes)}",
                "set requires_grad=True before apply if it is to be trained"))
    return out


def frozen_projections(nodes: Mapping[str, fx.Node], report: Report,
                       pattern: AttentionPattern) -> list[str]:
    """Frozen parameters among the nearest weights that produce the site's query and key.

    Walks the graph back from q and k, stopping at each op that consumes a parameter as a
    weight (the projections); returns those that are frozen.
    """
    if all(info.trainable for info in report):
        return []
    weights: dict[str, list[str]] = {}
    for info in report:
        for use in info.uses:
            if use.slot in _PROJECTION_SLOTS:
                weights.setdefault(use.node, []).append(info.name)
    found: set[str] = set()
    seen: set[str] = set()
    frontier = list(_query_key(nodes, pattern))
    while frontier and len(seen) < _SEARCH_LIMIT:
        node = frontier.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.name in weights:
            found.update(weights[node.name])
            continue
        frontier.extend(a for a in node.all_input_nodes if a.op == "call_function")
    return sorted(name for name in found if not report[name].trainable)


def _query_key(nodes: Mapping[str, fx.Node], pattern: AttentionPattern) -> Iterable[fx.Node]:
    if pattern.kind == "sdpa":
        return [a for a in nodes[pattern.node].args[:2] if isinstance(a, fx.Node)]
    if pattern.logits is None:
        return []
    return nodes[pattern.logits].all_input_nodes
