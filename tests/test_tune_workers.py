"""Sweeps by several worker processes on one journal study, and a worker killed mid-trial."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

import pytest
import tune_helpers as h

from muprewrite.training.tuning import tune

optuna = pytest.importorskip("optuna")

POINTS = [{"lr": lr, "output_multiplier": m} for lr, m in
          ((0.003, 1.0), (0.01, 2.0), (0.03, 0.5), (0.05, 1.0), (0.02, 4.0), (0.008, 0.25))]
SETTINGS = dict(inputs=h.X, lr=(1e-3, 1e-1), space=["output_multiplier"], steps=4,
                pruner="none", sampler="random", progress=False)


def _study(journal, name="muprewrite-tune"):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name,
                             storage=JournalStorage(JournalFileBackend(str(journal))))


@pytest.mark.slow
def test_two_workers_finish_n_trials_with_the_one_worker_best(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BARRIER_DIR", str(tmp_path / "barrier"))
    monkeypatch.setenv("BARRIER_WORKERS", "2")
    (tmp_path / "barrier").mkdir()
    # a model file loaded from tests/ by another test (muprewrite.spec forgets a project's
    # modules before it imports) may have dropped tune_helpers from sys.modules; a worker
    # gets functions pickled by module and name, so take them from the module imported now
    fresh = importlib.import_module("tune_helpers")
    two = tune(fresh.mlp, fresh.train_together, workers=2, n_trials=6, enqueue=POINTS,
               storage=str(tmp_path / "two.journal"), **SETTINGS)
    one = tune(fresh.mlp, fresh.train, workers=1, n_trials=6, enqueue=POINTS,
               storage=str(tmp_path / "one.journal"), **SETTINGS)
    for result in (one, two):
        assert [t.state.name for t in result.study.trials] == ["COMPLETE"] * 6
    pids = {t.system_attrs["muprewrite:heartbeat"]["pid"] for t in two.study.trials}
    assert len(pids) == 2 and os.getpid() not in pids
    assert two.study.best_params == one.study.best_params
    assert two.best_value == pytest.approx(one.best_value, rel=1e-5)
    assert two.card.hparams == one.card.hparams and two.card.lr == one.card.lr


@pytest.mark.slow
def test_a_killed_worker_loses_no_finished_trial(tmp_path) -> None:
    journal, mark = tmp_path / "tune.journal", tmp_path / "inside-trial-2"
    script = tmp_path / "sweep.py"
    script.write_text(
        f"import sys\nsys.path[:0] = {sys.path!r}\n"
        "import tune_helpers as h\nfrom muprewrite.training.tuning import tune\n"
        "if __name__ == '__main__':\n"
        "    tune(h.mlp, h.train_slow_marked, n_trials=5, storage=sys.argv[1],\n"
        f"         **{ {k: v for k, v in SETTINGS.items() if k != 'inputs'}!r},\n"
        "         inputs=h.X)\n")
    env = {**os.environ, "MARK_TRIAL": "2", "MARK_FILE": str(mark)}
    proc = subprocess.Popen([sys.executable, str(script), str(journal)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():
            assert proc.poll() is None, "the sweep ended before trial 2"
            assert time.monotonic() < deadline, "trial 2 never started"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _study(journal).trials
    assert [t.state.name for t in before] == ["COMPLETE", "COMPLETE", "RUNNING"]

    result = tune(h.mlp, h.train, n_trials=5, storage=str(journal), **SETTINGS)
    trials = result.study.trials
    assert [t.value for t in trials[:2]] == [t.value for t in before[:2]]
    assert trials[2].state.name == "FAIL"
    assert "ended mid-trial" in trials[2].user_attrs["error"]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 2]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == trials[2].params
    assert retry[0].user_attrs["seed"] == trials[2].user_attrs["seed"]
    assert "error" not in retry[0].user_attrs  # the dead attempt's error stays with it
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
    assert len(trials) == 6
