"""The plan ``muprewrite.apply`` attached to a model it rewrote."""

from __future__ import annotations

from torch import nn

from ..capture.unwrap import unwrap
from .hosts import PLAN_ATTR
from .plan import Plan

__all__ = ["plan_of"]


def plan_of(model: nn.Module) -> Plan | None:
    """The plan ``muprewrite.apply`` put in effect on ``model`` (None if it was not rewritten)."""
    return getattr(unwrap(model), PLAN_ATTR, None)
