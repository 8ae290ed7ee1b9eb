"""Parameters the user's constructor never initialises (SD3.5's RMSNorm: ``nn.Parameter(
torch.empty(dim))``, filled only when a checkpoint loads).

Their values are whatever memory held, so two builds of one model disagree on them and a
check comparing "the init" of the emitted file with ``apply``'s would fail on noise. The
check builds every model with uninitialised memory filled with NaN (PyTorch's deterministic
mode), gives such parameters one seeded value in the original and its base (so ``apply``
measures something), copies them into the emitted model, and says so in the verdict: their
init is not compared (there is none), everything downstream is.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["nan_for_uninitialised", "seed_uninitialised", "copy_uninitialised"]


@contextlib.contextmanager
def nan_for_uninitialised() -> Iterator[None]:
    """Inside the block, ``torch.empty`` memory is filled with NaN; settings restored after."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _uninitialised(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters()
            if p.is_floating_point() and p.numel() and bool(torch.isnan(p).all())]


def seed_uninitialised(model: nn.Module) -> list[str]:
    """Give every all-NaN parameter a value seeded by its name (1 + small noise: a gain)."""
    names = []
    with torch.no_grad():
        for name, p in _uninitialised(model):
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            names.append(name)
    return names


def copy_uninitialised(model: nn.Module, expected: nn.Module) -> list[str]:
    """Copy ``expected``'s values into ``model``'s all-NaN parameters, by name."""
    theirs = dict(expected.named_parameters())
    names = []
    with torch.no_grad():
        for name, p in _uninitialised(model):
            if name in theirs and theirs[name].shape == p.shape:
                p.copy_(theirs[name])
                names.append(name)
    return names
