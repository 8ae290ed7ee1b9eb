"""Stage 5b — install the plan's edits: each host module gets a subclass whose forward runs
the original forward inside a :class:`RewriteMode`.

The swap is the one ``torch.nn.utils.parametrize`` uses: ``module.__class__`` becomes a
generated subclass (one per original class), so ``isinstance`` checks, the user's other
methods, ``state_dict`` keys, hooks and ``train()/eval()`` are unchanged. The edit itself
lives on the instance as plain data (parameter paths and factors, no tensor references), so
``copy.deepcopy`` gives an independent copy whose edits point at its own parameters.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .mode import RewriteMode
from .plan import HostEdit, Plan

__all__ = ["install", "HOST_ATTR", "PLAN_ATTR", "original_class"]

HOST_ATTR = "_muprewrite_host"
PLAN_ATTR = "_muprewrite_plan"
_GENERATED: dict[type, type] = {}


def _forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    edit: HostEdit = getattr(self, HOST_ATTR)
    uses = [(self.get_parameter(u.param), u.factor, u.skip_gather) for u in edit.uses]
    with RewriteMode(uses, edit.attention):
        original: type[nn.Module] = type(self).__mro__[1]
        return original.forward(self, *args, **kwargs)


def _subclass(cls: type) -> type:
    if cls not in _GENERATED:
        _GENERATED[cls] = type(cls.__name__, (cls,), {
            "forward": _forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "_muprewrite_original": cls,
        })
    return _GENERATED[cls]


def original_class(module: nn.Module) -> type:
    return getattr(type(module), "_muprewrite_original", type(module))


def install(model: nn.Module, plan: Plan) -> None:
    """Swap every host's class and attach its edit; attach the plan to the root."""
    for edit in plan.hosts:
        host = model.get_submodule(edit.module)
        if hasattr(host, HOST_ATTR):
            raise AssertionError(f"module {edit.module!r} is already rewritten")
        object.__setattr__(host, HOST_ATTR, edit)
        host.__class__ = _subclass(type(host))
    object.__setattr__(model, PLAN_ATTR, plan)
