"""Spectral check: do the weights and their updates keep the size feature learning needs?

"A Spectral Condition for Feature Learning" (Yang, Simon & Bernstein, 2023, arXiv
2310.17813): every weight matrix W (fan_out x fan_in) of a network that learns features at
every width has ``||W||_2 = Theta(sqrt(fan_out / fan_in))`` and takes updates of
``||dW||_2 = Theta(sqrt(fan_out / fan_in))`` (``||.||_2``: the spectral norm, the largest
singular value). The check, per width (the narrowest is the base) and seed:

1. build the model, rewrite it with ``apply`` and the rule, make the optimizer
   (``muprewrite.optimizer``: AdamW, SGD or Muon + AdamW, as the rule says);
2. train ``steps`` steps on one fixed batch, the coordinate check's objective (mean square
   error of the first output tensor to a fixed random target);
3. at init and after every step, for every trainable parameter that is a matrix (one with
   both fan-in and fan-out axes; of role input, hidden or output): the spectral norm of the
   *effective* matrix ``W_eff`` = W x its forward multiplier, and of the update
   ``dW_eff`` = W_eff after the step - W_eff before it, each over ``sqrt(fan_out / fan_in)``.

A parameter is made a matrix by putting its fan-out axes first and everything else after:
a conv kernel (out, in, k, k) is the (out, in*k*k) matrix it applies to its im2col patches,
an ``nn.Embedding`` weight (num, dim) is (dim, num). Learned tables added to activations
(no fan-in axis), biases and norm gains are vectors, not matrices, and are skipped. A weight
tied to two roles (embedding and readout) is recorded without its readout multiplier (it has
none at the embedding use); ``MatrixSeries.tied`` says so. Residual-branch multipliers of
depth rules are not part of any matrix.

The verdict on the ratios (per role, their slope against width) is the result's: see
spectra.py.

>>> import torch, muprewrite
>>> from muprewrite.verify import spectral_check
>>> def mlp(w):
...     return torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
...                                torch.nn.ReLU(), torch.nn.Linear(w, 3))
>>> spectra = spectral_check(mlp, [32, 64], inputs=lambda m: (torch.randn(16, 8),), steps=2,
...     make_optimizer=lambda m: torch.optim.AdamW(muprewrite.param_groups(m, lr=1e-2)))
>>> {n: s.role for n, s in spectra.matrices.items()}, len(spectra.matrices["2.weight"].update)
({'0.weight': 'input', '2.weight': 'hidden', '4.weight': 'output'}, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..analysis.report import ParamInfo
from ..capture.input_sets import first_set
from ..capture.unwrap import unwrap
from ..errors import InputSpecError, MuprewriteError, UsageError
from ..rewrite.apply import apply
from ..rewrite.attached import plan_of
from ..rules import Rule
from ..training.optimizer import optimizer
from .coordcheck import _first_tensor, objective_step, rule_id
from .singular import as_matrix, top_singular
from .spectra import EXPECT, QUANTITIES, ROLES, MatrixSeries, Quantity, Spectra

__all__ = ["Spectra", "MatrixSeries", "spectral_check", "ROLES", "EXPECT", "Quantity",
           "QUANTITIES"]


def spectral_check(build: Callable[[int], nn.Module], widths: Sequence[int], *,
                   inputs: Callable[[nn.Module], Any] | None = None, rule: str | Rule = "mup",
                   steps: int = 10, lr: float = 1e-2, adam_lr: float | None = None,
                   weight_decay: float = 0.0, seeds: int = 1,
                   progress: Callable[[int, int], None] | None = None,
                   make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
                   ) -> Spectra:
    """Spectral norms of every matrix and of its updates, at each width (module docstring).

    ``build(width)`` makes the model; the narrowest width is the base. ``inputs(model)``
    gives one batch (default: the model's ``example_inputs()``), drawn once and reused at
    every width and step; of an ``InputSets`` every set is captured and the first trains.
    The optimizer is ``make_optimizer(model)`` if given, else ``muprewrite.optimizer(model,
    lr=lr, adam_lr=adam_lr, weight_decay=weight_decay)`` (under a Muon rule ``lr`` is Muon's
    and ``adam_lr``, default ``lr``, AdamW's). Ratios are means over ``seeds``
    initialisations. ``progress(done, total)`` is called after each (width, seed) run.
    """
    sizes = tuple(sorted(set(widths)))
    if len(sizes) < 2:
        raise UsageError(f"the spectral check needs two widths or more, got {list(widths)}",
                         fix="spectral_check(build, [64, 128, 256], ...)")
    torch.manual_seed(0)
    batch = inputs(build(sizes[0])) if inputs is not None else _example_inputs(build(sizes[0]))
    runs: dict[int, list[_Run]] = {}
    layout: dict[str, ParamInfo] = {}
    optimizer_name = ""
    for width in reversed(sizes):  # the widest first: its report gives the roles
        for seed in range(seeds):
            torch.manual_seed(1000 + seed)
            base = build(sizes[0])
            torch.manual_seed(seed)
            model = apply(build(width), batch, base=base, rule=rule)
            layout = layout or _layout(model)
            opt = (make_optimizer(model) if make_optimizer is not None
                   else _default_optimizer(model, lr, adam_lr, weight_decay))
            optimizer_name = optimizer_name or _describe(opt)
            runs.setdefault(width, []).append(_one_run(model, opt, layout, batch, steps))
            if progress:
                progress(sum(map(len, runs.values())), len(sizes) * seeds)
    return Spectra(rule_id(rule), sizes, steps, lr, adam_lr, weight_decay, seeds,
                   optimizer_name, _merge([runs[w] for w in sizes]))


def _layout(model: nn.Module) -> dict[str, ParamInfo]:
    """The matrices to record, from the report of a model wider than the base (at the base
    itself nothing grows, so every role reads "fixed"): trainable, of role input, hidden or
    output, with fan-in and fan-out axes."""
    plan = plan_of(model)
    if plan is None:  # pragma: no cover - apply always leaves its plan
        raise MuprewriteError(f"{type(model).__name__} was not rewritten by muprewrite.apply")
    return {info.name: info for info in plan.report
            if info.trainable and info.role in ROLES and info.fan_in and info.fan_out}


def _example_inputs(model: nn.Module) -> Any:
    if not callable(getattr(model, "example_inputs", None)):
        raise InputSpecError(f"{type(model).__name__} has no example_inputs() method",
                             fix="pass inputs=lambda model: (torch.randn(8, 64),)")
    return model.example_inputs()  # type: ignore[operator]


def _default_optimizer(model: nn.Module, lr: float, adam_lr: float | None,
                       weight_decay: float) -> torch.optim.Optimizer:
    plan = plan_of(model)
    if adam_lr is None and plan is not None and plan.optimizer == "muon":
        adam_lr = lr  # as the coordinate check does
    return optimizer(model, lr=lr, adam_lr=adam_lr, weight_decay=weight_decay)


def _describe(opt: torch.optim.Optimizer) -> str:
    kinds = {str(g["optimizer"]) for g in opt.param_groups if "optimizer" in g}
    return type(opt).__name__ + (f" ({' + '.join(sorted(kinds))})" if len(kinds) > 1 else "")


@dataclass(frozen=True)
class _Matrix:
    name: str
    param: nn.Parameter = field(repr=False)
    role: str
    fan_out: tuple[int, ...]
    multiplier: float
    tied: bool
    muon: bool

    def effective(self) -> torch.Tensor:
        return as_matrix(self.param.detach(), self.fan_out) * self.multiplier

    @property
    def shape(self) -> tuple[int, int]:
        rows = math.prod(self.param.shape[a] for a in self.fan_out)
        return rows, self.param.numel() // rows


@dataclass
class _Run:
    matrices: list[_Matrix]
    weight: list[list[float]]  # [step][matrix]
    update: list[list[float]]


def _matrices(model: nn.Module, opt: torch.optim.Optimizer,
              layout: dict[str, ParamInfo]) -> list[_Matrix]:
    """The matrices of ``layout`` that ``opt`` steps, with this model's multipliers."""
    plan = plan_of(model)
    all_muon = type(opt).__name__ == "Muon"
    stepped = {id(p): all_muon or g.get("optimizer") == "muon"
               for g in opt.param_groups for p in g["params"]}
    out = []
    for name, param in unwrap(model).named_parameters():
        info = layout.get(name)
        if info is None or id(param) not in stepped:
            continue
        multiplier = 1.0 if info.tied or plan is None else plan.params[name].multiplier
        out.append(_Matrix(name, param, info.role, info.fan_out, multiplier, info.tied,
                           stepped[id(param)]))
    return out


class _Ratios:
    """``||A||_2 / sqrt(rows / cols)`` of a sequence of nearby matrices (one weight, or its
    updates, step after step), each Lanczos run started from the last one's top vector."""

    def __init__(self) -> None:
        self.start: torch.Tensor | None = None

    def __call__(self, matrix: torch.Tensor) -> float:
        sigma, self.start = top_singular(matrix, self.start)
        return sigma / math.sqrt(matrix.shape[0] / matrix.shape[1])


def _one_run(model: nn.Module, opt: torch.optim.Optimizer, layout: dict[str, ParamInfo],
             batch: Any, steps: int) -> _Run:
    args, kwargs = first_set(batch)  # every set is captured; the first one trains
    matrices = _matrices(model, opt, layout)
    weights, updates = [_Ratios() for _ in matrices], [_Ratios() for _ in matrices]
    before = [m.effective() for m in matrices]
    run = _Run(matrices, [[r(b) for r, b in zip(weights, before)]], [])
    target = None
    for _ in range(steps):
        target = objective_step(model, _first_tensor(model(*args, **kwargs)), target, opt)
        after = [m.effective() for m in matrices]
        run.weight.append([r(a) for r, a in zip(weights, after)])
        run.update.append([r(a - b) for r, a, b in zip(updates, after, before)])
        before = after
    return run


def _merge(runs: list[list[_Run]]) -> dict[str, MatrixSeries]:
    """Per matrix (those recorded at every width), the ratios as [step][width], averaged
    over the seeds of each width."""
    index = [{m.name: j for j, m in enumerate(seeds[0].matrices)} for seeds in runs]
    out = {}
    for m in runs[0][0].matrices:
        if not all(m.name in at for at in index):
            continue
        at = [seeds[0].matrices[where[m.name]] for seeds, where in zip(runs, index)]

        def table(field: str, name: str = m.name) -> tuple[tuple[float, ...], ...]:
            return tuple(tuple(sum(getattr(r, field)[step][where[name]] for r in seeds)
                               / len(seeds) for seeds, where in zip(runs, index))
                         for step in range(len(getattr(runs[0][0], field))))

        out[m.name] = MatrixSeries(m.name, m.role, tuple(a.shape for a in at),
                                   tuple(a.multiplier for a in at), tuple(a.muon for a in at),
                                   m.tied, table("weight"), table("update"))
    return out
