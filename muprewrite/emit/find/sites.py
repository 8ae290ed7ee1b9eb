"""The sites of the edits: where, in the user's project, each change of the plan goes.

A readout site (a forward multiplier on the call that feeds the weight), an attention site
(the scale of an SDPA call, or a factor on an explicit q.k^T product) and a branch site (the
residual adds of a host under a depth rule) each name a line the capture ran through and what
the pattern scans need to find the same computation on paths no capture ran: the classes of
the module's MRO written in the project (``scope``, with their files). ``locate.py`` and
``branches.py`` build them; the plan merges them with the scans into node edits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

__all__ = ["BRANCH_ATTRIBUTE", "Scope", "ReadoutSite", "AttentionScaleSite", "BranchSite",
           "Sites", "by_file"]

Scope = tuple[tuple[Path, str], ...]  # (resolved file, top-level class name)
BRANCH_ATTRIBUTE = "mup_branch_multiplier"  # a branch site's multiplier: x + self.<it> * f(x)


@dataclass(frozen=True)
class ReadoutSite:
    """Multiply at ``line``: the input of ``self.<callee>(...)`` (or, for a functional use,
    the call taking ``self.<param_attr>``) by ``self.<attribute>``."""

    line: int
    host_class: str
    callee: str  # attribute chain after ``self.``; "" for a functional use in the host itself
    param_attr: str  # chain after ``self.`` to the parameter (functional uses)
    attribute: str
    scale_input: bool  # False: scale the call's result (an embedding lookup)
    file: Path = Path()  # the resolved file holding ``line``
    scope: Scope = ()  # classes of the host's MRO written in the project
    weights: tuple[str, ...] = ()  # every chain after ``self.`` to the parameter
    owners: tuple[tuple[str, str], ...] = ()  # (chain to the module owning it, call kind)
    tied: bool = False  # a tied embedding/readout weight: its lookups stay unscaled
    lookup: bool = False  # a tied weight's lookups (its input multiplier): its readouts stay
    fronts: tuple[str, ...] = ()  # nn.Sequential chains whose first layer is the readout


@dataclass(frozen=True)
class AttentionScaleSite:
    """``kind="sdpa"``: set ``scale=`` of the SDPA call at ``line``; ``"logits"``: multiply
    the q.k^T product at ``line`` (explicit softmax attention)."""

    line: int
    constant: str  # name of the base head size constant
    kind: str = "sdpa"
    file: Path = Path()  # the resolved file holding ``line``
    scope: Scope = ()  # classes of the attention module's MRO written in the project
    children: tuple[tuple[str, str], ...] = ()  # (``self.<name>``, "softmax" | "mha")
    multiplier: str = ""  # the constant of a base hyperparameter the logits take too
    d_head_axis: int = -1  # the query's axis holding d_head, from the end (AttentionSite's)


@dataclass(frozen=True)
class BranchSite:
    """Residual adds of the branch modules ``self.<m>`` (m in ``modules``) in the methods of
    ``scope``; ``verified``: the ``+`` nodes some capture ran."""

    scope: Scope
    modules: tuple[str, ...]
    verified: tuple[cst.CSTNode, ...]


@dataclass(frozen=True)
class Sites:
    readouts: tuple[ReadoutSite, ...]
    attention: tuple[AttentionScaleSite, ...]
    multipliers: Mapping[str, Mapping[str, str]]  # host path -> {attribute: parameter}
    d_head: Mapping[str, int]  # constant name -> base head size
    branches: tuple[BranchSite, ...] = ()  # residual adds (depth rules)
    lookups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # tied lookups


def by_file(scope: Scope) -> dict[Path, tuple[str, ...]]:
    """The classes of ``scope`` grouped by their file (in order of first appearance)."""
    out: dict[Path, tuple[str, ...]] = {}
    for file, name in scope:
        out[file] = (*out.get(file, ()), name)
    return out
