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

The verdict: per role, the geometric mean over its matrices of the final weight ratio and
of the mean-over-steps update ratio, and the slope of log2 ratio against log2 width (as the
coordinate check's). Flagged when the slope is above ``SLOPE_THRESHOLD`` in size: every
role's update ratio (growing: updates blow up with width, the standard parametrization's
failure; shrinking: the layer stops learning features, the lazy regime) and the hidden
weight ratio. The input and output weight ratios are flagged only when they grow (``EXPECT``):
Theta is asymptotic, and both may fall below it with no fault. A readout may start below
``sqrt(fan_out / fan_in)`` (zero-initialised like DiT's final layer, or with init std
``1/fan_in``, TP5's Table 3) and be filled in by its updates; an input matrix's norm, about
``std * (sqrt(fan_out) + sqrt(fan_in))``, is proportional to ``sqrt(fan_out)`` only once
the width is well above its finite fan-in (a vocabulary, patch pixels), so below that its
ratio falls as the width grows. Its update ratio does the same below that size: check at
widths above the input size. (Under the ``mup`` rule, readout init as at the base times the
``1/m`` multiplier, the readout's weight ratio is flat.)

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

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import nn

from ..analysis.report import ParamInfo
from ..rewrite.apply import apply
from ..errors import InputSpecError, MuprewriteError, UsageError, first_few
from ..files import write_file
from ..capture.input_sets import first_set
from ..capture.unwrap import unwrap
from ..rewrite.attached import plan_of
from ..training.optimizer import optimizer
from ..rules import Rule
from .coordcheck import SLOPE_THRESHOLD, _first_tensor, objective_step, rule_id, slope
from .singular import as_matrix, top_singular

__all__ = ["Spectra", "MatrixSeries", "spectral_check", "ROLES", "EXPECT", "Quantity"]

ROLES = ("input", "hidden", "output")
Quantity = Literal["weight", "update"]
Expect = Literal["flat", "no growth"]
# what the spectral condition asks of each per-role ratio as the width grows (see above)
EXPECT: Mapping[tuple[str, Quantity], Expect] = MappingProxyType({
    ("input", "weight"): "no growth", ("input", "update"): "flat",
    ("hidden", "weight"): "flat", ("hidden", "update"): "flat",
    ("output", "weight"): "no growth", ("output", "update"): "flat"})
QUANTITIES: tuple[Quantity, ...] = ("weight", "update")


@dataclass(frozen=True)
class MatrixSeries:
    """One matrix. ``weight[step][i]``: ``||W_eff||_2 / sqrt(fan_out / fan_in)`` at
    ``widths[i]`` after ``step`` updates (step 0 = at init); ``update[k][i]``: the same of the
    (k+1)-th update; both means over seeds. ``shapes[i]``: (fan_out, fan_in) at ``widths[i]``.
    ``muon[i]``: stepped by Muon at ``widths[i]``; ``tied``: a tied weight, recorded without
    its readout multiplier."""

    name: str
    role: str
    shapes: tuple[tuple[int, int], ...]
    multiplier: tuple[float, ...]
    muon: tuple[bool, ...]
    tied: bool
    weight: tuple[tuple[float, ...], ...]
    update: tuple[tuple[float, ...], ...]

    def ratio(self, quantity: Quantity) -> tuple[float, ...]:
        """Per width: the final weight ratio, or the update ratio averaged over steps."""
        if quantity == "weight":
            return self.weight[-1]
        return tuple(sum(col) / len(col) for col in zip(*self.update))


@dataclass(frozen=True)
class Spectra:
    """The spectral check of one rule across ``widths`` (see the module docstring)."""

    rule: str
    widths: tuple[int, ...]
    steps: int
    lr: float
    adam_lr: float | None
    weight_decay: float
    seeds: int
    optimizer: str
    matrices: dict[str, MatrixSeries]

    @property
    def roles(self) -> tuple[str, ...]:
        present = {s.role for s in self.matrices.values()}
        return tuple(r for r in ROLES if r in present)

    def of_role(self, role: str, quantity: Quantity) -> list[MatrixSeries]:
        """The role's matrices whose ``quantity`` ratio is positive and finite at every width
        (a zero-initialised weight has no ratio at init; a diverged run none at all)."""
        return [s for s in self.matrices.values() if s.role == role
                and all(0 < v < math.inf for v in s.ratio(quantity))]

    def ratio(self, role: str, quantity: Quantity) -> tuple[float, ...]:
        """Per width: the geometric mean of ``quantity`` over ``of_role(role, quantity)``."""
        series = [s.ratio(quantity) for s in self.of_role(role, quantity)]
        if not series:
            return tuple(math.nan for _ in self.widths)
        return tuple(math.exp(sum(math.log(v) for v in col) / len(col)) for col in zip(*series))

    def slope(self, role: str, quantity: Quantity = "update") -> float:
        """Slope of log2 ``ratio(role, quantity)`` against log2 width (0 = flat)."""
        return slope(self.widths, self.ratio(role, quantity))

    def flagged(self, threshold: float = SLOPE_THRESHOLD) -> list[tuple[str, Quantity, float]]:
        """(role, quantity, slope) of every ratio off what ``EXPECT`` asks: a "flat" one
        whose slope is above ``threshold`` in size, a "no growth" one whose slope is above
        it; worst first."""
        found = [(r, q, self.slope(r, q)) for r in self.roles for q in QUANTITIES]
        return sorted([(r, q, s) for r, q, s in found
                       if (abs(s) if EXPECT[r, q] == "flat" else s) > threshold],
                      key=lambda f: -abs(f[2]))

    def mixed_optimizer(self) -> list[str]:
        """Matrices stepped by Muon at some widths and not at others: the widths then train
        with different optimizers, and their ratios do not compare."""
        return [n for n, s in self.matrices.items() if any(s.muon) and not all(s.muon)]

    def diverged(self) -> list[str]:
        """Matrices with a non-finite norm at some width (left out of the role means)."""
        return [n for n, s in self.matrices.items()
                if not all(math.isfinite(v) for q in QUANTITIES for v in s.ratio(q))]

    def ok(self, threshold: float = SLOPE_THRESHOLD) -> bool:
        """Nothing flagged, nothing diverged, one optimizer per matrix at every width."""
        return not (self.flagged(threshold) or self.mixed_optimizer() or self.diverged())

    def verdict(self, threshold: float = SLOPE_THRESHOLD) -> str:
        """A few lines for people: the hidden update's slope and what is flagged."""
        flagged = self.flagged(threshold)
        head = (f"rule {self.rule!r} ({self.optimizer}): hidden update slope "
                f"{self.slope('hidden'):+.2f}" if "hidden" in self.roles
                else f"rule {self.rule!r} ({self.optimizer}): no hidden matrix")
        lines = [f"{head} (log2 spectral ratio per doubling of width, threshold "
                 f"{threshold:.2f}); {len(flagged)} of {len(self.roles) * 2} ratios flagged"]
        for role, quantity, s in flagged:
            values = self.ratio(role, quantity)
            lines.append(f"  FLAGGED {role} {quantity}: slope {s:+.2f}, x{values[-1] / values[0]:.2f}"
                         f" from width {self.widths[0]} to {self.widths[-1]} (expected "
                         f"{EXPECT[role, quantity]})")
        if self.diverged():
            lines.append(f"  FLAGGED {len(self.diverged())} matrices diverged (a non-finite "
                         f"norm): {first_few(self.diverged())}; lower the learning rate")
        by_widths: dict[tuple[int, ...], list[str]] = {}
        for name in self.mixed_optimizer():
            on = tuple(w for w, m in zip(self.widths, self.matrices[name].muon) if m)
            by_widths.setdefault(on, []).append(name)
        for on, names in by_widths.items():
            lines.append(f"  FLAGGED {len(names)} matrices stepped by Muon at width(s) "
                         f"{', '.join(map(str, on))} only, by another optimizer at the others: "
                         f"{first_few(names)}")
        return "\n".join(lines)

    def summary(self, per_matrix: bool = False) -> str:
        """A table: per role and quantity, the ratio at each width and its slope; with
        ``per_matrix``, a row for every matrix too."""
        flagged = {(r, q) for r, q, _ in self.flagged()}
        rows: list[tuple[str, tuple[float, ...], float, str]] = [
            (f"{role} {quantity} ({len(self.of_role(role, quantity))})",
             self.ratio(role, quantity), self.slope(role, quantity),
             ("FLAGGED, expected " if (role, quantity) in flagged else "expected ")
             + EXPECT[role, quantity])
            for role in self.roles for quantity in QUANTITIES]
        for name, series in self.matrices.items() if per_matrix else ():
            muon = series.muon
            marks = ", ".join(([] if not any(muon) else ["muon"] if all(muon)
                               else ["muon at some widths"]) + (["tied"] if series.tied else []))
            rows += [(f"  {name} {quantity}", series.ratio(quantity),
                      slope(self.widths, series.ratio(quantity)), marks) for quantity in QUANTITIES]
        pad = max([len(r[0]) for r in rows] + [8])
        lines = [f"rule {self.rule!r}, {self.optimizer}, {self.steps} steps: spectral norm over "
                 "sqrt(fan_out/fan_in); weight = final, update = mean over steps",
                 " " * pad + "".join(f"{w:>9}" for w in self.widths) + "    slope"]
        lines += [f"{label:<{pad}}" + "".join(f"{v:>9.3g}" for v in values) + f"    {s:+.2f}"
                  + (f"  {note}" if note else "") for label, values, s, note in rows]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Every field (non-finite numbers as None), plus the per-role ratios and slopes."""
        data = asdict(self)
        data["roles"] = {r: {q: {"ratio": list(self.ratio(r, q)), "slope": self.slope(r, q),
                                 "expect": EXPECT[r, q], "matrices": len(self.of_role(r, q))}
                             for q in QUANTITIES} for r in self.roles}
        data["flagged"] = [list(f) for f in self.flagged()]
        data["mixed_optimizer"] = self.mixed_optimizer()
        data["diverged"] = self.diverged()
        data["threshold"] = SLOPE_THRESHOLD
        return _finite(data)

    def save_json(self, path: str | Path, *, force: bool = False) -> Path:
        """Write ``to_dict()`` as JSON (``force``: over a read-only file too)."""
        return write_file(path, json.dumps(self.to_dict(), indent=1).encode(), force=force)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


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
