"""One loop for the tests that compare optimizers: fit a fixed batch, return the losses."""

from __future__ import annotations

from typing import Any

import torch


def fit(model: torch.nn.Module, inputs: Any, target: torch.Tensor, opt: torch.optim.Optimizer,
        steps: int, scheduler: Any = None) -> list[float]:
    """``steps`` steps of mean squared error of ``model(inputs)`` to ``target``; the loss before
    each step. ``scheduler`` (optional) steps after the optimizer."""
    losses = []
    for _ in range(steps):
        loss = (model(inputs) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses
