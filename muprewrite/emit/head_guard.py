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

from ..analysis.report import AttentionSite, Report
from ..rules import Rule
from .block import module_pattern
from .cst.literals import identifier, string
from .cst.literals import number as _number

__all__ = ["HeadGuards", "head_guards", "render_guards", "GUARD_CALL"]

# module pattern -> (attribute, head size at both emitted widths)
HeadGuards = Mapping[str, tuple[str, int]]
GUARD_CALL = "    _mup_check_head_sizes(model)\n"


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


def render_guards(guards: HeadGuards) -> list[str]:
    """The table and the function ``mup_init`` calls (nothing without a guard)."""
    if not guards:
        return []
    out = ["# attention with no logit edit (its head size was the same in the base and the "
           "model this", "# file was emitted from): module -> (attribute holding its head "
           "size, that size)", "MUP_HEAD_SIZES = {"]
    out += [f"    {string(path)}: ({string(identifier(attr))}, {_number(size)}),"
            for path, (attr, size) in guards.items()]
    return [*out, "}"]


GUARD_FUNCTION = '''def _mup_check_head_sizes(model: torch.nn.Module) -> None:
    """Refuse a width at which an attention this file left unedited changes its head size: it
    would need a logit factor (1/d_head from the base's) that the file does not contain."""
    for path, module in model.named_modules():
        key = re.sub(r"(^|\\.)\\d+(?=\\.|$)", r"\\1*", path)
        if key not in MUP_HEAD_SIZES:
            continue
        attribute, size = MUP_HEAD_SIZES[key]
        value = getattr(module, attribute, size)
        if value != size:
            raise ValueError(
                f"muP: {path or 'the model'}.{attribute} is {value}, but this file has no "
                f"attention logit edit there: its base and model had the same head size "
                f"({size}), so the logits kept 1/sqrt(d_head); at head size {value} they need "
                "the factor muP puts on them. Emit the file again from a --base and --model "
                "whose head sizes differ (e.g. muprewrite ... --heads fixed), or build the "
                f"model with head size {size}")
'''
