"""Account for width-dependent constants in the user's forward (``dims/width_constants.py``).

A constant the model itself scales by ``r = c_model / c_base`` at a readout or an input use
already carries part of the width scaling; the tool's factor there is the rule's divided by
``r``, so the total is what the rule asks (a readout's 1/m relative to the base). A constant
on any other parameter path is refused here, naming its line: nothing would account for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..analysis.report import Report
from ..errors import MuprewriteError

__all__ = ["constant_corrections", "refuse_width_constants"]


def constant_corrections(report: Report) -> Mapping[str, tuple[float, float]]:
    """parameter -> (factor at its readout / weight uses, factor at a tied weight's lookups)."""
    out: dict[str, tuple[float, float]] = {}
    seen: set[tuple[str | None, str, str]] = set()
    for c in report.width_constants:
        if c.account == "none":
            continue
        if c.account == "unaccounted" or c.param is None:
            on = f" on the path of {c.param!r}" if c.param else ""
            raise MuprewriteError(
                f"a constant at {c.source} scales{on} by {c.model:.6g} here and "
                f"{c.base:.6g} in the base (it depends on the width or depth); the rule's "
                "factors cannot account for it there",
                where=c.source,
                fix="make the constant independent of the width (tune it on the base as a "
                    "constant), or move it onto the readout or the input embedding")
        key = (c.param, c.account, c.source)
        if key in seen:  # one line captured on several input sets
            continue
        seen.add(key)
        readout, lookup = out.get(c.param, (1.0, 1.0))
        tied = report[c.param].tied
        if c.account == "input" and tied:
            lookup *= c.correction
        else:
            readout *= c.correction
        out[c.param] = (readout, lookup)
    return out


def refuse_width_constants(report: Report) -> None:
    """Source emission writes exponent tables, which cannot yet carry a correction that
    depends on the model's own constant: refuse rather than emit a file without it."""
    accounted = [c for c in report.width_constants if c.account in ("readout", "input")]
    if accounted:
        c = accounted[0]
        raise MuprewriteError(
            f"the model's own width-dependent constant at {c.source} ({c.model:.6g} here, "
            f"{c.base:.6g} in the base) scales {c.param!r}; muprewrite.apply accounts for "
            "it, emitted source cannot yet", where=c.source,
            fix="use muprewrite.apply(model, base=...) for this model, or make the constant "
                "independent of the width (a base hyperparameter tuned on the proxy)")
