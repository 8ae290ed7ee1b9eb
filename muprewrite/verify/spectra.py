"""The spectral check's result: per matrix and width, the spectral ratios; per role, the verdict.

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
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from ..errors import first_few
from ..files import write_file
from .coordcheck import SLOPE_THRESHOLD, slope

__all__ = ["Spectra", "MatrixSeries", "ROLES", "EXPECT", "QUANTITIES", "Quantity"]

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
    """The spectral check of one rule across ``widths`` (spectral.py says what is measured,
    this module's docstring what is flagged)."""

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
