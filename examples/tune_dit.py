"""Tune once on a proxy: the digits DiT (class-conditional diffusion on scikit-learn's 8x8
digits, as in ``examples/transfer_dit.py``), with a trial function ``muprewrite tune`` calls.

``train(run)`` trains ``run.model`` (a DiT with adaLN-Zero, 2 blocks, heads of 16 channels)
with ``run.optimizer`` for ``run.steps`` steps of the epsilon-prediction loss, reports the
held-out loss (a fixed draw of timesteps and noise) every ``EVAL_EVERY`` steps and returns
the last one.

    muprewrite tune examples/dit.py --model "DiT(input_size=8, patch_size=2, in_channels=1, \\
        hidden_size=32, depth=2, num_heads=2, num_classes=10, learn_sigma=False)" \\
        --train examples/tune_dit.py:train --steps 200 --lr 1e-4:1e-1 --trials 64 -o card.toml
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.transfer_dit import T, Trainer, build  # noqa: E402

EVAL_EVERY, BATCH = 25, 64

__all__ = ["build", "train", "inputs", "held_out_loss"]  # build(width): the DiT at a width


@functools.cache
def _trainer() -> Trainer:
    return Trainer(steps=0, batch=BATCH)  # holds the data, the schedule and the held-out draw


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Example inputs of one training batch (images, timesteps, labels)."""
    return (torch.zeros(BATCH, 1, 8, 8), torch.zeros(BATCH, dtype=torch.long),
            torch.zeros(BATCH, dtype=torch.long))


def held_out_loss(model: torch.nn.Module) -> float:
    tr = _trainer()
    model.eval()
    with torch.no_grad():
        value = tr.loss(model, tr.val_x, tr.val_y, tr.val_t, tr.val_noise).item()
    model.train()
    return value


def train(run) -> float:  # noqa: ANN001 - a muprewrite.training.tuning.TrialRun
    """Train ``run.steps`` AdamW steps (20 warm-up, then constant); the held-out loss."""
    tr = _trainer()
    gen = torch.Generator().manual_seed(run.seed)
    sched = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda s: min(1.0, (s + 1) / 20))
    loss = math.inf
    for step in range(1, run.steps + 1):
        idx = torch.randint(0, len(tr.y), (BATCH,), generator=gen)
        t = torch.randint(0, T, (BATCH,), generator=gen)
        noise = torch.randn(BATCH, 1, 8, 8, generator=gen)
        value = tr.loss(run.model, tr.x[idx], tr.y[idx], t, noise)
        run.optimizer.zero_grad(set_to_none=True)
        value.backward()
        run.optimizer.step()
        sched.step()
        if step % EVAL_EVERY == 0 or step == run.steps:
            loss = held_out_loss(run.model)
            run.report(step, loss)
    return float(loss)

