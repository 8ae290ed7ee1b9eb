"""A worker: run trials of one study until the study holds ``n_trials`` finished ones.

Any number of workers (threads of nobody: separate processes, here or on other machines)
may work on one study; each runs this loop:

1. take the claim (a lock on the study's file), fail stale trials (Optuna's heartbeat);
2. count finished trials (COMPLETE or PRUNED) and running ones: stop at ``n_trials``
   finished, or at ``max_failures`` failed; if the running ones could finish the study, wait
   for them (a dead worker's trial turns stale and is retried);
3. else ``study.optimize(n_trials=1)``: Optuna asks the sampler for a trial (it is RUNNING
   from then on, so other workers count it), the claim is released, the trial runs.

Unlike ``optuna.study.MaxTrialsCallback``, which stops a worker only after its own trial
ends, so that every other worker's trial then in flight still runs, the count includes
trials in flight: the study ends with ``n_trials`` finished trials, not up to
``n_trials + workers - 1``.

This module imports Optuna at import time: import it only after ``require_optuna()``.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from ...errors import MuprewriteError
from .errors import TuneError
from .objective import TrialConfig, TrialFailed, objective
from .storage import Claim, StorageLike, open_storage, storage_file

__all__ = ["WorkerConfig", "work", "worker_main", "make_sampler", "make_pruner", "Counts",
           "count", "SAMPLERS", "PRUNERS", "POLL_SECONDS"]

SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "halving", "none")
POLL_SECONDS = 0.5  # how often a worker waiting on other workers' trials looks again
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

Stop = Literal["done", "failures"]


@dataclass(frozen=True)
class WorkerConfig:
    """One worker's share of the sweep (pickled to a spawned worker)."""

    trial: TrialConfig
    storage: StorageLike
    study_name: str
    n_trials: int
    sampler: str = "tpe"
    pruner: str = "hyperband"
    seed: int = 0
    index: int = 0
    max_failures: int | None = None  # default: n_trials
    threads: int | None = None  # torch threads in a spawned worker


@dataclass(frozen=True)
class Counts:
    finished: int
    running: int
    failed: int


def count(study: optuna.Study) -> Counts:
    trials = study.get_trials(deepcopy=False)
    return Counts(sum(t.state in FINISHED for t in trials),
                  sum(t.state == TrialState.RUNNING for t in trials),
                  sum(t.state == TrialState.FAIL for t in trials))


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's TPE ("tpe") or random ("random") sampler, seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise TuneError(f"unknown sampler {name!r}", fix=f"one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, steps: int) -> optuna.pruners.BasePruner:
    """Optuna's Hyperband ("hyperband"), successive halving ("halving") or no pruner
    ("none"), with rungs from steps // 27 (Hyperband) or steps // 9 (halving) up to
    ``steps``, a third of the trials going on at each rung."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, steps // 27),
                                              max_resource=steps, reduction_factor=3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, steps // 9),
                                                      reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"unknown pruner {name!r}", fix=f"one of {', '.join(PRUNERS)}")


def work(config: WorkerConfig, on_trial: Callable[[FrozenTrial], None] | None = None) -> Stop:
    """Run trials until the study is done ("done") or too many trials failed ("failures")."""
    storage = open_storage(config.storage)
    n_existing = len(optuna.load_study(study_name=config.study_name, storage=storage).trials)
    seed = (config.seed * 1_000_003 + config.index * 7_919 + n_existing) % 2 ** 32
    study = optuna.load_study(study_name=config.study_name, storage=storage,
                              sampler=make_sampler(config.sampler, seed),
                              pruner=make_pruner(config.pruner, config.trial.steps))
    claim = Claim(storage_file(config.storage))
    run = _Releasing(partial(objective, config=config.trial), claim)
    callbacks = [lambda _study, trial: on_trial(trial)] if on_trial else []
    max_failures = config.max_failures if config.max_failures is not None else config.n_trials
    while True:
        claim.acquire()
        try:
            _fail_stale(study)
            counts = count(study)
            if counts.finished >= config.n_trials:
                return "done"
            if counts.failed >= max_failures:
                return "failures"
            started = counts.finished + counts.running < config.n_trials
            if started:
                try:
                    study.optimize(run, n_trials=1, catch=(TrialFailed,), callbacks=callbacks)
                except optuna.exceptions.UpdateFinishedTrialError:
                    # another worker took this trial for dead (no heartbeat past the grace
                    # period) and failed it; its result is lost, the study goes on
                    pass
        finally:
            claim.release()
        if not started:
            time.sleep(POLL_SECONDS)


class _Releasing:
    """The objective, releasing the claim as the trial starts (it is RUNNING by then)."""

    def __init__(self, fn: Callable[[Any], float], claim: Claim) -> None:
        self.fn = fn
        self.claim = claim

    def __call__(self, trial: Any) -> float:
        self.claim.release()
        return self.fn(trial)


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _Terminated(KeyboardInterrupt):
    """SIGTERM in a worker: stop like Ctrl-C, so the running trial is marked FAIL."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def worker_main(config: WorkerConfig, errors: Any) -> None:
    """Entry point of a spawned worker process: run :func:`work`; on an error, put
    ``(index, message)`` on ``errors`` and exit with status 1."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    optuna.logging.set_verbosity(logging.WARNING)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    try:
        work(config)
    except KeyboardInterrupt:
        sys.exit(130)
    except MuprewriteError as exc:
        errors.put((config.index, exc.one_line()))
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        errors.put((config.index, f"{type(exc).__name__}: {exc}"))
        sys.exit(1)
