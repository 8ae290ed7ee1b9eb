"""Move both models of ``muprewrite check`` off their init, alike.

At init many defects are invisible: an adaLN-Zero model (DiT, PixArt) outputs zeros, every
gate is zero, and a deleted readout multiplier, attention factor or branch multiplier changes
nothing the check compares. So before comparing, every parameter of both models gets the same
seeded noise: for the parameter ``name`` a standard normal tensor drawn from a generator seeded
with the name (the same in both models, whatever their order of parameters), times the
parameter's scale in the *reference* (``apply``'d) model at init: its standard deviation, or
for a parameter whose entries are all equal (zeros, a norm's ones) the standard deviation of
PyTorch's default init for its fan-in (1/sqrt(3 fan_in), the fan-in of the module's weight
for a bias), or a tenth of its size for a norm's gain.

The two models hold equal parameters when this runs (the check compared them), and each gets
the same increment, so they stay equal: a correct file still equals ``apply``, and a factor
the file lacks now moves the output, the gradients and the steps.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn

__all__ = ["perturb", "scales"]


def scales(reference: nn.Module) -> dict[str, float]:
    """The noise scale of each parameter of ``reference``, by name."""
    params = dict(reference.named_parameters(remove_duplicate=True))
    out = {}
    for name, p in params.items():
        out[name] = _scale(name, p, params)
    return out


def _scale(name: str, p: torch.Tensor, params: dict[str, nn.Parameter]) -> float:
    data = p.detach().double()
    if data.numel() > 1:
        std = float(data.std())
        if std > 0 and math.isfinite(std):
            return std
    if p.dim() >= 2:
        return 1.0 / math.sqrt(3.0 * max(p[0].numel(), 1))
    owner, _, _leaf = name.rpartition(".")
    weight = params.get(f"{owner}.weight" if owner else "weight")
    if weight is not None and weight.dim() >= 2:
        return 1.0 / math.sqrt(3.0 * max(weight[0].numel(), 1))
    size = float(data.abs().max()) if data.numel() else 0.0
    return 0.1 * size if size > 0 else 0.02


def perturb(models: tuple[nn.Module, ...], reference: nn.Module, seed: int = 11) -> None:
    """Add to each parameter of every model in ``models`` the same noise, scaled by
    ``scales(reference)``; a name the reference lacks is left alone (the comparison names it)."""
    sizes = scales(reference)
    with torch.no_grad():
        for model in models:
            for name, p in model.named_parameters(remove_duplicate=True):
                if name not in sizes or not p.is_floating_point():
                    continue
                gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                p.add_((noise * sizes[name]).to(p.dtype))
