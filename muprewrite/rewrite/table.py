"""Stage 4b — the runtime key of the attention edit: a host's logit factor per head size.

One capture is one path through a host's forward; the user may train or sample through
another (a ``fused_attn`` switch, a 'flash' | 'math' attribute, ``nn.MultiheadAttention``'s
``need_weights``). So the runtime edit is keyed to what an attention call *is*: the factor
is a function of the query's head size d_head, which every attention call shows (the
query's last axis; ``embed_dim // num_heads`` for ``F.multi_head_attention_forward``), and
this table gives it. A host's table lists every attention site the capture saw in the
host's subtree, scaled or not (factor 1 where d_head does not grow or where the query/key
projections are frozen), so that a site the rule leaves alone is never scaled by mistake,
and whether the capture saw a softmax there that is not attention (``plain_softmax``):
without one, a softmax the runtime cannot trace to a q.k^T product is refused.

>>> table = LogitTable("blocks.0.attn", ((64, 0.5),), ("model.py:42",))
>>> table.factor(64), table.factor(32)
(0.5, None)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import fx

from ..analysis.attention import SOFTMAX_OPS
from ..analysis.report import Report
from ..capture.source import node_module
from ..dims.registry import op_name
from ..errors import MuprewriteError

__all__ = ["LogitTable", "logit_tables", "within"]


@dataclass(frozen=True)
class LogitTable:
    """``factors``: (d_head at this width, factor on the logits relative to the model's own
    scale); ``sources``: the file:line of the sites it was built from, for messages;
    ``plain_softmax``: the capture saw a softmax here that is not attention."""

    host: str
    factors: tuple[tuple[int, float], ...]
    sources: tuple[str, ...]
    plain_softmax: bool = False

    def factor(self, d_head: int) -> float | None:
        for size, factor in self.factors:
            if size == d_head:
                return factor
        return None

    def planned(self) -> str:
        return ", ".join(f"d_head {d}: x{f:.6g}" for d, f in self.factors)


def within(module: str, ancestor: str) -> bool:
    """``module`` is ``ancestor`` or lies under it ('' is the root)."""
    return ancestor == "" or module == ancestor or module.startswith(ancestor + ".")


def logit_tables(report: Report, graph: fx.Graph, hosts: Mapping[str, Iterable[str]],
                 factors: Mapping[str, float]) -> dict[str, LogitTable]:
    """One table per host. ``hosts``: host -> the sites (graph node names) its edits came
    from; ``factors``: site -> factor, for the sites that take one (the others take 1)."""
    sites = {site.node for site in report.attention}
    plain = {node_module(n) for n in graph.nodes if n.op == "call_function"
             and op_name(n) in SOFTMAX_OPS and n.name not in sites}
    tables = {}
    for host, own in hosts.items():
        own = set(own)
        entries: dict[int, tuple[float, str]] = {}
        sources: set[str] = set()
        for site in report.attention:
            if site.node not in own and not within(site.module, host):
                continue
            factor, where = factors.get(site.node, 1.0), site.source or site.node
            sources.add(where)
            seen = entries.setdefault(site.d_head, (factor, where))
            if seen[0] != factor:
                raise MuprewriteError(
                    f"two attention sites under {host or 'the root module'} have head size "
                    f"{site.d_head} but need different logit factors (x{seen[0]:.6g} at "
                    f"{seen[1]}, x{factor:.6g} at {where}); the runtime edit tells attention "
                    "calls apart by head size and cannot serve both", where=where,
                    fix="give the two attentions different head sizes or put them in "
                        "different modules, or use the source emitter (muprewrite model.py)")
        tables[host] = LogitTable(host, tuple((d, f) for d, (f, _) in sorted(entries.items())),
                                  tuple(sorted(sources)),
                                  any(within(module, host) for module in plain))
    return tables
