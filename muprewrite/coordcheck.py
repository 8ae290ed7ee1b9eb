"""Coordinate check: does every activation keep its size as the model widens?

Build the model at several widths, rewrite each with ``apply`` (base = the smallest), take a
few Adam steps on one fixed batch, then record the RMS of every module's output. Under muP
each curve is flat in width; under the standard parametrization some grow (the logits
first). ``CoordCheck.plot`` draws the curves (log-log), one line per module.

>>> import torch
>>> from muprewrite.coordcheck import coord_check
>>> def mlp(w):
...     return torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.ReLU(), torch.nn.Linear(w, 3))
>>> check = coord_check(mlp, [32, 64], inputs=lambda m: (torch.randn(16, 8),))
>>> sorted(check.rms)
['', '0', '1', '2']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .apply import apply
from .capture import normalize_inputs
from .optim import param_groups

__all__ = ["CoordCheck", "coord_check"]


@dataclass(frozen=True)
class CoordCheck:
    rule: str
    widths: tuple[int, ...]
    rms: dict[str, tuple[float, ...]]  # module name ('' = the model's output) -> RMS per width

    def spread(self, module: str) -> float:
        """Largest over smallest RMS across widths (1 = perfectly flat; inf if one is 0)."""
        values = self.rms[module]
        low, high = min(values), max(values)
        return float("inf") if low == 0 else high / low

    def growth(self, module: str) -> float:
        """RMS at the widest over RMS at the narrowest."""
        first, last = self.rms[module][0], self.rms[module][-1]
        return float("inf") if first == 0 else last / first

    def worst(self, n: int = 5) -> list[tuple[str, float]]:
        spreads = [(m, self.spread(m)) for m in self.rms if any(self.rms[m])]
        return sorted(spreads, key=lambda item: -item[1])[:n]

    def plot(self, path: str | Path, title: str = "") -> Path:
        """Save a log-log plot of RMS against width (needs matplotlib)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for module, values in self.rms.items():
            if any(values):
                ax.plot(self.widths, values, lw=2 if module == "" else 0.8,
                        color="black" if module == "" else None,
                        label="output" if module == "" else None)
        ax.set(xscale="log", yscale="log", xlabel="width", ylabel="activation RMS",
               title=title or f"coordinate check, rule {self.rule!r}")
        ax.set_xticks(self.widths, [str(w) for w in self.widths])
        ax.legend(loc="best")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


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
                progress: Callable[[str], None] | None = None) -> CoordCheck:
    """RMS of every module's output after ``steps`` Adam steps, at each width.

    ``build(width)`` makes the model; the smallest width is the base. ``inputs(model)`` gives
    one batch (drawn once, reused at every width and step), in any form ``analyze`` takes. The loss is the mean square
    error to a fixed random target of the output's shape. Each RMS is the mean over
    ``seeds`` initialisations, so that one unlucky draw does not read as a trend.
    """
    widths = tuple(sorted(widths))
    torch.manual_seed(0)
    batch = inputs(build(widths[0]))
    rms: dict[str, list[float]] = {}
    for i, width in enumerate(widths):
        if progress:
            progress(f"width {width} ({i + 1}/{len(widths)})")
        for seed in range(seeds):
            for name, value in _one_run(build, widths[0], width, batch, rule, steps, lr,
                                        seed).items():
                rms.setdefault(name, [0.0] * len(widths))[i] += value / seeds
    return CoordCheck(rule, widths, {k: tuple(v) for k, v in rms.items()})


def _one_run(build: Callable[[int], nn.Module], base_width: int, width: int,
             batch: Any, rule: str, steps: int, lr: float, seed: int
             ) -> dict[str, float]:
    torch.manual_seed(1000 + seed)
    base = build(base_width)
    torch.manual_seed(seed)
    model = apply(build(width), batch, base=base, rule=rule)
    args, kwargs = normalize_inputs(batch)
    opt = torch.optim.Adam(param_groups(model, lr=lr))
    target = None
    for _ in range(steps):
        out = _first_tensor(model(*args, **kwargs))
        assert out is not None, "the model returned no tensor"
        if target is None:
            target = torch.randn(out.shape, generator=torch.Generator().manual_seed(0),
                                 dtype=out.dtype)
        loss = (out - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _activation_rms(model, args, kwargs)


def _activation_rms(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                    ) -> dict[str, float]:
    found: dict[str, float] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            tensor = _first_tensor(out)
            if tensor is not None and tensor.is_floating_point() and name not in found:
                found[name] = float(tensor.detach().double().square().mean().sqrt())
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules()]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return found
