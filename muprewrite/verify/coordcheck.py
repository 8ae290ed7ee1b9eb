"""Coordinate check: does every activation keep its size as the model widens?

Build the model at several widths, rewrite each with ``apply`` (base = the narrowest), take
a few Adam steps on one fixed batch, and record the RMS of every module's output at every
step. Under muP each curve is flat in width; under the standard parametrization some grow,
the output first.

The verdict per module is the *slope* of log2 RMS against log2 width at the last step (0 =
flat, 0.5 = grows like sqrt(width), 1 = like width). A module is flagged when its slope
exceeds ``SLOPE_THRESHOLD`` = 0.25, i.e. it grows more than 2x over a 16x range of widths.
Shrinking is not flagged: muP lets some outputs vanish with width at init (a readout whose
init part is 1/width), and training fills them in.

>>> import torch
>>> from muprewrite.verify import coord_check
>>> def mlp(w):
...     return torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.ReLU(), torch.nn.Linear(w, 3))
>>> check = coord_check(mlp, [32, 64], inputs=lambda m: (torch.randn(16, 8),), seeds=1)
>>> sorted(check.rms), len(check.rms["2"])  # modules; steps recorded (init + 3 updates)
(['', '0', '1', '2'], 4)
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
from ..input_sets import first_set
from ..optim import param_groups

__all__ = ["CoordCheck", "coord_check", "SLOPE_THRESHOLD", "OUTPUT"]

SLOPE_THRESHOLD = 0.25
OUTPUT = ""  # the module name under which the model's own output is recorded


def slope(widths: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of log2(value) against log2(width); nan if a value is 0."""
    if any(v <= 0 for v in values) or len(widths) < 2:
        return math.nan
    xs = [math.log2(w) for w in widths]
    ys = [math.log2(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


@dataclass(frozen=True)
class CoordCheck:
    """``rms[module][step][i]``: RMS of the module's output at ``widths[i]`` after ``step``
    updates (step 0 = at init). The model output is recorded as module ``""``."""

    rule: str
    widths: tuple[int, ...]
    steps: int
    lr: float
    seeds: int
    rms: dict[str, tuple[tuple[float, ...], ...]]

    def at(self, module: str, step: int = -1) -> tuple[float, ...]:
        return self.rms[module][step]

    def slope(self, module: str, step: int = -1) -> float:
        return slope(self.widths, self.at(module, step))

    def spread(self, module: str, step: int = -1) -> float:
        """Largest over smallest RMS across widths (1 = flat; inf if one is 0)."""
        values = self.at(module, step)
        return math.inf if min(values) == 0 else max(values) / min(values)

    def growth(self, module: str, step: int = -1) -> float:
        """RMS at the widest over RMS at the narrowest."""
        values = self.at(module, step)
        return math.inf if values[0] == 0 else values[-1] / values[0]

    def worst(self, n: int = 5, step: int = -1) -> list[tuple[str, float]]:
        """The ``n`` modules whose RMS varies most across widths (max/min)."""
        spreads = [(m, self.spread(m, step)) for m in self.rms if any(self.at(m, step))]
        return sorted(spreads, key=lambda item: -item[1])[:n]

    def flagged(self, threshold: float = SLOPE_THRESHOLD, step: int = -1) -> list[tuple[str, float]]:
        """Modules whose RMS grows with width faster than ``threshold`` (slope), worst first."""
        found = [(m, self.slope(m, step)) for m in self.rms]
        return sorted([(m, s) for m, s in found if s > threshold], key=lambda item: -item[1])

    def verdict(self, threshold: float = SLOPE_THRESHOLD) -> str:
        """A few lines for people: the output's slope and the flagged modules."""
        flagged = self.flagged(threshold)
        out = self.slope(OUTPUT)
        lines = [f"rule {self.rule!r}: output slope {out:+.2f}"
                 f"{' (FLAGGED)' if out > threshold else ''} "
                 f"(log2 RMS per doubling of width, threshold {threshold:+.2f}); "
                 f"{len(flagged)} of {len(self.rms)} modules flagged"]
        lines += [f"  FLAGGED {m or '<output>'}: slope {s:+.2f}, "
                  f"x{self.growth(m):.2f} from width {self.widths[0]} to {self.widths[-1]}"
                  for m, s in flagged[:10]]
        if len(flagged) > 10:
            lines.append(f"  ... and {len(flagged) - 10} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["slopes"] = {m: self.slope(m) for m in self.rms}
        data["threshold"] = SLOPE_THRESHOLD
        return data

    def save_json(self, path: str | Path, *, force: bool = False) -> Path:
        """Write ``to_dict()`` as JSON (``force``: over a read-only file too)."""
        return write_file(path, json.dumps(self.to_dict(), indent=1).encode(), force=force)


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    sample = getattr(out, "sample", None)
    return sample if isinstance(sample, torch.Tensor) else None


def coord_check(build: Callable[[int], nn.Module], widths: Sequence[int], *,
                inputs: Callable[[nn.Module], Any], rule: str = "mup",
                steps: int = 3, lr: float = 1e-2, seeds: int = 3,
                progress: Callable[[int, int], None] | None = None) -> CoordCheck:
    """RMS of every module's output at each of ``steps`` Adam steps, at each width.

    ``build(width)`` makes the model; the narrowest width is the base. ``inputs(model)``
    gives one batch (drawn once, reused at every width and step), in any form ``analyze``
    takes (of an ``InputSets``, every set is captured and the first one is trained on). The loss is the mean square error to a fixed random target of the output's shape.
    Each RMS is the mean over ``seeds`` initialisations, so one unlucky draw does not read as
    a trend. ``progress(done, total)`` is called after each (width, seed) run.
    """
    widths = tuple(sorted(widths))
    torch.manual_seed(0)
    batch = inputs(build(widths[0]))
    sums: dict[str, list[list[float]]] = {}
    total = len(widths) * seeds
    for i, width in enumerate(widths):
        for seed in range(seeds):
            for step, record in enumerate(_one_run(build, widths[0], width, batch, rule,
                                                   steps, lr, seed)):
                for name, value in record.items():
                    table = sums.setdefault(name, [[0.0] * len(widths) for _ in range(steps + 1)])
                    table[step][i] += value / seeds
            if progress:
                progress(i * seeds + seed + 1, total)
    rms = {name: tuple(tuple(row) for row in table) for name, table in sums.items()}
    return CoordCheck(rule, widths, steps, lr, seeds, rms)


def _one_run(build: Callable[[int], nn.Module], base_width: int, width: int, batch: Any,
             rule: str, steps: int, lr: float, seed: int) -> list[dict[str, float]]:
    torch.manual_seed(1000 + seed)
    base = build(base_width)
    torch.manual_seed(seed)
    model = apply(build(width), batch, base=base, rule=rule)
    args, kwargs = first_set(batch)  # every set is captured; the first one trains
    opt = torch.optim.Adam(param_groups(model, lr=lr))
    target = None
    records = []
    for step in range(steps + 1):
        record: dict[str, float] = {}
        handles = [m.register_forward_hook(_recorder(n, record))
                   for n, m in model.named_modules()]
        try:
            out = _first_tensor(model(*args, **kwargs))
        finally:
            for handle in handles:
                handle.remove()
        records.append(record)
        if step == steps:
            break
        if out is None:
            raise TypeError(f"{type(model).__name__} returned no tensor to train on")
        if target is None:
            target = torch.randn(out.shape, generator=torch.Generator().manual_seed(0),
                                 dtype=out.dtype)
        loss = (out - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return records


def _recorder(name: str, record: dict[str, float]) -> Callable[..., None]:
    def hook(module: nn.Module, args: Any, out: Any) -> None:
        tensor = _first_tensor(out)
        if tensor is not None and tensor.is_floating_point() and name not in record:
            record[name] = float(tensor.detach().double().square().mean().sqrt())
    return hook
