"""The base hyperparameters an emitted file holds: its ``MUP_*`` constants, read back.

A file emitted with base hyperparameters (``muprewrite model.py ... --hparams card.toml``)
defines one constant per field of ``muprewrite.HParams`` (``MUP_OUTPUT_MULTIPLIER = 2.5``);
one emitted without defines none and trains as if each were 1. ``muprewrite check`` compares
the file against ``muprewrite.apply`` with the values the file holds (so a retuned file is
checked as retuned) and, given the card, first compares those values with the card's.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import ModuleType

from ..emit.plan.tuned import CONSTANTS
from ..errors import MuprewriteError
from ..rules.hparams import HParams

__all__ = ["file_hparams", "constant_lines", "differences"]


def file_hparams(emitted: ModuleType, path: Path) -> HParams | None:
    """The values of the emitted module's constants; None for a file emitted without them.
    A file holding some but not all of them, or a value HParams refuses, raises."""
    found = {name: getattr(emitted, c) for name, c in CONSTANTS.items() if hasattr(emitted, c)}
    if not found:
        return None
    missing = [c for name, c in CONSTANTS.items() if name not in found]
    if missing:
        raise MuprewriteError(f"{path} defines base hyperparameters but not "
                              f"{', '.join(missing)}, which its code uses",
                              fix=f"restore {missing[0]} = 1.0 (1: the rule alone), or "
                                  "regenerate the file with --hparams")
    try:
        return HParams(**found)
    except MuprewriteError as exc:
        raise MuprewriteError(f"{path}: {exc.message}", fix=exc.fix) from None


def constant_lines(text: str) -> dict[str, int]:
    """Constant -> the line of the file's module-level assignment to it."""
    out: dict[str, int] = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in CONSTANTS.values():
                    out.setdefault(target.id, node.lineno)
    return out


def differences(ours: HParams, card: HParams) -> list[tuple[str, float, float]]:
    """(constant, the file's value, the card's) for each value that differs (relative 1e-12)."""
    return [(c, getattr(ours, name), getattr(card, name)) for name, c in CONSTANTS.items()
            if not math.isclose(getattr(ours, name), getattr(card, name), rel_tol=1e-12)]
