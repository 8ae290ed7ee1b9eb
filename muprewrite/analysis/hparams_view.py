"""Where each base hyperparameter lands in one analysed model, as text for ``analyze``.

>>> from muprewrite.rules.hparams import HParams
>>> print(render_hparams_table(HParams(output_multiplier=2.0)).splitlines()[1])
  output_multiplier     2      forward multiplier of output weights (and a tied embedding's readout)
"""

from __future__ import annotations

from ..rules.hparams import HPARAM_HELP, HPARAM_ROWS, HParams, param_class
from .report import Report

__all__ = ["render_hparams_table", "render_hparams_reach"]


def render_hparams_table(hparams: HParams, title: str = "base hyperparameters (constant "
                         "across width; 1 = the rule alone):") -> str:
    """Every base hyperparameter with its value and what it multiplies."""
    width = max(len(n) for n in HPARAM_HELP) + 2
    lines = [title]
    for name, what in HPARAM_HELP.items():
        lines.append(f"  {name.ljust(width)}{getattr(hparams, name):<7.4g}{what}")
    return "\n".join(lines)


def _reach(report: Report) -> dict[str, list[str]]:
    """hyperparameter -> the parameters it reaches in this model (``HPARAM_ROWS``)."""
    out: dict[str, list[str]] = {name: [] for name in HPARAM_HELP}
    for info in report:
        if info.role == "unused" or not info.trainable:
            continue
        for _quantity, name in HPARAM_ROWS[param_class(info.role, info.kind, info.tied)]:
            if info.name not in out[name]:
                out[name].append(info.name)
        if info.in_branch:
            out["branch_multiplier"].append(info.name)
    return out


def render_hparams_reach(report: Report, hparams: HParams, source: str) -> str:
    """The table, then for every hyperparameter that is not 1 the parameters (or attention
    sites) of this model it reaches."""
    lines = [render_hparams_table(hparams, f"base hyperparameters ({source}; constant across "
                                           "width; 1 = the rule alone):")]
    changed = hparams.changed()
    if not changed:
        return "\n".join(lines)
    reach = _reach(report)
    lines.append("reaching, in this model:")
    for name in changed:
        if name == "attention_multiplier":
            sites = [s.source or s.node for s in report.attention]
            where = f"{len(sites)} attention site(s)" + (f": {', '.join(sites[:3])}" if sites
                                                         else " (none found: it changes nothing)")
        else:
            names = reach[name]
            where = (f"{len(names)} parameter(s): {', '.join(names[:4])}"
                     + (" ..." if len(names) > 4 else "")) if names else \
                "no parameter (it changes nothing here)"
        lines.append(f"  {name}: {where}")
    return "\n".join(lines)
