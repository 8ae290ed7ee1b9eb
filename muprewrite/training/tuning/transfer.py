"""Check a transfer at the target width: train the transferred setting and its neighbours.

The card's setting (tuned on the proxy) is trained on the target for ``steps`` steps, and so
is each one-at-a-time neighbour: the learning rate and each tuned multiplier times every
factor of ``factors`` (default 1/2 and 2). The *regret* is the transferred setting's loss
minus the best loss found; near 0 means the optimum did transfer (within the grid's
resolution). The check's cost, as a share of one target run, is the steps it trained over
the target run's steps (the model is the target itself, so FLOPs per step cancel). Every
point starts from the same seed, so the comparison is not blurred by initialisation noise.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from ...rules.hparams import HPARAM_NAMES, Card
from .errors import TuneError
from .ledger import percent
from .objective import TrialConfig, build_run
from .space import Point, Range, Space
from .trial import TrainFn, check_time_limit, run_train

__all__ = ["TransferPoint", "TransferCheck", "verify_transfer", "neighbours"]


@dataclass(frozen=True)
class TransferPoint:
    """One setting trained at the target width: ``value`` is None if it failed."""

    label: str
    point: Point
    value: float | None
    steps: int
    error: str | None = None


@dataclass(frozen=True)
class TransferCheck:
    """The transferred setting (first point) and its neighbours, trained at the target."""

    points: tuple[TransferPoint, ...]
    steps: int
    target_steps: int | None = None

    @property
    def transferred(self) -> TransferPoint:
        return self.points[0]

    @property
    def best(self) -> TransferPoint:
        return min(self.points, key=lambda p: math.inf if p.value is None else p.value)

    @property
    def regret(self) -> float:
        """Transferred loss minus the best loss (inf if the transferred setting failed)."""
        if self.transferred.value is None or self.best.value is None:
            return math.inf
        return self.transferred.value - self.best.value

    @property
    def cost(self) -> float | None:
        """The check's training steps over one target run's (None without target_steps)."""
        return None if not self.target_steps else \
            sum(p.steps for p in self.points) / self.target_steps

    def summary(self) -> str:
        best = self.best
        where = "the transferred setting itself" if best is self.transferred else best.label
        cost = (f"; cost {percent(self.cost)} % of one target run" if self.cost is not None
                else "")
        failed = sum(p.value is None for p in self.points)
        fails = f" ({failed} failed)" if failed else ""
        rel = f" ({100 * self.regret / abs(best.value):.2g} % of the best)" \
            if best.value and math.isfinite(self.regret) else ""
        return (f"transfer check at the target width: regret {self.regret:.4g}{rel} against "
                f"the best of {len(self.points)} settings{fails}, which is {where}{cost}")

    def to_dict(self) -> dict[str, Any]:
        points = [{"label": p.label, **p.point.as_dict(), "value": p.value, "steps": p.steps,
                   "error": p.error} for p in self.points]
        return {"points": points, "steps": self.steps, "target_steps": self.target_steps,
                "regret": self.regret if math.isfinite(self.regret) else None,
                "best": self.best.label, "cost": self.cost}


def neighbours(card: Card, names: Sequence[str], factors: Sequence[float]) -> list[
        tuple[str, Point]]:
    """The card's point, then each of ``names`` times each factor, one at a time."""
    if card.lr is None:
        raise TuneError(f"the card {card.path or ''} has no learning rate",
                        fix="pass a card written by muprewrite tune")
    center = Point(card.lr, card.weight_decay or 0.0, card.hparams)
    out = [("transferred", center)]
    for name in names:
        for f in factors:
            if f == 1:
                continue
            if name in ("lr", "weight_decay"):
                moved = replace(center, **{name: getattr(center, name) * f})
            elif name in HPARAM_NAMES:
                moved = replace(center, hparams=replace(
                    center.hparams, **{name: getattr(center.hparams, name) * f}))
            else:
                raise TuneError(f"cannot vary {name!r}", fix=f"one of lr, weight_decay, "
                                                              f"{', '.join(HPARAM_NAMES)}")
            out.append((f"{name} x{f:g}", moved))
    return out


def verify_transfer(card: Card, target: Callable[[], nn.Module], train: TrainFn, *,
                    base: Callable[[], nn.Module], steps: int, inputs: Any = None,
                    target_steps: int | None = None, names: Sequence[str] | None = None,
                    factors: Sequence[float] = (0.5, 2.0), seed: int = 0,
                    timeout: float | None = None, device: str = "cpu",
                    progress: bool = True) -> TransferCheck:
    """Train the card's setting and its neighbours on ``target()`` (rewritten against
    ``base()``, the base the card was tuned with) for ``steps`` steps each.

    ``names``: what to vary (default: what the sweep tuned, from the card's [proxy] table,
    else lr and every multiplier the card changed); ``train`` is the sweep's train function
    (``run.report`` only records here: nothing is pruned).
    """
    check_time_limit(timeout)
    if names is None:
        tuned = (card.extra.get("proxy") or {}).get("tuned")
        names = list(tuned) if isinstance(tuned, list) else ["lr", *card.hparams.changed()]
    if inputs is None:
        from .objective import built

        example = getattr(built(target, "the target"), "example_inputs", None)
        if not callable(example):
            raise TuneError("the target has no example_inputs() method", fix="pass inputs=")
        inputs = example()
    config = TrialConfig(proxy=target, train=train, inputs=inputs, base=base,
                         space=Space((Range("lr", card.lr or 1.0, card.lr or 1.0),)),
                         steps=steps, rule=card.rule or "mup", seed=seed, timeout=timeout,
                         device=device)
    points = []
    for i, (label, point) in enumerate(neighbours(card, names, factors)):
        run = build_run(config, point, seed=seed, number=i)
        outcome = run_train(train, run, timeout)
        points.append(TransferPoint(label, point, outcome.value, outcome.steps_run,
                                    outcome.error))
        if progress:
            shown = f"{outcome.value:.6g}" if outcome.value is not None else outcome.error
            print(f"transfer check: {label}: {shown}", file=sys.stderr, flush=True)
    return TransferCheck(tuple(points), steps, target_steps)
