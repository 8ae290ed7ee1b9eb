"""Human-readable rendering of a Report (the CLI prints this).

Rows that differ only in a layer index collapse into one (``blocks.{0-55}.attn.qkv.weight``)
when everything else on the row agrees; ``collapse=False`` lists every parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from .diagnostic import Diagnostic
from .records import AttentionSite, BufferInfo, ParamInfo

if TYPE_CHECKING:
    from ..dims.width_constants import WidthConstant
    from .residual import ResidualStream

__all__ = ["GUESSES", "Tabled", "render_table"]


class Tabled(Protocol):
    """What the table reads of a :class:`~muprewrite.analysis.report.Report` (report.py
    imports this module to render itself; this module does not import it back)."""

    @property
    def model(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def heads(self) -> str: ...
    @property
    def params(self) -> Mapping[str, ParamInfo]: ...
    @property
    def attention(self) -> tuple[AttentionSite, ...]: ...
    @property
    def buffers(self) -> tuple[BufferInfo, ...]: ...
    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]: ...
    @property
    def residuals(self) -> ResidualStream | None: ...
    @property
    def depth_base(self) -> int | None: ...
    @property
    def branch_depths(self) -> Mapping[str, float]: ...
    @property
    def width_constants(self) -> tuple[WidthConstant, ...]: ...
    @property
    def depth_ratio(self) -> float: ...
    @property
    def assumptions(self) -> tuple[str, ...]: ...
    def __iter__(self) -> Iterator[ParamInfo]: ...
    def __len__(self) -> int: ...

_INDEX = re.compile(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)")


def _axes(shape: tuple[int, ...], width: tuple[int, ...]) -> str:
    return "(" + ", ".join(f"{s}*" if i in width else str(s) for i, s in enumerate(shape)) + ")"


def _mult(m: float | None) -> str:
    return "" if m is None else f"{m:g}"


def _ranges(numbers: list[int]) -> str:
    numbers = sorted(set(numbers))
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1:
        return f"{{{numbers[0]}-{numbers[-1]}}}"
    return "{" + ",".join(map(str, numbers)) + "}" if len(numbers) > 1 else str(numbers[0])


def _collapse(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Merge rows whose names differ in one index and whose other cells are equal."""
    groups: dict[tuple[str, ...], list[int]] = {}
    sources: dict[tuple[str, ...], str] = {}
    order: list[tuple[str, ...]] = []
    for row in rows:
        match = _INDEX.search(row[0])
        if match is None:
            key = row
            groups.setdefault(key, [])
        else:
            key = (row[0][:match.start()] + "#" + row[0][match.end():],) + row[1:-1]
            groups.setdefault(key, []).append(int(match.group()))
        if key not in order:
            order.append(key)
            sources[key] = row[-1]
    out = []
    for key in order:
        indices = groups[key]
        if not indices:
            out.append(key)
            continue
        out.append((key[0].replace("#", _ranges(indices)),) + key[1:] + (sources[key],))
    return out


# diagnostics that name a parameter whose single-capture role is a guess
GUESSES = frozenset({"width-sized-constant", "constant-pinned", "heads-guess",
                     "free-table-guess", "routing-width"})


