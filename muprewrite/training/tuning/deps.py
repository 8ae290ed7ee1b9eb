"""Optuna, imported only when a sweep runs: ``import muprewrite`` works without it.

>>> require_optuna().__name__
'optuna'
"""

from __future__ import annotations

from types import ModuleType

from .errors import TuneError

__all__ = ["require_optuna"]

MISSING = ("the proxy sweep runs on Optuna, which is not installed",
           "pip install 'muprewrite[tune]' (optuna and optuna-dashboard)")


def require_optuna() -> ModuleType:
    """The ``optuna`` module, or TuneError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise TuneError(MISSING[0], fix=MISSING[1]) from None
    return optuna
