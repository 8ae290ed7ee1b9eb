"""One trial: the muP proxy built for a point of the space, and the user's train function run
on it, guarded.

Stages: seed torch (and ``random``) with the trial's seed; build the proxy and its base;
``muprewrite.apply`` with the trial's :class:`~muprewrite.HParams`; build the optimizer with
the trial's learning rate; hand the :class:`TrialRun` to ``train(run) -> float``. Whatever
``train`` does wrong (raises, returns NaN, inf or a non-number, reports a non-finite loss,
runs past ``timeout`` seconds) becomes an :class:`Outcome` of state "failed" with the error
as text; only Ctrl-C goes through.

The time limit is a SIGALRM timer in the main thread, so it needs a POSIX system and the
main thread (each worker process runs its trials in its own). A hang inside one C call (a
deadlocked collective, a blocking read) is only interrupted when that call returns to Python.

>>> import torch
>>> run = TrialRun(model=torch.nn.Linear(2, 1), optimizer=None, lr=0.1, weight_decay=0.0,
...                hparams=HParams(), steps=10, seed=0, number=0, inputs=None)
>>> def train(run):
...     for step in range(1, 4):
...         run.report(step, 1.0 / step)
...     return 0.25
>>> out = run_train(train, run)
>>> out.state, out.value, out.steps_run
('complete', 0.25, 10)
>>> run_train(lambda run: float("nan"), run).error
'returned nan, not a finite number'
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ...errors import UsageError
from ...rules.hparams import HParams
from .errors import TrialDiverged, TrialTimeout

__all__ = ["TrialRun", "Outcome", "run_train", "time_limit", "seed_everything", "TrainFn"]

MAX_TRACEBACK = 4000  # characters of a failed trial's traceback kept on the trial


class TrialRun:
    """What ``train(run)`` gets: the rewritten proxy, its optimizer and the trial's setting.

    ``model``: the proxy in muP with this trial's base hyperparameters (``hparams``);
    ``optimizer``: ``muprewrite.optimizer(model, lr=lr, weight_decay=weight_decay)``;
    ``steps``: the budget of optimizer steps; ``seed``: torch was seeded with it before the
    model was built (seed your data loader with it too); ``inputs``: the example inputs;
    ``number``: the trial's number in the study. Call ``report(step, loss)`` with the steps
    done so far and a validation loss: the pruner may stop the trial there (it raises
    ``optuna.TrialPruned``: let it propagate), and the ledger counts the steps that ran.
    Return the final validation loss.
    """

    def __init__(self, *, model: nn.Module, optimizer: Any, lr: float, weight_decay: float,
                 hparams: HParams, steps: int, seed: int, number: int, inputs: Any,
                 trial: Any = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.hparams = hparams
        self.steps = steps
        self.seed = seed
        self.number = number
        self.inputs = inputs
        self.losses: dict[int, float] = {}  # step -> reported loss
        self._trial = trial  # an optuna.Trial, or None outside a study (transfer checks)

    @property
    def steps_run(self) -> int:
        """The last step reported (0 before any report)."""
        return max(self.losses, default=0)

    def report(self, step: int, loss: float | torch.Tensor) -> None:
        """Record ``loss`` after ``step`` optimizer steps; raise ``optuna.TrialPruned`` if the
        pruner stops the trial here, TrialDiverged if the loss is not finite."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise UsageError(f"run.report(step, loss): step must be an int >= 0 (the steps done "
                             f"so far), got {step!r}", fix="run.report(step, loss.item())")
        value = _number(loss)
        if value is None:
            raise UsageError(f"run.report(step, loss): loss must be a number, got "
                             f"{type(loss).__name__}", fix="run.report(step, loss.item())")
        self.losses[step] = value
        if not math.isfinite(value):
            raise TrialDiverged(f"diverged: loss {value} reported at step {step}")
        if self._trial is not None:
            self._trial.report(value, step)
            if self._trial.should_prune():
                import optuna

                raise optuna.TrialPruned(f"pruned at step {step} (loss {value:.6g})")


TrainFn = Callable[[TrialRun], Any]


@dataclass(frozen=True)
class Outcome:
    """How a train function ended: "complete" with a finite value, "pruned" by the pruner,
    or "failed" with ``error`` (one line) and ``traceback``."""

    state: Literal["complete", "pruned", "failed"]
    value: float | None
    steps_run: int
    error: str | None = None
    traceback: str | None = None


def run_train(train: TrainFn, run: TrialRun, timeout: float | None = None) -> Outcome:
    """Call ``train(run)`` within ``timeout`` seconds and say how it ended (never raises
    for the train function's faults, ``sys.exit()`` included; KeyboardInterrupt and other
    BaseExceptions go through)."""
    check_time_limit(timeout)
    pruned_type = _pruned_type()
    try:
        with time_limit(timeout):
            result = train(run)
    except TrialTimeout as exc:
        at = f" (last report at step {run.steps_run})" if run.losses else " (nothing reported)"
        return Outcome("failed", None, run.steps_run, f"timed out: {exc}{at}", None)
    except (Exception, SystemExit) as exc:  # the user's code may raise anything; Ctrl-C
        # and other BaseExceptions (a SIGTERM turned into one) stop the sweep instead
        if pruned_type is not None and isinstance(exc, pruned_type):
            return Outcome("pruned", None, run.steps_run, None, None)
        text = f"{type(exc).__name__}: {_first_line(exc)}"
        if isinstance(exc, TrialDiverged):
            text = str(exc)
        elif isinstance(exc, SystemExit):
            text = f"called sys.exit({exc.code!r})"
        tb = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]
        return Outcome("failed", None, run.steps_run, text, tb)
    value = _number(result)
    if value is None:
        return Outcome("failed", None, run.steps_run,
                       f"returned {type(result).__name__} {_short(result)}, not a number "
                       "(return the final validation loss as a float)", None)
    if not math.isfinite(value):
        return Outcome("failed", None, run.steps_run, f"returned {value}, not a finite number")
    return Outcome("complete", value, max(run.steps, run.steps_run))


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TrialTimeout in the main thread if the block runs longer than ``seconds``."""
    if seconds is None:
        yield
        return
    check_time_limit(seconds)

    def on_alarm(signum: int, frame: Any) -> None:
        raise TrialTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_time_limit(seconds: float | None) -> None:
    """UsageError unless a per-trial time limit can be kept here."""
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"the trial time limit must be a number of seconds > 0, got "
                         f"{seconds!r}", fix="timeout=600")
    if not hasattr(signal, "setitimer"):
        raise UsageError("a per-trial time limit needs SIGALRM, which this system lacks",
                         fix="leave timeout out")
    if threading.current_thread() is not threading.main_thread():
        raise UsageError("a per-trial time limit works only in the main thread (it is a "
                         "SIGALRM timer)", fix="call tune() from the main thread, pass "
                                              "workers=2 or more (each worker process runs its "
                                              "trials in its main thread), or leave timeout out")


def seed_everything(seed: int) -> None:
    """Seed torch's generators (CPU and every device) and ``random``."""
    torch.manual_seed(seed)
    random.seed(seed)


def _pruned_type() -> type[BaseException] | None:
    try:
        import optuna
    except ImportError:
        return None
    return optuna.TrialPruned  # type: ignore[no-any-return]


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_meta:
            return None
        return float(value.detach().item())
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
