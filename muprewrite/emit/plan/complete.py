"""Stage 6a, complete: the captured sites and the pattern scans merged into node edits.

Each site (a readout, an attention, the residual adds of a host under a depth rule) is
scanned in every file of its scope (the classes of its module's MRO written in
the project; for an attention, also the top-level function holding its line). Each captured
site (a line one capture ran through) must match a node the scans found in the site's own
file: a node spanning the line, or one inside a method or function called on that line
(``torch.export`` records ``self.forward_head(x)``'s line, not the line inside
``forward_head``). Every other node the scans found is edited too, and reported as found by
pattern only. A captured site with no matching node, or a use the scans refused, is an
EmitError at ``path:line``. An attention edit reads d_head off the axis of its query that the
capture found (``AttentionSite.d_head_axis``), or for a node no capture ran, the one its einsum
equation shows; where neither says, or they differ, it is an EmitError too. The result is one
``Edits`` per file that changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import libcst as cst

from ...errors import first_few
from ..cst.source import SourceFile
from ..errors import EmitError
from ..find.attention import attention_functions, scan_attention
from ..find.branches import scan_branches
from ..find.readouts import scan_readout
from ..find.scan import FIX, Found, Refusal, Scan
from ..find.sites import BRANCH_ATTRIBUTE, AttentionScaleSite, ReadoutSite, Sites, by_file
from .edits import Edits, NodeEdit

if TYPE_CHECKING:
    from ..find.project import Project

__all__ = ["complete"]

Site = ReadoutSite | AttentionScaleSite


def complete(project: Project, sites: Sites) -> dict[Path, Edits]:
    """The edits of every file that changes (resolved path -> edits), main file first."""
    merge = _Merge()
    for site in sites.readouts:
        for file, classes in by_file(site.scope or ((site.file, site.host_class),)).items():
            src = project.parsed(file).src
            merge.add(src, scan_readout(src, site, classes), site.attribute,
                      site if file == site.file else None, src.methods(classes), classes)
    for asite in sites.attention:
        groups = by_file(asite.scope)
        groups.setdefault(asite.file, ())  # the line may be in a top-level function there
        for file, classes in groups.items():
            src = project.parsed(file).src
            extra = src.top_function(asite.line) if file == asite.file else None
            functions = attention_functions(src, classes, [extra] if extra else [])
            merge.add(src, scan_attention(src, functions, dict(asite.children)), asite.constant,
                      asite if file == asite.file else None, functions, classes,
                      asite.multiplier)
    for bsite in sites.branches:
        for file, classes in by_file(bsite.scope).items():
            src = project.parsed(file).src
            functions = src.methods(classes)
            merge.add(src, scan_branches(src, functions, bsite.modules)[0], BRANCH_ATTRIBUTE,
                      None, functions, classes)
        merge.verified.update(bsite.verified)
    merge.check()
    edits = merge.edits()
    order = [p.path.resolve() for p in project.files()]
    return {file: edits[file] for file in sorted(edits, key=order.index)}


class _Merge:
    def __init__(self) -> None:
        # node -> (what the scan found, its factor, the file holding it, a constant it takes)
        self.found: dict[cst.CSTNode, tuple[Found, str, SourceFile, str]] = {}
        self.verified: set[cst.CSTNode] = set()
        self.refusals: dict[cst.CSTNode, tuple[Refusal, SourceFile]] = {}
        self.unmatched: list[tuple[Site, SourceFile]] = []
        self.axes: dict[cst.CSTNode, set[int]] = {}  # attention node -> captured d_head axes

    def add(self, src: SourceFile, scan: Scan, factor: str, site: Site | None,
            functions: Sequence[cst.FunctionDef], scope: Sequence[str],
            multiplier: str = "") -> None:
        """``site``: the captured site when ``src`` holds its line (None: pattern only);
        ``multiplier``: a base hyperparameter's constant the edits take too."""
        for found in scan.found:
            seen = self.found.setdefault(found.node, (found, factor, src, multiplier))
            if seen[1] != factor or seen[3] != multiplier:
                raise EmitError(f"one call takes two muP factors ({seen[1]}, {factor}); the "
                                "emitter cannot place both", where=src.where(found.node),
                                fix=FIX)
        for refusal in scan.refusals:
            self.refusals.setdefault(refusal.node, (refusal, src))
        if site is None:
            return
        matched = _match(src, scan.found, site.line, functions, scope)
        if not matched:
            self.unmatched.append((site, src))
        if len(matched) == 1 or any(src.contains(f.node, site.line) for f in matched):
            self.verified.update(f.node for f in matched)
            if isinstance(site, AttentionScaleSite):
                for f in matched:
                    self.axes.setdefault(f.node, set()).add(site.d_head_axis)

    def check(self) -> None:
        for site, src in self.unmatched:
            on_line = [r for r, s in self.refusals.values()
                       if s is src and src.contains(r.node, site.line)]
            if on_line and isinstance(site, AttentionScaleSite):
                self._refuse([(r, src) for r in on_line])
            raise _unmatched(src, site, on_line[0].message if on_line else "")
        if self.refusals:
            self._refuse(list(self.refusals.values()))

    def _refuse(self, refusals: list[tuple[Refusal, SourceFile]]) -> None:
        first, src = refusals[0]
        more = [s.where(r.node) for r, s in refusals[1:]]
        also = f" (also at {first_few(more)})" if more else ""
        raise EmitError(first.message + also, where=src.where(first.node), fix=first.fix)

    def edits(self) -> dict[Path, Edits]:
        files: dict[Path, _FileEdits] = {}
        for node, (found, factor, src, multiplier) in self.found.items():
            key = src.path.resolve()
            files.setdefault(key, _FileEdits(src)).add(node, found, factor,
                                                       node in self.verified, multiplier,
                                                       self._axis(node, found, factor, src))
        return {key: f.edits() for key, f in files.items()}

    def _axis(self, node: cst.CSTNode, found: Found, factor: str, src: SourceFile) -> int:
        """The axis of an attention's query that holds d_head: as the captures ran it, and as
        the source shows it (an einsum's equation) where no capture did; refused where these
        differ or neither says (never ``q.shape[-1]`` by default)."""
        if found.kind not in ("sdpa", "logits") or found.kind == "logits" and not factor:
            return -1  # no head size read: the logits take only a base hyperparameter
        axes = self.axes.get(node, set()) | ({found.axis} if found.axis is not None else set())
        if len(axes) == 1:
            return next(iter(axes))
        if axes:
            listed = ", ".join(map(str, sorted(axes)))
            raise EmitError(f"the query of this q.k^T product holds the head size at axes "
                            f"{listed} (from the end) in different runs, or as run and as "
                            "written; one expression cannot read d_head for all of them",
                            where=src.where(node),
                            fix="compute each layout on a line of its own with a string "
                                "equation, or " + FIX)
        raise EmitError("the equation of this einsum is not a string literal (or the index "
                        "it sums sits before '...'), so the axis of the query holding the head "
                        "size cannot be read, and no capture ran it", where=src.where(node),
                        fix='write the equation in the call, e.g. torch.einsum("bhnd,bhmd->'
                            'bhnm", q, k), or run this path in the capture (example inputs), '
                            "or " + FIX)


