"""Tiny models and train functions for the sweep tests: module-level, so spawned workers
can import them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn

from muprewrite.training.tuning import TrialRun

WIDTH = 16
X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
Y = X.sum(1, keepdim=True)


def mlp(width: int = WIDTH) -> nn.Module:
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 1))


def wide_mlp() -> nn.Module:
    return mlp(64)


def train(run: TrialRun) -> float:
    """A few full-batch AdamW steps on a fixed regression task; the final loss."""
    loss = torch.tensor(0.0)
    for step in range(1, run.steps + 1):
        loss = (run.model(X) - Y).square().mean()
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.report(step, loss.item())
    with torch.no_grad():
        return float((run.model(X) - Y).square().mean())


def train_slow_marked(run: TrialRun) -> float:
    """``train``, but trial MARK_TRIAL writes MARK_FILE and sleeps (to be killed there)."""
    if run.number == int(os.environ["MARK_TRIAL"]):
        Path(os.environ["MARK_FILE"]).write_text(str(os.getpid()))
        time.sleep(600)
    return train(run)


def train_bad_at_high_lr(run: TrialRun) -> float:
    """``train``, except that a learning rate above 0.5 reports a loss of 100 at every step."""
    if run.lr <= 0.5:
        return train(run)
    for step in range(1, run.steps + 1):
        run.report(step, 100.0)
    return 100.0


def linear_net(width: int) -> nn.Module:
    """Two bias-free linears: per step (batch B, input 4) the matmul FLOPs are
    forward 2B(4w + w), backward 2B(4w) (weight only: the input needs no gradient) plus
    2B(w + w) (weight and input of the second): 22 B w in all."""
    return nn.Sequential(nn.Linear(4, width, bias=False), nn.ReLU(),
                         nn.Linear(width, 1, bias=False))


def linear_proxy() -> nn.Module:
    return linear_net(WIDTH)


def linear_target() -> nn.Module:
    return linear_net(2 ** 20)


def train_together(run: TrialRun) -> float:
    """``train``, after every worker of BARRIER_DIR (BARRIER_WORKERS of them) has started a
    trial: proof that the workers ran side by side."""
    folder = Path(os.environ["BARRIER_DIR"])
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < int(os.environ["BARRIER_WORKERS"]):
        if time.monotonic() > deadline:
            raise TimeoutError("the other workers never started")
        time.sleep(0.05)
    return train(run)
