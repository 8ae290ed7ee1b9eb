"""The error of the emission stage, below every part of it (each may refuse a model)."""

from __future__ import annotations

from ..errors import MuprewriteError

__all__ = ["EmitError"]


class EmitError(MuprewriteError):
    """The model file cannot be rewritten into muP as source."""
