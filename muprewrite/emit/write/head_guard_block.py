"""The emitted table and check of the attention that ``plan/head_guards.py`` guards.

``MUP_HEAD_SIZES`` (module pattern -> the attribute holding its head size, and that size) and
``_mup_check_head_sizes``, which ``mup_init`` calls to refuse a width at which such an
attention changes its head size (it would need a logit factor the file does not contain).
"""

from __future__ import annotations

from ..cst.literals import identifier, string
from ..cst.literals import number as _number
from ..plan.head_guards import HeadGuards

__all__ = ["render_guards", "GUARD_FUNCTION", "GUARD_CALL"]

GUARD_CALL = "    _mup_check_head_sizes(model)\n"


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
