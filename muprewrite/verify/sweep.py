"""Learning-rate transfer sweep: the loss against the learning rate at several widths (or
depths).

muP's promise: the best learning rate at the narrowest width is the best at every width.
``lr_sweep`` trains the model at each (width, learning rate) on a factor-2 grid (or any grid
you pass) and reports how many grid steps the optimum moves between widths.
``lr_sweep_depth`` does the same across depth at one width, for depth rules (``completep``,
``depth-mup``: the shallowest model is the base); under a width-only rule such as ``mup``,
which refuses a base of another depth, each depth is its own base, so the sweep shows how the
optimum moves when depth is scaled without a depth rule.

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
>>> len(sweep.loss), len(sweep.loss[0]), sweep.axis
(2, 3, 'width')
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

from ..files import write_file
from ..rewrite.apply import apply
from ..rules import Rule
from .coordcheck import Axis, RoleCheck, depth_base_is_own, rule_id

__all__ = ["Sweep", "lr_sweep", "lr_sweep_depth"]


@dataclass(frozen=True)
class Sweep:
    """``loss[i][j]``: the mean final loss at ``sizes[i]`` (widths, or depths when ``axis``
    is "depth") and ``lrs[j]`` (inf: diverged). ``own_base``: each size was its own base
    (a depth sweep under a width-only rule)."""

    rule: str
    sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    loss: tuple[tuple[float, ...], ...]
    seeds: int
    metric: str = "final training loss"
    axis: Axis = "width"
    own_base: bool = False
    hyper: str = "lr"  # what ``lrs`` holds: the swept hyperparameter's name

    def best_index(self, i: int) -> int:
        row = self.loss[i]
        return min(range(len(row)), key=lambda j: row[j] if math.isfinite(row[j]) else math.inf)

    def best_lr(self, i: int) -> float:
        return self.lrs[self.best_index(i)]

    def drift(self) -> int:
        """Grid steps between the optimum at the smallest and at the largest size."""
        return abs(self.best_index(len(self.sizes) - 1) - self.best_index(0))

    def spread(self) -> int:
        """Grid steps between the lowest and highest optimum over all sizes."""
        best = [self.best_index(i) for i in range(len(self.sizes))]
        return max(best) - min(best)

    def summary(self) -> str:
        optima = ", ".join(f"{w}: {self.best_lr(i):.3g}" for i, w in enumerate(self.sizes))
        base = " (each depth its own base)" if self.own_base else ""
        return (f"rule {self.rule!r}{base}: best {self.hyper} by {self.axis} {{{optima}}}; the optimum "
                f"moves {self.drift()} grid step(s) from {self.axis} {self.sizes[0]} to "
                f"{self.sizes[-1]} (spread over all {self.axis}s: {self.spread()})")

    def to_dict(self) -> dict[str, Any]:
        """Every field; the sizes under "widths" or "depths" (the axis's name)."""
        data = asdict(self)
        data[f"{self.axis}s"] = list(data.pop("sizes"))
        data["loss"] = [[v if math.isfinite(v) else None for v in row] for row in self.loss]
        data["best_lr"] = [self.best_lr(i) for i in range(len(self.sizes))]
        data["drift"], data["spread"] = self.drift(), self.spread()
        return data

    def save_json(self, path: str | Path, *, force: bool = False) -> Path:
        """Write ``to_dict()`` as JSON (``force``: over a read-only file too)."""
        return write_file(path, json.dumps(self.to_dict(), indent=1).encode(), force=force)

    @classmethod
    def load_json(cls, path: str | Path) -> Sweep:
        return cls.load_json_dict(json.loads(Path(path).read_text()))

    @classmethod
    def load_json_dict(cls, data: dict[str, Any]) -> Sweep:
        """The inverse of ``to_dict``."""
        axis = data.get("axis", "width")
        loss = tuple(tuple(math.inf if v is None else v for v in row) for row in data["loss"])
        return cls(data["rule"], tuple(data[f"{axis}s"]), tuple(data["lrs"]), loss,
                   data["seeds"], data["metric"], axis, data.get("own_base", False),
                   data.get("hyper", "lr"))


def lr_sweep(build: Callable[[int], nn.Module], widths: Sequence[int], lrs: Sequence[float], *,
             train: Callable[[nn.Module, float], float], inputs: Any = None,
             rule: str | Rule = "mup", seeds: int = 2, metric: str = "final training loss",
             progress: Callable[[int, int], None] | None = None, hyper: str = "lr") -> Sweep:
    """Train at every (width, lr) and collect the final losses.

    ``build(width)`` makes the model (the narrowest width is the base of ``apply``);
    ``train(model, lr)`` trains it and returns the loss to compare (it should build its
    optimizer from ``muprewrite.param_groups(model, lr=lr)``); ``inputs`` are example inputs
    for the capture (default: ``model.example_inputs()``). Each loss is the mean over
    ``seeds``; a run whose loss is not finite counts as diverged (inf). ``metric`` names what
    ``train`` returns (for the plot's axis). ``hyper`` names what ``lrs`` holds when another
    hyperparameter is swept the same way (e.g. "weight decay": ``train(model, wd)``).
    """
    return _sweep(build, tuple(sorted(widths)), lrs, "width", False, train, inputs, rule,
                  seeds, metric, progress, hyper)


def lr_sweep_depth(build: Callable[[int], nn.Module], depths: Sequence[int],
                   lrs: Sequence[float], *, train: Callable[[nn.Module, float], float],
                   inputs: Any = None, rule: str | Rule = "completep", seeds: int = 2,
                   metric: str = "final training loss",
                   progress: Callable[[int, int], None] | None = None) -> Sweep:
    """``lr_sweep`` across depth: ``build(depth)`` makes the model at one fixed width.

    Under a depth rule the shallowest model is the base. Under a width-only rule (``mup``,
    ``sp``) each depth is rewritten against a base of its own depth, the only base such a
    rule accepts; the learning rate then reaches ``param_groups`` as is at every depth.
    """
    return _sweep(build, tuple(sorted(depths)), lrs, "depth", depth_base_is_own(rule), train,
                  inputs, rule, seeds, metric, progress)


def _sweep(build: Callable[[int], nn.Module], sizes: tuple[int, ...], lrs: Sequence[float],
           axis: Axis, own_base: bool, train: Callable[[nn.Module, float], float],
           inputs: Any, rule: str | Rule, seeds: int, metric: str,
           progress: Callable[[int, int], None] | None, hyper: str = "lr") -> Sweep:
    lrs = tuple(sorted(lrs))
    roles = RoleCheck()
    table = []
    done, total = 0, len(sizes) * len(lrs) * seeds
    for size in sizes:
        row = []
        for lr in lrs:
            losses = []
            for seed in range(seeds):
                torch.manual_seed(1000 + seed)
                base = build(size if own_base else sizes[0])
                torch.manual_seed(seed)
                model = apply(build(size), inputs, base=base, rule=rule)
                if axis == "width" and seed == 0 and lr == lrs[0]:
                    roles.check(size, model)
                loss = float(train(model, lr))
                losses.append(loss if math.isfinite(loss) else math.inf)
                done += 1
                if progress:
                    progress(done, total)
            row.append(sum(losses) / len(losses))
        table.append(tuple(row))
    return Sweep(rule_id(rule), sizes, lrs, tuple(table), seeds, metric, axis, own_base, hyper)