class _FileEdits:
    """The edits of one file, gathered node by node."""

    def __init__(self, src: SourceFile) -> None:
        self.src = src
        self.nodes: dict[cst.CSTNode, NodeEdit] = {}
        self.defaults: dict[str, list[str]] = {}
        self.lines: dict[str, list[int]] = {"readout": [], "attention": [], "branch": []}
        self.unverified: list[str] = []

    def add(self, node: cst.CSTNode, found: Found, factor: str, verified: bool,
            multiplier: str = "", axis: int = -1) -> None:
        line = self.src.line(node)
        self.nodes[node] = NodeEdit(found.kind, factor, self.src.where(line), found.scale_input,
                                    found.query, found.operand, multiplier, axis)
        attention = found.kind in ("sdpa", "logits")
        self.lines["attention" if attention else found.kind if found.kind == "branch"
                   else "readout"].append(line)
        if not attention:
            cls = self.src.top_class(node) or ""
            if factor not in self.defaults.setdefault(cls, []):
                self.defaults[cls].append(factor)
        if not verified:
            self.unverified.append(f"{self.src.path.name}:{line}: {found.what} not run by any "
                                   "capture; edited by pattern")

    def edits(self) -> Edits:
        return Edits(self.nodes, {c: tuple(a) for c, a in self.defaults.items()},
                     {k: tuple(sorted(set(v))) for k, v in self.lines.items()},
                     tuple(sorted(self.unverified, key=_line_key)))


def _match(src: SourceFile, found: Sequence[Found], line: int,
           functions: Sequence[cst.FunctionDef], scope: Sequence[str]) -> list[Found]:
    """The nodes a captured line stands for: on the line, else in what the line calls."""
    direct = [f for f in found if src.contains(f.node, line)]
    if direct:
        return direct
    calls = [c for fn in functions for c in src.nodes(fn, cst.Call) if src.contains(c, line)]
    reached = src.reach(calls, scope)
    return [f for f in found if any(src.inside(f.node, fn) for fn in reached)]


def _line_key(text: str) -> int:
    return int(text.split(":")[1])


def _unmatched(src: SourceFile, site: Site, why: str) -> EmitError:
    where = src.where(site.line)
    if isinstance(site, AttentionScaleSite):
        needs = ""
        if site.multiplier and not site.constant:
            needs = (f" (its d_head does not grow, but with base hyperparameters every "
                     f"attention's logits take {site.multiplier})")
        elif site.multiplier:
            needs = f" (with base hyperparameters its logits also take {site.multiplier})"
        if site.scope:  # the attention's module is the user's: the code is elsewhere
            classes = ", ".join(dict.fromkeys(name for _, name in site.scope))
            whose = (f"in the methods of {classes} or the functions of this file they call "
                     "(it is computed in code the emitter does not follow, such as a function "
                     "of another file)")
            fix = (f"compute the attention in a method of {classes} or a function of "
                   f"{site.file.name or 'this file'}, or use muprewrite.apply(model, ...) at "
                   "runtime")
        else:
            whose = "in this file (a library module computes it)"
            fix = ("call F.scaled_dot_product_attention in your own module, or use "
                   "muprewrite.apply(model, ...) at runtime")
        return EmitError(f"line {site.line}: the attention there is not a "
                         "scaled_dot_product_attention call or a softmax over q.k^T written "
                         f"{whose}, so its scale cannot be set here{needs}", where=where,
                         fix=fix)
    how = f"self.{site.callee}(x)" if site.callee else f"F.linear(x, self.{site.param_attr})"
    return EmitError(f"line {site.line}: no call of self.{site.callee or site.param_attr} in "
                     f"{site.host_class} to put the output multiplier on"
                     + (f" ({why})" if why else ""), where=where,
                     fix=f"write the readout as {how} on that line, or use "
                         "muprewrite.apply(model, ...) at runtime")
