"""The search space: a log-uniform range per hyperparameter tuned on the proxy.

A name is ``lr``, ``weight_decay`` or one of :class:`muprewrite.HParams`' multipliers. Every
range is sampled log-uniformly (``trial.suggest_float(name, low, high, log=True)``); a range
with ``low == high`` holds the value fixed and is not sampled. The default space is the
learning rate (its range is yours to give) and the multipliers Tensor Programs V tunes on
its proxies, each over 2^-4..2^4: ``output_multiplier``, ``input_multiplier``,
``attention_multiplier`` (dropped when the model has no attention), ``hidden_init`` and
``lr_hidden``; ``branch_multiplier`` joins them under a depth rule.

>>> space = Space.of(None, lr=(1e-4, 1e-1))
>>> space.names
('lr', 'output_multiplier', 'input_multiplier', 'attention_multiplier', 'hidden_init', 'lr_hidden')
>>> Space.of({"lr": (1e-3, 1e-2), "output_multiplier": None}, lr=None).ranges[1]
Range(name='output_multiplier', low=0.0625, high=16.0)
>>> point = space.point({"lr": 3e-3, "output_multiplier": 2.0})
>>> point.lr, point.hparams.changed()
(0.003, {'output_multiplier': 2.0})
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ...errors import UsageError
from ...rules.hparams import HPARAM_NAMES, HParams

__all__ = ["Range", "Space", "Point", "SpaceLike", "DEFAULT_MULTIPLIERS", "MULTIPLIER_RANGE",
           "TUNABLE"]

MULTIPLIER_RANGE = (2.0 ** -4, 2.0 ** 4)
DEFAULT_MULTIPLIERS = ("output_multiplier", "input_multiplier", "attention_multiplier",
                       "hidden_init", "lr_hidden")
TUNABLE = ("lr", "weight_decay", *HPARAM_NAMES)


class _Suggests(Protocol):
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = ...) -> float: ...


@dataclass(frozen=True)
class Range:
    """``low <= value <= high``, sampled log-uniformly; fixed when ``low == high``."""

    name: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if self.name not in TUNABLE:
            raise UsageError(f"cannot tune {self.name!r}: not a hyperparameter muprewrite knows",
                             fix=f"one of {', '.join(TUNABLE)}")
        for value in (self.low, self.high):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value <= 0:
                raise UsageError(f"the range of {self.name} must hold finite numbers > 0 (it is "
                                 f"sampled on a log scale), got {self.low!r}..{self.high!r}",
                                 fix=f"{self.name}=(0.25, 4.0)")
        if self.low > self.high:
            raise UsageError(f"the range of {self.name} is empty: {self.low!r} > {self.high!r}",
                             fix=f"{self.name}=({self.high!r}, {self.low!r})")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def __str__(self) -> str:
        return f"{self.name}={self.low:.3g}" if self.fixed else \
            f"{self.name}={self.low:.3g}..{self.high:.3g}"


@dataclass(frozen=True)
class Point:
    """One setting of the space: what a trial trains with."""

    lr: float
    weight_decay: float
    hparams: HParams

    def as_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "weight_decay": self.weight_decay, **vars(self.hparams)}


RangeLike = tuple[float, float] | Sequence[float] | float | None


@dataclass(frozen=True)
class Space:
    """The ranges tuned, in order (``lr`` first)."""

    ranges: tuple[Range, ...]

    def __post_init__(self) -> None:
        names = [r.name for r in self.ranges]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(f"the search space names {', '.join(twice)} twice",
                             fix="give each hyperparameter one range")
        if "lr" not in names:
            raise UsageError("the search space has no learning rate",
                             fix="give its range: lr=(1e-4, 1e-1), or lr=3e-3 to hold it fixed")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.ranges)

    @property
    def tuned(self) -> tuple[str, ...]:
        """The names that are sampled (not fixed)."""
        return tuple(r.name for r in self.ranges if not r.fixed)

    def __getitem__(self, name: str) -> Range:
        for r in self.ranges:
            if r.name == name:
                return r
        raise KeyError(name)

    @classmethod
    def default(cls, lr: RangeLike, *, attention: bool = True, depth: bool = False) -> Space:
        """lr plus the default multipliers (``attention_multiplier`` only with attention,
        ``branch_multiplier`` only under a depth rule)."""
        names = [n for n in DEFAULT_MULTIPLIERS if attention or n != "attention_multiplier"]
        if depth:
            names.append("branch_multiplier")
        return cls((_range("lr", lr), *(Range(n, *MULTIPLIER_RANGE) for n in names)))

    @classmethod
    def of(cls, spec: Space | Mapping[str, Any] | Sequence[str] | None, lr: RangeLike) -> Space:
        """The space a ``space=`` argument asks for.

        ``None``: the default; a ``Space``: itself; a sequence of names: those (default
        ranges); a mapping name -> (low, high) (or None for the default range, or one number
        to hold it fixed): exactly those. ``lr`` is the learning rate's range, used unless the
        mapping gives one.
        """
        if spec is None:
            return cls.default(lr)
        if isinstance(spec, Space):
            return spec
        if isinstance(spec, str):
            raise UsageError(f"space={spec!r} is one string; a space is a list of names or a "
                             "mapping of names to ranges", fix=f"space=[{spec!r}]")
        if isinstance(spec, Mapping):
            items = list(spec.items())
        elif isinstance(spec, Iterable):
            items = [(name, None) for name in spec]
        else:
            raise UsageError(f"space= takes a list of names or a mapping of names to ranges, "
                             f"got {type(spec).__name__}",
                             fix='space={"lr": (1e-4, 1e-1), "output_multiplier": (0.25, 4)}')
        given = dict(items)
        if "lr" in given and given["lr"] is not None and lr is not None \
                and _range("lr", given["lr"]) != _range("lr", lr):
            raise UsageError("the learning rate's range is given twice (lr= and space['lr'])",
                             fix="give it once")
        ranges = [_range(str(name), value if value is not None else
                         (lr if name == "lr" else None)) for name, value in items]
        if "lr" not in given:
            ranges.insert(0, _range("lr", lr))
        return cls(tuple(sorted(ranges, key=lambda r: r.name != "lr")))

    def with_ranges(self, **ranges: RangeLike) -> Space:
        """This space with ranges added or replaced (None: the default range)."""
        new = {r.name: r for r in self.ranges}
        for name, value in ranges.items():
            new[name] = _range(name, value)
        return Space(tuple(new.values()))

    def without(self, *names: str) -> Space:
        """This space without ``names`` (they stay at 1, or at the default weight decay)."""
        if "lr" in names:
            raise UsageError("the learning rate cannot leave the space",
                             fix="hold it fixed instead: with_ranges(lr=3e-3)")
        return Space(tuple(r for r in self.ranges if r.name not in names))

    def suggest(self, trial: _Suggests) -> dict[str, float]:
        """Every value of one trial: sampled ones from ``trial``, fixed ones as they are."""
        return {r.name: r.low if r.fixed else float(trial.suggest_float(r.name, r.low, r.high,
                                                                         log=True))
                for r in self.ranges}

    def point(self, values: Mapping[str, float], weight_decay: float = 0.0) -> Point:
        """The trial setting of ``values`` (missing names: fixed ones, else the defaults)."""
        full = {r.name: r.low for r in self.ranges if r.fixed}
        full.update(values)
        if "lr" not in full:
            raise UsageError("a point of the space needs lr", fix="pass lr")
        multipliers = {k: float(v) for k, v in full.items() if k in HPARAM_NAMES}
        return Point(float(full["lr"]), float(full.get("weight_decay", weight_decay)),
                     HParams(**multipliers))

    def to_dict(self) -> dict[str, list[float]]:
        return {r.name: [r.low, r.high] for r in self.ranges}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> Space:
        return cls(tuple(Range(name, float(lo), float(hi)) for name, (lo, hi) in data.items()))

    def __str__(self) -> str:
        return ", ".join(map(str, self.ranges))


SpaceLike = Space | Mapping[str, Any] | Sequence[str] | None


def _range(name: str, value: Any) -> Range:
    if value is None:
        if name == "lr":
            raise UsageError("the learning rate has no default range: it depends on your "
                             "model and optimizer", fix="pass lr=(1e-4, 1e-1) (or --lr 1e-4:1e-1)")
        if name == "weight_decay":
            raise UsageError("weight_decay has no default range",
                             fix='give one: space={"weight_decay": (1e-4, 1e-1), ...}')
        return Range(name, *MULTIPLIER_RANGE)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Range(name, value, value)
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise UsageError(f"the range of {name} must be (low, high) or one number, got {value!r}",
                         fix=f"{name}=(0.25, 4.0)")
    return Range(name, value[0], value[1])
