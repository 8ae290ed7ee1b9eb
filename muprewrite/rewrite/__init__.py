"""Stages 4–5 — rewrite: plan the rule's factors, then edit the model in memory.

``plan.py`` (pure: report + rule -> factors and call-site edits; ``factors.py``: one
parameter's factors; ``frozen.py``: what frozen parameters are spared), ``init.py`` (rescale the init), ``mode.py`` (the runtime edit) and
``hosts.py`` (install it on the modules).
"""

from .hosts import PLAN_ATTR, install
from .init import init_targets, rescale_to_targets
from .plan import Plan, make_plan, param_factors

__all__ = ["Plan", "make_plan", "param_factors", "init_targets", "rescale_to_targets", "install", "PLAN_ATTR"]
