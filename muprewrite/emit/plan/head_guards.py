"""Attention whose head size is the same in the base and the emitted model (heads grow, d_head
fixed) needs no logit factor at the emitted widths; built later at a width whose head size
differs (another heads layout), it needs one. The emitted file either carries the factor
anyway or refuses such a width in ``mup_init``:

- **a guard**: the module attribute that holds the head size (an int attribute of the
  attention's module, or of a module above it, equal to the head size in both the model and
  the base: nanoGPT's ``head_dim``, timm's ``head_dim``), read by ``mup_init``
  (``MUP_HEAD_SIZES``; width rules without base hyperparameters only);
- **an edit**: where no attribute holds it (or under a depth rule), the site takes the same
  runtime factor as a growing one, ``(MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5`` with the
  emitted head size as base, which is 1 at the emitted widths (``emitter.py``);
- where the source cannot take that edit either, the emitter says so among its changes
  (a warning with the site): the file is right only at widths that keep the head size.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ...analysis.report import AttentionSite, Report
from ...rules import Rule
from .entries import module_pattern

__all__ = ["HeadGuards", "head_guards"]

# module pattern -> (attribute, head size at both emitted widths)
HeadGuards = Mapping[str, tuple[str, int]]


def head_guards(model: nn.Module, base: nn.Module, report: Report, rule: Rule,
                attributes: bool = True) -> tuple[dict[str, tuple[str, int]], list[AttentionSite]]:
    """(guards, sites that no attribute guards) for the attention sites with no logit edit
    because their head size did not change between ``base`` and ``model``;
    ``attributes=False``: no guards, every such site unguarded."""
    guards: dict[str, tuple[str, int]] = {}
    unguarded: list[AttentionSite] = []
    if rule.attention == "unchanged":
        return guards, unguarded
    for site in report.attention:
        if site.d_head_grows or site.d_head_base not in (None, site.d_head):
            continue
        found = _attribute(model, base, site.module, site.d_head) if attributes else None
        if found is None:
            unguarded.append(site)
        else:
            guards.setdefault(module_pattern(found[0]), (found[1], site.d_head))
    return guards, unguarded


def _attribute(model: nn.Module, base: nn.Module, path: str, size: int
               ) -> tuple[str, str] | None:
    """(module path, attribute): an int attribute equal to ``size`` in the model's and the
    base's module, from ``path`` up to the root; names with "head" in them first."""
    parts = path.split(".") if path else []
    for end in range(len(parts), -1, -1):
        here = ".".join(parts[:end])
        try:
            ours, theirs = model.get_submodule(here), base.get_submodule(here)
        except AttributeError:
            continue
        names = [a for a, v in vars(ours).items() if type(v) is int and v == size
                 and type(getattr(theirs, a, None)) is int and getattr(theirs, a) == size
                 and a.isidentifier() and not a.startswith("_")]
        if names:
            return here, sorted(names, key=lambda a: ("head" not in a.lower(), a))[0]
    return None


