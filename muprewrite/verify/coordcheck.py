"""Coordinate check: does every activation keep its size as the model widens (or deepens)?

Build the model at several widths, rewrite each with ``apply`` (base = the narrowest), take
a few Adam steps on one fixed batch, and record the RMS of every module's output at every
step. Under muP each curve is flat in width; under the standard parametrization some grow,
the output first.

The verdict per module is the *slope* of log2 RMS against log2 width at the last step (0 =
flat, 0.5 = grows like sqrt(width), 1 = like width). A module is flagged when its slope
exceeds ``SLOPE_THRESHOLD`` = 0.25, i.e. it grows more than 2x over a 16x range of widths.
Shrinking is not flagged: muP lets some outputs vanish with width at init (a readout whose
init part is 1/width), and training fills them in.

``coord_check_depth`` does the same across depth at one width: the slope is then against
log2 depth. Under a depth rule (``completep``, ``depth-mup``) the shallowest model is the
base; under a width-only rule each depth is its own base (the only base it accepts), which
shows what depth does to a model without a depth rule. Blocks are compared at the same
relative depth: block j of the shallowest model (L0 blocks) is paired with the last block of
the j-th group of L / L0 blocks of a model of L blocks (with L0 = 2: the middle and the last
block); the blocks between are not recorded.

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
from typing import Any, Literal

import torch
from torch import nn

from ..capture.input_sets import first_set
from ..errors import MuprewriteError, first_few
from ..files import write_file
from ..rewrite.apply import apply
from ..rewrite.attached import plan_of
from ..rules import Rule, load_rule
from ..training.optimizer import optimizer
from ..training.param_groups import param_groups

__all__ = ["CoordCheck", "coord_check", "coord_check_depth", "paired_names", "SLOPE_THRESHOLD", "OUTPUT",
           "Axis"]

SLOPE_THRESHOLD = 0.25
OUTPUT = ""  # the module name under which the model's own output is recorded
Axis = Literal["width", "depth"]


def slope(widths: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of log2(value) against log2(size); nan if a value is 0."""
    if any(v <= 0 for v in values) or len(widths) < 2:
        return math.nan
    xs = [math.log2(w) for w in widths]
    ys = [math.log2(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def rule_id(rule: str | Rule) -> str:
    return rule.id if isinstance(rule, Rule) else rule


def depth_base_is_own(rule: str | Rule) -> bool:
    """Whether a check across depth must use each depth as its own base: the rule has no
    ``[depth]`` section, so it refuses a base of another depth."""
    return not (rule if isinstance(rule, Rule) else load_rule(rule)).has_depth


@dataclass(frozen=True)
class CoordCheck:
    """``rms[module][step][i]``: RMS of the module's output at ``sizes[i]`` (widths, or depths
    when ``axis`` is "depth") after ``step`` updates (step 0 = at init). The model output is
    recorded as module ``""``. ``own_base``: each size was its own base."""

    rule: str
    sizes: tuple[int, ...]
    steps: int
    lr: float
    seeds: int
    rms: dict[str, tuple[tuple[float, ...], ...]]
    axis: Axis = "width"
    own_base: bool = False

    def at(self, module: str, step: int = -1) -> tuple[float, ...]:
        return self.rms[module][step]

    def slope(self, module: str, step: int = -1) -> float:
        return slope(self.sizes, self.at(module, step))

    def spread(self, module: str, step: int = -1) -> float:
        """Largest over smallest RMS across widths (1 = flat; inf if one is 0)."""
        values = self.at(module, step)
        return math.inf if min(values) == 0 else max(values) / min(values)

    def growth(self, module: str, step: int = -1) -> float:
        """RMS at the largest size over RMS at the smallest."""
        values = self.at(module, step)
        return math.inf if values[0] == 0 else values[-1] / values[0]

    def worst(self, n: int = 5, step: int = -1) -> list[tuple[str, float]]:
        """The ``n`` modules whose RMS varies most across sizes (max/min)."""
        spreads = [(m, self.spread(m, step)) for m in self.rms if any(self.at(m, step))]
        return sorted(spreads, key=lambda item: -item[1])[:n]

    def flagged(self, threshold: float = SLOPE_THRESHOLD, step: int = -1) -> list[tuple[str, float]]:
        """Modules whose RMS grows with the size faster than ``threshold`` (slope), worst
        first."""
        found = [(m, self.slope(m, step)) for m in self.rms]
        return sorted([(m, s) for m, s in found if s > threshold], key=lambda item: -item[1])

    def verdict(self, threshold: float = SLOPE_THRESHOLD) -> str:
        """A few lines for people: the output's slope and the flagged modules."""
        flagged = self.flagged(threshold)
        out = self.slope(OUTPUT)
        base = " (each depth its own base)" if self.own_base else ""
        lines = [f"rule {self.rule!r}{base}: output slope {out:+.2f}"
                 f"{' (FLAGGED)' if out > threshold else ''} "
                 f"(log2 RMS per doubling of {self.axis}, threshold {threshold:+.2f}); "
                 f"{len(flagged)} of {len(self.rms)} modules flagged"]
        lines += [f"  FLAGGED {m or '<output>'}: slope {s:+.2f}, x{self.growth(m):.2f} "
                  f"from {self.axis} {self.sizes[0]} to {self.sizes[-1]}"
                  for m, s in flagged[:10]]
        if len(flagged) > 10:
            lines.append(f"  ... and {len(flagged) - 10} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Every field; the sizes under "widths" or "depths" (the axis's name)."""
        data = asdict(self)
        data[f"{self.axis}s"] = list(data.pop("sizes"))
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
                inputs: Callable[[nn.Module], Any], rule: str | Rule = "mup",
                steps: int = 3, lr: float = 1e-2, seeds: int = 3,
                progress: Callable[[int, int], None] | None = None,
                adam_lr: float | None = None) -> CoordCheck:
    """RMS of every module's output at each of ``steps`` Adam steps, at each width (under a
    Muon rule: Muon on the hidden matrices at ``lr``, Adam on the rest at ``adam_lr``,
    default ``lr``).

    ``build(width)`` makes the model; the narrowest width is the base. ``inputs(model)``
    gives one batch (drawn once, reused at every width and step), in any form ``analyze``
    takes (of an ``InputSets``, every set is captured and the first one is trained on). The
    loss is the mean square error to a fixed random target of the output's shape.
    Each RMS is the mean over ``seeds`` initialisations, so one unlucky draw does not read as
    a trend. ``progress(done, total)`` is called after each (width, seed) run.
    """
    return _check(build, tuple(sorted(widths)), "width", False, inputs, rule, steps, lr,
                  seeds, progress, adam_lr)


def coord_check_depth(build: Callable[[int], nn.Module], depths: Sequence[int], *,
                      inputs: Callable[[nn.Module], Any], rule: str | Rule = "completep",
                      steps: int = 3, lr: float = 1e-2, seeds: int = 3,
                      progress: Callable[[int, int], None] | None = None) -> CoordCheck:
    """``coord_check`` across depth: ``build(depth)`` makes the model at one fixed width.

    Under a depth rule the shallowest model is the base; under a width-only rule each depth
    is its own base. Modules of the repeated blocks are recorded under the names of the
    shallowest model's blocks they are paired with (see the module docstring).

    >>> import torch
    >>> class Net(torch.nn.Module):
    ...     def __init__(self, depth):
    ...         super().__init__()
    ...         self.embed = torch.nn.Linear(8, 32)
    ...         self.blocks = torch.nn.ModuleList(torch.nn.Sequential(
    ...             torch.nn.LayerNorm(32), torch.nn.Linear(32, 32)) for _ in range(depth))
    ...         self.head = torch.nn.Linear(32, 3)
    ...     def forward(self, x):
    ...         x = self.embed(x)
    ...         for block in self.blocks:
    ...             x = x + block(x)
    ...         return self.head(x)
    >>> check = coord_check_depth(Net, [2, 8], inputs=lambda m: (torch.randn(16, 8),), seeds=1)
    >>> check.axis, check.sizes, sorted(m for m in check.rms if m.startswith("blocks."))[:3]
    ('depth', (2, 8), ['blocks.0', 'blocks.0.0', 'blocks.0.1'])
    """
    return _check(build, tuple(sorted(depths)), "depth", depth_base_is_own(rule), inputs,
                  rule, steps, lr, seeds, progress)


def _check(build: Callable[[int], nn.Module], sizes: tuple[int, ...], axis: Axis,
           own_base: bool, inputs: Callable[[nn.Module], Any], rule: str | Rule, steps: int,
           lr: float, seeds: int, progress: Callable[[int, int], None] | None,
           adam_lr: float | None = None) -> CoordCheck:
    torch.manual_seed(0)
    smallest = build(sizes[0])
    batch = inputs(smallest)
    sums: dict[str, list[list[float]]] = {}
    roles = RoleCheck()
    total = len(sizes) * seeds
    for i, size in enumerate(sizes):
        for seed in range(seeds):
            torch.manual_seed(1000 + seed)
            base = build(size if own_base else sizes[0])
            torch.manual_seed(seed)
            model = apply(build(size), batch, base=base, rule=rule)
            if axis == "width" and seed == 0:
                roles.check(size, model)
            names = (paired_names(model, smallest) if axis == "depth"
                     else {n: n for n, _ in model.named_modules()})
            for step, record in enumerate(_one_run(model, names, batch, steps, lr, adam_lr)):
                for name, value in record.items():
                    table = sums.setdefault(name, [[0.0] * len(sizes) for _ in range(steps + 1)])
                    table[step][i] += value / seeds
            if progress:
                progress(i * seeds + seed + 1, total)
    rms = {name: tuple(tuple(row) for row in table) for name, table in sums.items()}
    return CoordCheck(rule_id(rule), sizes, steps, lr, seeds, rms, axis, own_base)


class RoleCheck:
    """Across a width sweep under a Muon rule, every width must give each parameter the same
    role. The base width, where nothing is measured to grow, takes its roles from one
    capture; under a Muon rule a role that differs from the wider widths' would step the
    parameter with another optimizer at the base than at the widths it is meant to transfer
    to. Under any other rule every factor is 1 at the base whatever the role (m = 1), so a
    role guessed otherwise there trains the base exactly the same (Swin's position-bias
    table: *input* from one capture, *fixed* from two) and is not refused."""

    def __init__(self) -> None:
        self.first: tuple[int, dict[str, str]] | None = None

    def check(self, size: int, model: nn.Module) -> None:
        plan = plan_of(model)
        if plan is None or plan.optimizer != "muon":
            return
        roles: dict[str, str] = {info.name: info.role for info in plan.report}
        if self.first is None:
            self.first = (size, roles)
            return
        base_size, base_roles = self.first
        differ = [f"{n} ({base_roles[n]} at width {base_size}, {r} at {size})"
                  for n, r in roles.items() if n in base_roles and base_roles[n] != r]
        if differ:
            raise MuprewriteError(f"the roles at width {base_size} (the base, from one "
                                  f"capture) differ from those measured at width {size}: "
                                  f"{first_few(differ)}",
                                  fix="report it with the model; meanwhile sweep from a base "
                                      "one step narrower than the first width you compare")


def paired_names(model: nn.Module, shallow: nn.Module) -> dict[str, str]:
    """Model module name -> the name of its partner in ``shallow`` (the same architecture
    with fewer blocks), for the modules recorded across depth.

    A list of blocks (``nn.ModuleList`` / ``nn.Sequential``) of length L in the model and
    L0 in ``shallow`` is split into L0 groups in order; the last block of group j is paired
    with block j. Modules of the other blocks are left out.
    """
    out: dict[str, str] = {}

    def walk(module: nn.Module, partner: nn.Module | None, name: str, canon: str) -> None:
        out[name] = canon
        blocks = _blocks(module)
        partners = _blocks(partner)
        listed = blocks is not None and partners is not None and len(blocks) != len(partners)
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if listed and blocks is not None and partners is not None and child_name.isdigit():
                i, n, n0 = int(child_name), len(blocks), len(partners)
                j = i * n0 // n
                if (i + 1) * n0 // n == j:  # not the last block of its group
                    continue
                walk(child, partners[j], full, f"{canon}.{j}" if canon else str(j))
            else:
                twin = getattr(partner, child_name, None) if partner is not None else None
                walk(child, twin if isinstance(twin, nn.Module) else None, full,
                     f"{canon}.{child_name}" if canon else child_name)

    walk(model, shallow, "", "")
    return out


def _blocks(module: nn.Module | None) -> list[nn.Module] | None:
    """The children of a list of blocks (``nn.ModuleList``, ``nn.Sequential``), else None."""
    if isinstance(module, (nn.ModuleList, nn.Sequential)):
        return list(module.children())
    return None


def _one_run(model: nn.Module, names: dict[str, str], batch: Any, steps: int,
             lr: float, adam_lr: float | None = None) -> list[dict[str, float]]:
    args, kwargs = first_set(batch)  # every set is captured; the first one trains
    plan = plan_of(model)
    if plan is not None and plan.optimizer == "muon":
        opt = optimizer(model, lr=lr, adam_lr=lr if adam_lr is None else adam_lr)
    else:
        opt = torch.optim.Adam(param_groups(model, lr=lr))
    modules = [(names[n], m) for n, m in model.named_modules() if n in names]
    target = None
    records = []
    for step in range(steps + 1):
        record: dict[str, float] = {}
        handles = [m.register_forward_hook(_recorder(n, record)) for n, m in modules]
        try:
            out = _first_tensor(model(*args, **kwargs))
        finally:
            for handle in handles:
                handle.remove()
        records.append(record)
        if step == steps:
            break
        target = objective_step(model, out, target, opt)
    return records


def objective_step(model: nn.Module, out: torch.Tensor | None, target: torch.Tensor | None,
                   opt: torch.optim.Optimizer) -> torch.Tensor:
    """One step of the checks' objective on ``out`` (the model's first output tensor): mean
    squared error to a fixed random target of its shape, drawn at the first step (``target``
    None) and returned for the next."""
    if out is None:
        raise TypeError(f"{type(model).__name__} returned no tensor to train on")
    if target is None:
        target = torch.randn(out.shape, generator=torch.Generator().manual_seed(0),
                             dtype=out.dtype)
    loss = (out - target).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return target


def _recorder(name: str, record: dict[str, float]) -> Callable[..., None]:
    def hook(module: nn.Module, args: Any, out: Any) -> None:
        tensor = _first_tensor(out)
        if tensor is not None and tensor.is_floating_point() and name not in record:
            record[name] = float(tensor.detach().double().square().mean().sqrt())
    return hook
