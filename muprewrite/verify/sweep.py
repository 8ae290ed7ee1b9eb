"""Learning-rate transfer sweep: the loss against the learning rate at several widths.

muP's promise: the best learning rate at the narrowest width is the best at every width.
``lr_sweep`` trains the model at each (width, learning rate) on a factor-2 grid (or any grid
you pass) and reports how many grid steps the optimum moves between widths.

>>> import torch, muprewrite
>>> from muprewrite.verify import lr_sweep
>>> def mlp(w):
...     return torch.nn.Sequential(torch.nn.Linear(4, w), torch.nn.ReLU(), torch.nn.Linear(w, 1))
>>> x = torch.randn(64, 4); y = x.sum(1, keepdim=True)
>>> def train(model, lr):
...     opt = torch.optim.Adam(muprewrite.param_groups(model, lr=lr))
...     for _ in range(20):
...         loss = (model(x) - y).square().mean(); opt.zero_grad(); loss.backward(); opt.step()
...     return loss.item()
>>> sweep = lr_sweep(mlp, [16, 32], [1e-3, 1e-2, 1e-1], train=train, inputs=(x,), seeds=1)
>>> len(sweep.loss), len(sweep.loss[0])
(2, 3)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..apply import apply
from ..files import write_file

__all__ = ["Sweep", "lr_sweep"]


@dataclass(frozen=True)
class Sweep:
    """``loss[i][j]``: the mean final loss at ``widths[i]`` and ``lrs[j]`` (inf: diverged)."""

    rule: str
    widths: tuple[int, ...]
    lrs: tuple[float, ...]
    loss: tuple[tuple[float, ...], ...]
    seeds: int
    metric: str = "final training loss"

    def best_index(self, i: int) -> int:
        row = self.loss[i]
        return min(range(len(row)), key=lambda j: row[j] if math.isfinite(row[j]) else math.inf)

    def best_lr(self, i: int) -> float:
        return self.lrs[self.best_index(i)]

    def drift(self) -> int:
        """Grid steps between the optimum at the narrowest and at the widest width."""
        return abs(self.best_index(len(self.widths) - 1) - self.best_index(0))

    def spread(self) -> int:
        """Grid steps between the lowest and highest optimum over all widths."""
        best = [self.best_index(i) for i in range(len(self.widths))]
        return max(best) - min(best)

    def summary(self) -> str:
        optima = ", ".join(f"{w}: {self.best_lr(i):.3g}" for i, w in enumerate(self.widths))
        return (f"rule {self.rule!r}: best lr by width {{{optima}}}; the optimum moves "
                f"{self.drift()} grid step(s) from width {self.widths[0]} to "
                f"{self.widths[-1]} (spread over all widths: {self.spread()})")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["loss"] = [[v if math.isfinite(v) else None for v in row] for row in self.loss]
        data["best_lr"] = [self.best_lr(i) for i in range(len(self.widths))]
        data["drift"], data["spread"] = self.drift(), self.spread()
        return data

    def save_json(self, path: str | Path, *, force: bool = False) -> Path:
        """Write ``to_dict()`` as JSON (``force``: over a read-only file too)."""
        return write_file(path, json.dumps(self.to_dict(), indent=1).encode(), force=force)

    @classmethod
    def load_json(cls, path: str | Path) -> Sweep:
        data = json.loads(Path(path).read_text())
        loss = tuple(tuple(math.inf if v is None else v for v in row) for row in data["loss"])
        return cls(data["rule"], tuple(data["widths"]), tuple(data["lrs"]), loss,
                   data["seeds"], data["metric"])


def lr_sweep(build: Callable[[int], nn.Module], widths: Sequence[int], lrs: Sequence[float], *,
             train: Callable[[nn.Module, float], float], inputs: Any = None, rule: str = "mup",
             seeds: int = 2, metric: str = "final training loss",
             progress: Callable[[int, int], None] | None = None) -> Sweep:
    """Train at every (width, lr) and collect the final losses.

    ``build(width)`` makes the model (the narrowest width is the base of ``apply``);
    ``train(model, lr)`` trains it and returns the loss to compare (it should build its
    optimizer from ``muprewrite.param_groups(model, lr=lr)``); ``inputs`` are example inputs
    for the capture (default: ``model.example_inputs()``). Each loss is the mean over
    ``seeds``; a run whose loss is not finite counts as diverged (inf). ``metric`` names what
``train`` returns (for the plot's axis).
    """
    widths, lrs = tuple(sorted(widths)), tuple(sorted(lrs))
    table = []
    done, total = 0, len(widths) * len(lrs) * seeds
    for width in widths:
        row = []
        for lr in lrs:
            losses = []
            for seed in range(seeds):
                torch.manual_seed(1000 + seed)
                base = build(widths[0])
                torch.manual_seed(seed)
                model = apply(build(width), inputs, base=base, rule=rule)
                loss = float(train(model, lr))
                losses.append(loss if math.isfinite(loss) else math.inf)
                done += 1
                if progress:
                    progress(done, total)
            row.append(sum(losses) / len(losses))
        table.append(tuple(row))
    return Sweep(rule, widths, lrs, tuple(table), seeds, metric)
