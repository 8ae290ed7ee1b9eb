"""Import an emitted model file the way a user without muprewrite would."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from muprewrite.verify.source_check import float64  # noqa: F401 - re-exported for the tests


def train_losses(model: torch.nn.Module, groups: list[dict], inputs: tuple,
                 target: torch.Tensor, steps: int) -> list[float]:
    """``steps`` AdamW steps on ``groups`` fitting ``target``; the loss at each step. The RNG
    is seeded first, so that dropout-like draws are alike in the two runs compared."""
    opt = torch.optim.AdamW(groups)
    torch.manual_seed(7)
    losses = []
    for _ in range(steps):
        loss = (model(*inputs) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def import_without_muprewrite(path: Path) -> ModuleType:
    """Execute ``path`` as a fresh module while any ``import muprewrite`` fails."""
    saved = {k: v for k, v in sys.modules.items() if k == "muprewrite" or k.startswith("muprewrite.")}
    for k in saved:
        del sys.modules[k]
    sys.modules["muprewrite"] = None  # type: ignore[assignment]  # makes the import raise
    try:
        spec = importlib.util.spec_from_file_location(f"emitted_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as an import does (dataclasses look it up)
        spec.loader.exec_module(module)
        return module
    finally:
        del sys.modules["muprewrite"]
        sys.modules.update(saved)