def render_table(report: Tabled, collapse: bool = True) -> str:
    rows: list[tuple[str, ...]] = []
    for p in report:
        notes = ", ".join(n for n, on in (("tied", p.tied), ("frozen", not p.trainable),
                                          ("branch", p.in_branch),
                                          ("zero-size", 0 in p.shape)) if on)
        rows.append((p.name, _axes(p.shape, p.width_axes), p.role, p.kind, _mult(p.m_in),
                     _mult(p.m_out), notes, p.source.rsplit("/", 1)[-1]))
    if collapse:
        rows = _collapse(rows)
    rows.insert(0, ("parameter", "shape (* = width)", "role", "kind", "m_in", "m_out", "notes",
                    "source"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    how = "measured against base width" if report.mode == "base" else \
        f"single capture, heads={report.heads}"
    lines = [f"muprewrite analysis of {report.model} ({how})"]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    counts: dict[str, int] = {}
    for p in report:
        counts[p.role] = counts.get(p.role, 0) + 1
    lines.append(f"{len(report)} parameters: " + ", ".join(f"{counts[r]} {r}" for r in sorted(counts)))
    lines += _attention_lines(report, collapse)
    lines += _residual_lines(report, collapse)
    lines += _constant_lines(report)
    if report.buffers:
        lines.append("")
        lines.append("buffers (not trained): " + ", ".join(
            f"{b.name}{_axes(b.shape, b.width_axes)}" for b in report.buffers))
    for text in report.assumptions:
        lines.append(f"assumed: {text}")
    guesses = {d.where for d in report.diagnostics
               if d.code in GUESSES and d.where in report.params}
    if report.mode == "single":
        named = f" ({len(guesses)} parameter(s) warned below)" if guesses else ""
        lines.append(f"roles from one capture are inferred{named}: pass --base to be sure")
    for d in report.diagnostics:
        if d.severity != "info":
            fix = f" (fix: {d.fix})" if d.fix else ""
            lines.append(f"{d.severity}: {d.where}: {d.message}{fix}")
    return "\n".join(lines)


def _attention_lines(report: Tabled, collapse: bool) -> list[str]:
    if not report.attention:
        return []
    rows: list[tuple[str, ...]] = []
    for a in report.attention:
        grows = "d_head grows: logits need 1/d_head" if a.d_head_grows \
            else "d_head fixed: 1/sqrt(d_head) already muP"
        heads = f"{a.heads} heads x " if a.heads is not None else ""
        rows.append((a.module or "<root>", f"({a.kind}): {heads}d_head {a.d_head}; {grows}",
                     a.source.rsplit("/", 1)[-1]))
    if collapse:
        rows = [(r[0] + ".", *r[1:]) for r in rows]
        rows = [(r[0][:-1], *r[1:]) for r in _collapse(rows)]
    return ["", "attention sites:"] + [f"  {m} {text}  [{src}]" for m, text, src in rows]


def _residual_lines(report: Tabled, collapse: bool) -> list[str]:
    """The residual stream: block count (vs the base's), each branch's module and line."""
    stream = report.residuals
    if stream is None or not stream.branches:
        return []
    per_stream = list(dict.fromkeys(report.branch_depths.values()))  # streams, graph order
    m_l = (f"m_L per residual stream = {', '.join(f'{r:g}' for r in per_stream)}"
           if len(per_stream) > 1 else f"m_L = {report.depth_ratio:g}")
    base = f"; base {report.depth_base} blocks, {m_l}" if report.depth_base else ""
    norms = sorted({b.norm for b in stream.branches})
    rows: list[tuple[str, ...]] = [
        ((b.module or f"{b.block} (inline, no module output)") + ".", f"({b.norm}-norm)",
         b.source.rsplit("/", 1)[-1]) for b in stream.branches]
    rows = list(dict.fromkeys(rows))  # a branch captured on several input sets: one row
    rows = [(r[0][:-1], *r[1:]) for r in (_collapse(rows) if collapse else rows)]
    count = len({(b.module or b.add, b.source) for b in stream.branches})  # once per input set
    lines = ["", f"residual stream: {stream.depth} blocks, {count} branches "
             f"({'/'.join(norms)}-norm){base}:"]
    lines += [f"  {module} {text}  [{src}]" for module, text, src in rows]
    if stream.long_skips:
        lines.append(f"  long skips (not branches): {', '.join(stream.long_skips)}")
    return lines


def _constant_lines(report: Tabled) -> list[str]:
    """Width-dependent constants of the forward: where, model vs base value, accounting."""
    from .diagnose import accounting  # diagnose loads dims: only when a table is made

    if not report.width_constants:
        return []
    rows = dict.fromkeys(f"  {c.source.rsplit('/', 1)[-1]}: {c.model:.6g} here, {c.base:.6g} "
                         f"in the base; {accounting(c)}" for c in report.width_constants)
    return ["", "width-dependent constants in forward (vs the base):", *rows]
