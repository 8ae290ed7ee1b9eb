"""Stage 6a, complete: the captured sites and the pattern scans merged into node edits.

Each captured site (a line one capture ran through) must match a node the scans found: a node
spanning the line, or one inside a method or function called on that line (``torch.export``
records ``self.forward_head(x)``'s line, not the line inside ``forward_head``). Every other
node the scans found is edited too, and reported as found by pattern only. A captured site
with no matching node, or a use the scans refused, is an EmitError at ``path:line``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import libcst as cst

from ..errors import first_few
from .attention import attention_functions, scan_attention
from .forms import NodeEdit
from .readouts import scan_readout
from .sites import AttentionScaleSite, EmitError, ReadoutSite, Sites
from .source import FIX, Found, Refusal, Scan, SourceFile

__all__ = ["Edits", "complete"]


@dataclass(frozen=True)
class Edits:
    nodes: Mapping[cst.CSTNode, NodeEdit]
    defaults: Mapping[str, tuple[str, ...]]  # class -> the multiplier attributes it declares
    lines: Mapping[str, tuple[int, ...]]  # "readout" / "attention" -> edited lines
    unverified: tuple[str, ...]  # "file:line: what ... not run by any capture; edited by pattern"


def complete(src: SourceFile, sites: Sites) -> Edits:
    merge = _Merge(src)
    for site in sites.readouts:
        functions = src.methods(site.scope or (site.host_class,))
        merge.add(scan_readout(src, site), site.attribute, site, functions,
                  site.scope or (site.host_class,))
    for asite in sites.attention:
        extra = src.top_function(asite.line)
        functions = attention_functions(src, asite.scope, [extra] if extra else [])
        merge.add(scan_attention(src, functions, dict(asite.children)), asite.constant, asite,
                  functions, asite.scope)
    merge.check()
    return merge.edits()


class _Merge:
    def __init__(self, src: SourceFile) -> None:
        self.src = src
        self.found: dict[cst.CSTNode, tuple[Found, str]] = {}  # node -> (found, factor)
        self.verified: set[cst.CSTNode] = set()
        self.refusals: dict[cst.CSTNode, Refusal] = {}
        self.unmatched: list[ReadoutSite | AttentionScaleSite] = []

    def add(self, scan: Scan, factor: str, site: ReadoutSite | AttentionScaleSite,
            functions: Sequence[cst.FunctionDef], scope: Sequence[str]) -> None:
        for found in scan.found:
            seen = self.found.setdefault(found.node, (found, factor))
            if seen[1] != factor:
                raise EmitError(f"one call takes two muP factors ({seen[1]}, {factor}); the "
                                "emitter cannot place both", where=self.src.where(found.node),
                                fix=FIX)
        for refusal in scan.refusals:
            self.refusals.setdefault(refusal.node, refusal)
        matched = self._match(scan.found, site.line, functions, scope)
        if not matched:
            self.unmatched.append(site)
        if len(matched) == 1 or any(self.src.contains(f.node, site.line) for f in matched):
            self.verified.update(f.node for f in matched)

    def _match(self, found: Sequence[Found], line: int, functions: Sequence[cst.FunctionDef],
               scope: Sequence[str]) -> list[Found]:
        """The nodes a captured line stands for: on the line, else in what the line calls."""
        direct = [f for f in found if self.src.contains(f.node, line)]
        if direct:
            return direct
        calls = [c for fn in functions for c in self.src.nodes(fn, cst.Call)
                 if self.src.contains(c, line)]
        reached = self.src.reach(calls, scope)
        return [f for f in found if any(self.src.inside(f.node, fn) for fn in reached)]

    def check(self) -> None:
        for site in self.unmatched:
            on_line = [r for r in self.refusals.values() if self.src.contains(r.node, site.line)]
            if on_line and isinstance(site, AttentionScaleSite):
                self._refuse(on_line)
            raise _unmatched(self.src, site, on_line[0].message if on_line else "")
        if self.refusals:
            self._refuse(list(self.refusals.values()))

    def _refuse(self, refusals: list[Refusal]) -> None:
        first = refusals[0]
        more = [self.src.where(r.node) for r in refusals[1:]]
        also = f" (also at {first_few(more)})" if more else ""
        raise EmitError(first.message + also, where=self.src.where(first.node), fix=first.fix)

    def edits(self) -> Edits:
        nodes: dict[cst.CSTNode, NodeEdit] = {}
        defaults: dict[str, list[str]] = {}
        lines: dict[str, list[int]] = {"readout": [], "attention": []}
        unverified = []
        for node, (found, factor) in self.found.items():
            line = self.src.line(node)
            nodes[node] = NodeEdit(found.kind, factor, self.src.where(line), found.scale_input,
                                   found.query)
            attention = found.kind in ("sdpa", "logits")
            lines["attention" if attention else "readout"].append(line)
            if not attention:
                cls = self.src.top_class(node) or ""
                if factor not in defaults.setdefault(cls, []):
                    defaults[cls].append(factor)
            if node not in self.verified:
                unverified.append(f"{self.src.path.name}:{line}: {found.what} not run by any "
                                  "capture; edited by pattern")
        return Edits(nodes, {c: tuple(a) for c, a in defaults.items()},
                     {k: tuple(sorted(set(v))) for k, v in lines.items()},
                     tuple(sorted(unverified, key=_line_key)))


def _line_key(text: str) -> int:
    return int(text.split(":")[1])


def _unmatched(src: SourceFile, site: ReadoutSite | AttentionScaleSite, why: str
               ) -> EmitError:
    where = src.where(site.line)
    if isinstance(site, AttentionScaleSite):
        return EmitError(f"line {site.line}: the attention there is not a "
                         "scaled_dot_product_attention call or a softmax over q.k^T written in "
                         "this file (a library module computes it), so its scale cannot be set "
                         "here", where=where,
                         fix="call F.scaled_dot_product_attention in your own module, or use "
                             "muprewrite.apply(model, ...) at runtime")
    how = f"self.{site.callee}(x)" if site.callee else f"F.linear(x, self.{site.param_attr})"
    return EmitError(f"line {site.line}: no call of self.{site.callee or site.param_attr} in "
                     f"{site.host_class} to put the output multiplier on"
                     + (f" ({why})" if why else ""), where=where,
                     fix=f"write the readout as {how} on that line, or use "
                         "muprewrite.apply(model, ...) at runtime")
