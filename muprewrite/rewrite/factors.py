"""ParamPlan: the rule's factors for one parameter (init, learning rate, eps, decay, forward).

The lowest record of the plan: plan.py builds them and re-exports the class, frozen.py
reads them to say what a frozen parameter is spared; this module imports nothing."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ParamPlan"]


@dataclass(frozen=True)
class ParamPlan:
    """Factors for one parameter, relative to the values tuned at base width."""

    name: str
    init: float
    lr: float
    eps: float
    weight_decay: float
    multiplier: float  # at the uses listed in the hosts; 1 = no forward change
    muon: bool = False  # stepped by Muon (a Muon rule's hidden 2-D weight), else the Adam row
    gather: float = 1.0  # a tied weight's embedding lookups (its input multiplier)
