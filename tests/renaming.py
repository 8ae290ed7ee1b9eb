"""Rename every submodule and parameter of a model, and shuffle their registration order,
without touching its forward code (for the renaming-invariance property).

Each renamed module gets a generated subclass whose ``__getattr__`` maps the names its code
uses to the new ones, so ``self.qkv`` still finds the layer now registered as ``m3f1``.
Containers whose order is their meaning (ModuleList, Sequential) keep their keys and order.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

from torch import nn

__all__ = ["rename_tree"]

_ORDERED = (nn.ModuleList, nn.Sequential, nn.ParameterList)
_SUBCLASSES: dict[type, type] = {}


def _aliased_getattr(self: nn.Module, name: str) -> Any:
    alias = self.__dict__.get("_alias", {})
    return nn.Module.__getattr__(self, alias.get(name, name))


def _subclass(cls: type) -> type:
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(cls.__name__, (cls,), {"__getattr__": _aliased_getattr})
    return _SUBCLASSES[cls]


def rename_tree(models: list[nn.Module], seed: int) -> dict[str, str]:
    """Rename ``models`` (same architecture, e.g. two widths) identically, in place.

    Returns old parameter name -> new parameter name.
    """
    rng = random.Random(seed)
    old_names = [n for n, _ in models[0].named_parameters()]
    plan: dict[str, tuple[dict[str, str], list[str], list[str]]] = {}
    for path, module in models[0].named_modules():
        if isinstance(module, _ORDERED):
            continue
        names = list(module._modules) + list(module._parameters)
        alias = {n: f"r{rng.randrange(16 ** 4):04x}_{i}" for i, n in enumerate(names)}
        mods, params = list(module._modules), list(module._parameters)
        rng.shuffle(mods)
        rng.shuffle(params)
        plan[path] = (alias, mods, params)
    for model in models:
        modules = dict(model.named_modules())
        for path, (alias, mods, params) in plan.items():
            module = modules[path]
            module._modules = OrderedDict((alias[n], module._modules[n]) for n in mods)
            module._parameters = OrderedDict((alias[n], module._parameters[n]) for n in params)
            object.__setattr__(module, "_alias", alias)
            module.__class__ = _subclass(type(module))
    new_names = [n for n, _ in models[0].named_parameters()]
    mapping = {}
    lookup = {id(p): n for n, p in models[0].named_parameters()}
    for old in old_names:  # resolve each old name through the renamed tree
        obj: Any = models[0]
        for part in old.split("."):
            obj = getattr(obj, part)
        mapping[old] = lookup[id(obj)]
    assert sorted(mapping.values()) == sorted(new_names)
    return mapping
