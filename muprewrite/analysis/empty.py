"""Zero-size parameters: one rule for ``analyze`` / ``apply`` and the CLI's ``--model``.

A free parameter of zero size (vit-pytorch's CLS token under ``pool="mean"``:
``nn.Parameter(torch.randn(num_cls_tokens, dim))`` with ``num_cls_tokens = 0``) holds no
value: there is nothing to initialise, scale or step, so it is accepted and noted. A
built-in layer with zero features (``nn.Linear(8, 0)``: a width of 0) is no model: refused.

>>> import torch
>>> net = torch.nn.Module(); net.token = torch.nn.Parameter(torch.zeros(0, 4))
>>> [d.where for d in zero_size_notes(net)]
['token']
>>> net.layer = torch.nn.Linear(3, 0)
>>> check_zero_size(net, "Net(width=0)")
Traceback (most recent call last):
...
muprewrite.errors.ModelSpecError: Net(width=0) has zero-size parameters in built-in layers, e.g. layer.weight of shape (0, 3) (Linear with zero features)
  fix: pass sizes of at least 1 (a width of 0 is no model)
"""

from __future__ import annotations

from torch import nn

from ..errors import ModelSpecError
from .report import Diagnostic

__all__ = ["check_zero_size", "zero_size_notes"]


def _zero_size(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(full name, owning module, local name) of every zero-size parameter."""
    found = []
    for path, module in model.named_modules(remove_duplicate=False):
        for local, p in module.named_parameters(recurse=False):
            if p.numel() == 0:
                found.append((f"{path}.{local}" if path else local, module, local))
    return list({name: (name, m, local) for name, m, local in found}.values())


_HOLDERS = (nn.Module, nn.ParameterList, nn.ParameterDict)


def _builtin_layer(module: nn.Module) -> bool:
    """A layer of ``torch.nn`` (not a bare holder of free parameters)."""
    return (type(module).__module__.startswith("torch.nn.modules")
            and type(module) not in _HOLDERS)


def check_zero_size(model: nn.Module, label: str) -> None:
    """Refuse a built-in layer with zero features (a width or size of 0); ``label`` names
    the model in the message (``--model: Net(width=0)``)."""
    layers = [(name, m) for name, m, _ in _zero_size(model) if _builtin_layer(m)]
    if layers:
        name, module = layers[0]
        shape = tuple(model.get_parameter(name).shape)
        raise ModelSpecError(f"{label} has zero-size parameters in "
                             f"built-in layers, e.g. {name} of shape {shape} "
                             f"({type(module).__name__} with zero features)",
                             fix="pass sizes of at least 1 (a width of 0 is no model)")


def zero_size_notes(model: nn.Module) -> list[Diagnostic]:
    """One ``info`` per free zero-size parameter: nothing to scale, left as it is."""
    return [Diagnostic("info", "zero-size", name,
                       f"{type(module).__name__}.{local} has shape "
                       f"{tuple(model.get_parameter(name).shape)}: it holds no value, so "
                       "there is nothing to initialise, scale or step; left as it is",
                       "") for name, module, local in _zero_size(model)
            if not _builtin_layer(module)]
