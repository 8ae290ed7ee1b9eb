"""The records a Report holds: one per parameter (its role), buffer and attention site.

Below the Report and its rendering: this module imports only ``uses`` of the analysis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .uses import Kind, Use

__all__ = ["Role", "ParamInfo", "BufferInfo", "AttentionSite"]

Role = Literal["input", "hidden", "output", "fixed", "unused"]


@dataclass(frozen=True)
class ParamInfo:
    """What the analysis derived for one parameter.

    ``width_axes``: the axes that grow with width. ``fan_in`` / ``fan_out``: axes the
    parameter contracts over / produces at its main use. ``m_in`` / ``m_out``: width
    multipliers of those axes relative to ``base`` (None without ``base``). ``in_branch``:
    the parameter acts on the residual stream only through residual branches; ``m_depth``:
    for those, the model's blocks over the base's (None without ``base``, or outside).
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    kind: Kind
    width_axes: tuple[int, ...]
    fan_in: tuple[int, ...]
    fan_out: tuple[int, ...]
    m_in: float | None
    m_out: float | None
    tied: bool
    trainable: bool
    uses: tuple[Use, ...]
    in_branch: bool = False  # inside a residual branch (see Report.residuals)
    m_depth: float | None = None  # blocks / base blocks, for a parameter inside a branch

    @property
    def consumers(self) -> tuple[str, ...]:
        return tuple(u.node for u in self.uses)

    @property
    def source(self) -> str:
        return self.uses[0].source if self.uses else ""


@dataclass(frozen=True)
class BufferInfo:
    name: str
    shape: tuple[int, ...]
    width_axes: tuple[int, ...]


@dataclass(frozen=True)
class AttentionSite:
    """An SDPA call or an explicit ``softmax(q k^T)``; muP rescales its logits iff d_head grows.

    ``d_head_axis``: the axis that q.k^T contracts in its left operand, counted from the end:
    -1 for SDPA and ``q @ k.transpose(-2, -1)`` (also ``q.transpose(-2, -1) @ k``); -2 for an
    einsum on q that keeps the head size before the sequence (ADM's ``bct,bcs->bts`` on
    (B*heads, ch, T))."""

    node: str
    kind: str
    module: str
    source: str
    d_head: int
    heads: int | None
    d_head_grows: bool
    heads_grow: bool | None
    scale: float | None
    scale_node: str | None
    d_head_base: int | None
    d_head_axis: int = -1
