"""``muprewrite.tune``: tune the base hyperparameters once, on the proxy, with Optuna.

Stages: check the arguments; build the proxy once, rewrite it (this checks the rule and the
inputs before any trial) and count its FLOPs per step; count the target's on the meta
device; open or create the study (a journal file by default) and check that a resumed study
was made with the same rule, budget and space; run the workers until ``n_trials`` trials
finished; read the best trial into a card, with the ledger.

>>> import torch, muprewrite
>>> from muprewrite.training.tuning import tune
>>> def mlp():
...     return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
>>> x = torch.randn(32, 4); y = x.sum(1, keepdim=True)
>>> def train(run):
...     for step in range(1, run.steps + 1):
...         loss = (run.model(x) - y).square().mean()
...         run.optimizer.zero_grad(); loss.backward(); run.optimizer.step()
...         run.report(step, loss.item())
...     return loss.item()
>>> result = tune(mlp, train, inputs=x, lr=(1e-3, 1e-1), space=["output_multiplier"],
...               n_trials=3, steps=5, storage=optuna_memory(), progress=False)
>>> len(result.study.trials), result.card.rule
(3, 'mup')
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...errors import UsageError
from ...rules import Rule, load_rule
from .deps import require_optuna
from .errors import TuneError
from .ledger import Ledger, flops_per_step, to_device, trial_costs
from .objective import TrialConfig, describe
from .result import TuneResult, best_card
from .space import RangeLike, Space, SpaceLike
from .trial import TrainFn, check_time_limit, seed_everything

if TYPE_CHECKING:
    from .worker import WorkerConfig

__all__ = ["tune", "optuna_memory", "CONFIG_ATTR", "DEFAULT_STUDY"]

CONFIG_ATTR = "muprewrite"  # study user attribute: what the study was made with
DEFAULT_STUDY = "muprewrite-tune"
TRIAL_SEEDS = ("per-trial", "same")


def tune(proxy: Callable[[], nn.Module], train: TrainFn, *, steps: int,
         lr: RangeLike = None, inputs: Any = None, base: Callable[[], nn.Module] | None = None,
         rule: str | Rule = "mup", space: SpaceLike = None, n_trials: int = 20,
         target: Callable[[], nn.Module] | None = None, target_inputs: Any = None,
         target_steps: int | None = None, sampler: str = "tpe", pruner: str = "hyperband",
         seed: int = 0, workers: int = 1, storage: Any = None, study_name: str = DEFAULT_STUDY,
         weight_decay: float = 0.0, timeout: float | None = None, device: str = "cpu",
         enqueue: Sequence[Mapping[str, float]] = (), max_failures: int | None = None,
         trial_seeds: str = "per-trial", progress: bool = True) -> TuneResult:
    """Tune lr and the base multipliers on the proxy; return the best as a card.

    ``proxy()`` builds the proxy (and ``base()`` its base, default the proxy itself);
    ``train(run)`` trains ``run.model`` for ``run.steps`` steps with ``run.optimizer``,
    calls ``run.report(step, loss)`` on the way and returns the final validation loss (see
    :class:`~muprewrite.training.tuning.TrialRun`). ``inputs``: example inputs (default
    ``proxy().example_inputs()``). ``lr``: the learning rate's range (low, high), or one
    number to hold it fixed; ``space``: the rest (see :class:`~muprewrite.training.tuning.Space`).
    ``n_trials`` finished trials (complete or pruned) are run in all, by ``workers``
    processes; ``timeout`` seconds per trial. ``target()`` (built on the meta device),
    ``target_inputs`` and ``target_steps`` price the sweep as a share of one target run.
    ``sampler``: "tpe" or "random"; ``pruner``: "hyperband", "halving" or "none".
    ``storage``: a journal file path (default ``{study_name}.journal``), a database URL, or an
    Optuna storage object (one worker); running again on it resumes the study, and
    ``optuna-dashboard`` opens it. ``enqueue``: settings tried first (a new study only).
    The sweep stops early after ``max_failures`` failed trials (default ``n_trials``).
    ``trial_seeds``: "per-trial" (trial N seeds torch with ``seed + N``) or "same" (every
    trial with ``seed``: the same init draw and, if ``train`` seeds its data with
    ``run.seed``, the same batches, so that trials differ only in their hyperparameters —
    common random numbers, less noise between trials for the sampler and the pruner).

    With ``workers`` > 1 the trials run in spawned processes: ``proxy``, ``base`` and
    ``train`` must be importable (defined at the top level of a module), and a script that
    calls ``tune`` must do so under ``if __name__ == "__main__":``.
    """
    optuna = require_optuna()
    from .worker import WorkerConfig

    _check(steps=steps, n_trials=n_trials, workers=workers, sampler=sampler, pruner=pruner,
           timeout=timeout, target=target, target_steps=target_steps)
    if trial_seeds not in TRIAL_SEEDS:
        raise UsageError(f"trial_seeds={trial_seeds!r}", fix=f"one of {', '.join(TRIAL_SEEDS)}")
    rule_obj = rule if isinstance(rule, Rule) else load_rule(rule)
    inputs, report, proxy_flops = _probe(proxy, base, inputs, rule, seed)
    space = Space.of(space, lr) if space is not None else Space.default(
        lr, attention=bool(report.attention), depth=rule_obj.has_depth)
    target_flops = _target_flops(target, target_inputs if target_inputs is not None else inputs)
    unknown = sorted({k for point in enqueue for k in point} - set(space.names))
    if unknown:
        raise UsageError(f"enqueue= names {', '.join(unknown)}, which the space does not tune",
                         fix=f"use only {', '.join(space.names)}")
    config = TrialConfig(proxy=proxy, train=train, inputs=inputs, space=space, steps=steps,
                         rule=rule, base=base, seed=seed, weight_decay=weight_decay,
                         timeout=timeout, device=device, same_seed=trial_seeds == "same")
    worker = WorkerConfig(trial=config, n_trials=n_trials, sampler=sampler, pruner=pruner,
                          storage=storage if storage is not None else f"{study_name}.journal",
                          study_name=study_name, seed=seed, max_failures=max_failures)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Progress reports the trials
    try:
        study, stopped = _run(optuna, worker, rule_obj.id, workers, enqueue, progress)
    finally:
        optuna.logging.set_verbosity(level)
    ledger = Ledger(proxy_flops, trial_costs(study.get_trials(deepcopy=False)),
                    target_flops, target_steps)
    card = best_card(study, space=space, weight_decay=weight_decay, rule=rule_obj.id,
                     base=describe(base or proxy), proxy=_proxy_table(worker, workers),
                     ledger=ledger)
    result = TuneResult(card, study, ledger, stopped)
    if progress:
        print(result.summary(), file=sys.stderr)
    return result


def _run(optuna: Any, worker: WorkerConfig, rule_id: str, workers: int,
         enqueue: Sequence[Mapping[str, float]], progress: bool) -> tuple[Any, str]:
    """Open (or resume) the study, run the workers on it; the study re-read, and why they
    stopped."""
    from .launch import run_workers
    from .progress import Progress
    from .storage import open_storage

    config = worker.trial
    made_with = {"rule": rule_id, "steps": config.steps, "space": config.space.to_dict(),
                 "proxy": describe(config.proxy), "base": describe(config.base or config.proxy),
                 "weight_decay": config.weight_decay,
                 **({"trial_seeds": "same"} if config.same_seed else {})}
    storage = open_storage(worker.storage)
    study = optuna.create_study(study_name=worker.study_name, storage=storage,
                                direction="minimize", load_if_exists=True)
    _check_resume(study, made_with, worker.storage)
    if not study.trials:
        for point in enqueue:
            study.enqueue_trial(dict(point), skip_if_exists=True)
    bar = Progress(worker.n_trials, enabled=progress)
    bar.start(study)
    try:
        stopped = run_workers(worker, workers, study, bar)
    finally:
        bar.close()
    return optuna.load_study(study_name=worker.study_name, storage=storage), stopped


def _proxy_table(worker: WorkerConfig, workers: int) -> dict[str, Any]:
    from .storage import describe as describe_storage

    return {"model": describe(worker.trial.proxy), "steps": worker.trial.steps,
            "n_trials": worker.n_trials, "sampler": worker.sampler, "pruner": worker.pruner,
            "seed": worker.seed, "workers": workers, "study_name": worker.study_name,
            "storage": describe_storage(worker.storage)}


def optuna_memory() -> Any:
    """An in-memory Optuna storage (one process, nothing written): for examples and tests."""
    return require_optuna().storages.InMemoryStorage()


def _check(*, steps: int, n_trials: int, workers: int, sampler: str, pruner: str,
           timeout: float | None, target: Any, target_steps: int | None) -> None:
    from .worker import PRUNERS, SAMPLERS

    for name, value in (("steps", steps), ("n_trials", n_trials), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be an int >= 1, got {value!r}", fix=f"{name}=4")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}", fix=f"one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UsageError(f"unknown pruner {pruner!r}", fix=f"one of {', '.join(PRUNERS)}")
    if workers == 1:
        check_time_limit(timeout)
    elif timeout is not None and (not isinstance(timeout, int | float) or not
                                  math.isfinite(timeout) or timeout <= 0):
        raise UsageError(f"timeout must be a number of seconds > 0, got {timeout!r}",
                         fix="timeout=600")
    if target is not None and (isinstance(target_steps, bool) or not isinstance(target_steps, int)
                               or target_steps < 1):
        raise UsageError("a target needs its number of training steps, for the ledger",
                         fix="target_steps=100_000")


def _probe(proxy: Callable[[], nn.Module], base: Callable[[], nn.Module] | None, inputs: Any,
           rule: str | Rule, seed: int) -> tuple[Any, Any, int]:
    """Build and rewrite the proxy once: the inputs, the Report and the FLOPs per step."""
    from ...rewrite.apply import apply
    from ...rewrite.attached import plan_of
    from .objective import built

    seed_everything(seed)
    model = built(proxy, "the proxy")
    if inputs is None:
        example = getattr(model, "example_inputs", None)
        if not callable(example):
            raise UsageError(f"{type(model).__name__} has no example_inputs() method",
                             fix="pass inputs=(example batch)")
        inputs = example()
    flops = flops_per_step(model, inputs)
    model = apply(built(proxy, "the proxy"), inputs, base=built(base or proxy, "the base"),
                  rule=rule)
    plan = plan_of(model)
    assert plan is not None
    return inputs, plan.report, flops


def _target_flops(target: Callable[[], nn.Module] | None, inputs: Any) -> int | None:
    if target is None:
        return None
    from .objective import built

    with torch.device("meta"):
        model = built(target, "the target")
    return flops_per_step(model, to_device(inputs, "meta"))


def _check_resume(study: Any, made_with: dict[str, Any], storage: Any) -> None:
    """Record what a new study is made with; refuse to resume one made otherwise."""
    old = study.user_attrs.get(CONFIG_ATTR)
    if old is None:
        study.set_user_attr(CONFIG_ATTR, made_with)
        return
    changed = [k for k in made_with if old.get(k) != made_with[k]]
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} then, {made_with[k]!r} now" for k in changed)
        raise TuneError(f"study {study.study_name!r} in {storage} was made with other "
                        f"settings ({diffs}); resuming it would mix trials of two sweeps",
                        fix="pass the same settings to resume it, or another study name "
                            "(--study-name) or storage for a new sweep")
