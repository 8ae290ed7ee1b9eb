"""What a pattern scan reports: the nodes to edit, and the uses it cannot edit with certainty."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

__all__ = ["FIX", "Found", "Refusal", "Scan"]

FIX = "use muprewrite.apply(model, ...) at runtime for this model"


@dataclass(frozen=True)
class Found:
    """A node to edit. ``kind``: "call" (``self.m(x)``), "functional" (``F.linear(x,
    self.w)``), "matmul" (``x @ self.w.t()``), "sdpa", "logits" (the q.k^T product),
    "branch" (a residual add ``x + f(x)`` or ``x += f(x)``)."""

    node: cst.CSTNode
    kind: str
    what: str  # for people: "readout call self.lm_head(...)"
    scale_input: bool = True  # kind "call": scale the input (False: the output, a lookup)
    query: str = ""  # kinds "sdpa", "logits": the code of the query, to read d_head from
    axis: int | None = -1  # kinds "sdpa", "logits": q's d_head axis as written (None: unseen)
    operand: int = 1  # kind "branch": the operand of the + that is the residual branch


@dataclass(frozen=True)
class Refusal:
    """A use the emitter cannot edit with certainty."""

    node: cst.CSTNode
    message: str
    fix: str = FIX


@dataclass
class Scan:
    found: list[Found] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
