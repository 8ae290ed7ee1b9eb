"""Run a sweep's workers: in this process (one worker) or as spawned processes (several).

Spawned workers get their :class:`~muprewrite.training.tuning.worker.WorkerConfig` by pickling, so
the proxy builder, the base builder and the train function must be importable by module
and name: functions defined at the top level of a module (or ``file.py:function``
references on the command line, which pickle as the reference). A lambda, a function
defined inside another function or one typed into an interactive session is refused before
anything starts, with the fix. Each worker gets ``cpu_count // workers`` torch threads.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import time
from dataclasses import replace

import optuna

from .errors import TuneError
from .objective import describe
from .progress import Progress
from .worker import POLL_SECONDS, Stop, WorkerConfig, work, worker_main

__all__ = ["run_workers", "check_picklable"]


def run_workers(config: WorkerConfig, workers: int, study: optuna.Study,
                progress: Progress) -> Stop:
    """Run ``workers`` workers on ``study`` until it is done; the first worker error is
    raised as TuneError (the other workers are stopped)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        if workers == 1:
            return work(config, on_trial=lambda trial: progress.poll(study))
        check_picklable(config, workers)
        return _spawned(config, workers, study, progress)
    finally:
        optuna.logging.set_verbosity(level)


def _spawned(config: WorkerConfig, workers: int, study: optuna.Study,
             progress: Progress) -> Stop:
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.SimpleQueue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=worker_main, name=f"muprewrite-tune-{i}",
                         args=(replace(config, index=i, threads=threads), errors))
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            progress.poll(study)
            if not errors.empty():
                index, message = errors.get()
                raise TuneError(f"worker {index} stopped: {message}",
                                fix="fix the error and run again: the study resumes")
            time.sleep(POLL_SECONDS)
        progress.poll(study)
        if not errors.empty():
            index, message = errors.get()
            raise TuneError(f"worker {index} stopped: {message}",
                            fix="fix the error and run again: the study resumes")
        codes = [p.exitcode for p in procs if p.exitcode not in (0, None)]
        if codes:
            raise TuneError(f"{len(codes)} worker(s) ended with exit status "
                            f"{', '.join(map(str, codes))}",
                            fix="run again: the study resumes (a killed trial is retried)")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # our own child: SIGTERM, its running trial is marked FAIL
            p.join()
    return "done" if _finished(study) >= config.n_trials else "failures"


def _finished(study: optuna.Study) -> int:
    return sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))


def check_picklable(config: WorkerConfig, workers: int) -> None:
    """TuneError naming the fix unless a spawned worker can import every callable."""
    named = [("the proxy builder", config.trial.proxy), ("the train function", config.trial.train)]
    if config.trial.base is not None:
        named.append(("the base builder", config.trial.base))
    for what, fn in named:
        module = getattr(fn, "__module__", None)
        main = sys.modules.get("__main__")
        if module == "__main__" and not getattr(main, "__file__", None):
            raise TuneError(f"{what} {describe(fn)} is defined in an interactive session; "
                            f"workers={workers} runs trials in new processes, which can only "
                            "import functions from files", fix="define it at the top level of "
                                                              "a .py file and import it, or "
                                                              "pass workers=1")
        try:
            pickle.dumps(fn)
        except Exception as exc:  # noqa: BLE001 - pickling raises several types
            raise TuneError(f"{what} {describe(fn)} cannot be sent to a worker process "
                            f"({type(exc).__name__}: {str(exc)[:120]}); workers={workers} runs "
                            "trials in new processes, which import each function by its "
                            "module and name, and a lambda or a function defined inside "
                            "another function has none",
                            fix="define it with def at the top level of a module (on the "
                                "command line: --train file.py:function), or pass "
                                "workers=1") from None
    try:
        pickle.dumps(config)
    except Exception as exc:  # noqa: BLE001
        raise TuneError(f"the sweep's settings cannot be sent to a worker process "
                        f"({type(exc).__name__}: {str(exc)[:160]})",
                        fix="pass example inputs as tensors, a storage as a path or URL, "
                            "or workers=1") from None
