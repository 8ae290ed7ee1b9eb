"""The edits of the user's files: one per node, and what each changed file gets.

``NodeEdit``: one node's edit (a readout's multiplier, an attention's scale, a residual
branch's multiplier), its form written by ``write/forms.py``. ``Edits``: every node edit of one
file, with the multiplier attributes each class declares and the lines edited (for people).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import libcst as cst

__all__ = ["NodeEdit", "Edits"]


@dataclass(frozen=True)
class NodeEdit:
    """One edit of one node. ``kind`` as the scans' ``Found.kind``; ``factor``: the multiplier
    attribute (``mup_head_multiplier``) or the base head size constant."""

    kind: str
    factor: str
    where: str  # path:line
    scale_input: bool = True
    query: str = ""
    operand: int = 1  # kind "branch": the operand of the + that is the branch
    multiplier: str = ""  # kinds "sdpa", "logits": a constant the logits take too ("": none)
    axis: int = -1  # kinds "sdpa", "logits": the axis of ``query`` that holds d_head


@dataclass(frozen=True)
class Edits:
    nodes: Mapping[cst.CSTNode, NodeEdit]
    defaults: Mapping[str, tuple[str, ...]]  # class -> the multiplier attributes it declares
    lines: Mapping[str, tuple[int, ...]]  # "readout" / "attention" / "branch" -> edited lines
    unverified: tuple[str, ...]  # "file:line: what ... not run by any capture; edited by pattern"
