"""Human-readable rendering of a Report (the CLI prints this)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Report

__all__ = ["render_table"]


def _axes(shape: tuple[int, ...], width: tuple[int, ...]) -> str:
    return "(" + ", ".join(f"{s}*" if i in width else str(s) for i, s in enumerate(shape)) + ")"


def _mult(m: float | None) -> str:
    return "" if m is None else f"{m:g}"


def render_table(report: Report) -> str:
    rows = [("parameter", "shape (* = width)", "role", "kind", "m_in", "m_out", "notes", "source")]
    for p in report:
        notes = ", ".join(n for n, on in (("tied", p.tied), ("frozen", not p.trainable)) if on)
        rows.append((p.name, _axes(p.shape, p.width_axes), p.role, p.kind, _mult(p.m_in),
                     _mult(p.m_out), notes, p.source.rsplit("/", 1)[-1]))
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
    lines.append("roles: " + ", ".join(f"{counts[r]} {r}" for r in sorted(counts)))
    if report.attention:
        lines.append("")
        lines.append("attention sites:")
        for a in report.attention:
            grows = "d_head grows: logits need 1/d_head" if a.d_head_grows \
                else "d_head fixed: 1/sqrt(d_head) already muP"
            heads = f"{a.heads} heads x " if a.heads is not None else ""
            lines.append(f"  {a.node} ({a.kind}) in {a.module or '<root>'}: {heads}d_head "
                         f"{a.d_head}; {grows}  [{a.source.rsplit('/', 1)[-1]}]")
    if report.buffers:
        lines.append("")
        lines.append("buffers (not trained): " + ", ".join(
            f"{b.name}{_axes(b.shape, b.width_axes)}" for b in report.buffers))
    for text in report.assumptions:
        lines.append(f"assumed: {text}")
    for d in report.diagnostics:
        if d.severity != "info":
            fix = f" (fix: {d.fix})" if d.fix else ""
            lines.append(f"{d.severity}: {d.where}: {d.message}{fix}")
    return "\n".join(lines)
