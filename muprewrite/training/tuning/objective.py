"""The objective one trial runs: a point of the space -> the muP proxy -> ``train(run)``.

:class:`TrialConfig` is everything a worker process needs to run trials (it is pickled to
each spawned worker, so its callables must be importable by module and name).
:func:`build_run` seeds torch, builds the proxy and its base, rewrites the proxy with the
trial's :class:`~muprewrite.HParams` and builds the optimizer. :func:`objective` wraps it
for Optuna: the train function's faults fail the trial (error kept as the trial's user
attribute ``error``); a proxy that cannot be built stops the sweep (TuneError).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import MuprewriteError
from ...rules import Rule
from .errors import TuneError
from .ledger import STEPS_ATTR, to_device
from .space import Point, Space
from .trial import TrainFn, TrialRun, run_train, seed_everything

__all__ = ["TrialConfig", "TrialFailed", "build_run", "objective", "SEED_ATTR",
           "TRACEBACK_ATTR"]

SEED_ATTR = "seed"
TRACEBACK_ATTR = "traceback"


class TrialFailed(Exception):
    """The train function failed this trial (the study goes on)."""


@dataclass(frozen=True)
class TrialConfig:
    """How to run a trial: build the proxy (and its base; default: the proxy builder again),
    rewrite it under ``rule`` on ``inputs``, train it ``steps`` steps with ``train``."""

    proxy: Callable[[], nn.Module]
    train: TrainFn
    inputs: Any
    space: Space
    steps: int
    rule: str | Rule = "mup"
    base: Callable[[], nn.Module] | None = None
    seed: int = 0
    weight_decay: float = 0.0
    timeout: float | None = None
    device: str = "cpu"
    same_seed: bool = False  # every trial seeded with ``seed`` (common random numbers)


def build_run(config: TrialConfig, point: Point, *, seed: int, number: int,
              trial: Any = None, proxy: Callable[[], nn.Module] | None = None,
              base: Callable[[], nn.Module] | None = None) -> TrialRun:
    """The TrialRun of ``point``: torch seeded with ``seed``, then ``proxy()`` (default:
    the config's) rewritten against ``base()`` with the point's base hyperparameters."""
    from ...rewrite.apply import apply
    from ..optimizer import optimizer

    build = proxy or config.proxy
    seed_everything(seed)
    model = built(build, "the proxy")
    reference = built(base or config.base or build, "the base")
    model = apply(model, config.inputs, base=reference, rule=config.rule, hparams=point.hparams)
    inputs = config.inputs
    if torch.device(config.device).type != "cpu":
        model.to(config.device)
        inputs = to_device(inputs, config.device)
    opt = optimizer(model, lr=point.lr, weight_decay=point.weight_decay)
    return TrialRun(model=model, optimizer=opt, lr=point.lr, weight_decay=point.weight_decay,
                    hparams=point.hparams, steps=config.steps, seed=seed, number=number,
                    inputs=inputs, trial=trial)


def objective(trial: Any, config: TrialConfig) -> float:
    """One Optuna trial: sample, build, train; the value is the returned validation loss."""
    import optuna

    point = config.space.point(config.space.suggest(trial), config.weight_decay)
    # a retried trial (its first worker died) keeps the seed of the first attempt
    origin = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
    seed = config.seed if config.same_seed else config.seed + (
        origin if isinstance(origin, int) else trial.number)
    trial.set_user_attr(SEED_ATTR, seed)
    try:
        run = build_run(config, point, seed=seed, number=trial.number, trial=trial)
    except MuprewriteError as exc:
        trial.set_user_attr("error", exc.one_line())
        raise TuneError(f"trial {trial.number}: building the muP proxy failed: "
                        f"{exc.message}", where=exc.where, fix=exc.fix) from None
    outcome = run_train(config.train, run, config.timeout)
    trial.set_user_attr(STEPS_ATTR, outcome.steps_run)
    if outcome.state == "pruned":
        raise optuna.TrialPruned()
    if outcome.state == "failed":
        trial.set_user_attr("error", outcome.error)
        if outcome.traceback:
            trial.set_user_attr(TRACEBACK_ATTR, outcome.traceback)
        raise TrialFailed(outcome.error)
    assert outcome.value is not None
    return outcome.value


def built(build: Callable[[], nn.Module], what: str) -> nn.Module:
    try:
        model = build()
    except MuprewriteError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's builder may raise anything
        raise TuneError(f"building {what} raised {type(exc).__name__}: "
                        f"{str(exc).strip()[:200]}", fix=f"call {describe(build)} yourself to "
                                                        "see the error") from None
    if not isinstance(model, nn.Module):
        raise TuneError(f"{describe(build)} returned a {type(model).__name__}, not an "
                        "nn.Module", fix="pass a function that builds and returns the model")
    return model


def describe(fn: Any) -> str:
    """A builder or train function as the user would name it."""
    text = getattr(fn, "describe", None)
    if callable(text):
        return str(text())
    func = getattr(fn, "func", None)  # functools.partial
    if func is not None:
        args = [repr(a) for a in getattr(fn, "args", ())] + [
            f"{k}={v!r}" for k, v in getattr(fn, "keywords", {}).items()]
        return f"{describe(func).removesuffix('()')}({', '.join(args)})"
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}()" if module and module != "builtins" else f"{name}()"

