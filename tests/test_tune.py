"""The proxy sweep (muprewrite.training.tuning.tune): card, failures, pruning, resuming, space."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import torch
import tune_helpers as h

import muprewrite
from muprewrite.rules.hparams import load_card
from muprewrite.training.tuning import Space, TuneError, tune
from muprewrite.training.tuning.study import optuna_memory

optuna = pytest.importorskip("optuna")

GOOD = {"lr": 0.01, "output_multiplier": 1.0}


def _tune(**kwargs):
    args = dict(inputs=h.X, lr=(1e-3, 1e-1), space=["output_multiplier", "hidden_init"],
                n_trials=4, steps=4, storage=optuna_memory(), progress=False, pruner="none")
    args.update(kwargs)
    return tune(h.mlp, kwargs.pop("train", h.train), **{k: v for k, v in args.items()
                                                         if k != "train"})


def test_card_holds_the_best_trial_and_reproduces_its_value() -> None:
    result = _tune(sampler="random", seed=3)
    study, card = result.study, result.card
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    assert result.best_value == min(t.value for t in complete) == study.best_value
    best = study.best_trial
    assert card.lr == best.params["lr"]
    assert card.hparams.output_multiplier == best.params["output_multiplier"]
    assert card.hparams.hidden_init == best.params["hidden_init"]
    assert card.hparams.input_multiplier == 1.0  # not in the space
    assert card.extra["proxy"]["best_value"] == study.best_value
    assert card.extra["proxy"]["best_trial"] == best.number
    assert card.rule == "mup" and card.base == "tune_helpers.mlp()"
    # the card's setting, trained again from the trial's seed, gives the trial's value
    torch.manual_seed(best.user_attrs["seed"])
    model, base = h.mlp(), h.mlp()
    model = muprewrite.apply(model, h.X, base=base, hparams=card.hparams)
    opt = muprewrite.optimizer(model, lr=card.lr)
    for _ in range(4):
        loss = (model(h.X) - h.Y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        again = float((model(h.X) - h.Y).square().mean())
    assert again == pytest.approx(study.best_value, rel=1e-6)


def test_card_round_trips_and_carries_to_a_wider_model(tmp_path) -> None:
    result = _tune(sampler="random", target=h.wide_mlp, target_steps=100)
    path = tmp_path / "card.toml"
    path.write_text(result.card.to_toml())
    card = load_card(path)
    for field in ("hparams", "lr", "weight_decay", "rule", "base"):
        assert getattr(card, field) == getattr(result.card, field), field
    assert dict(card.extra) == dict(result.card.extra)
    assert card.extra["ledger"]["cost"] == result.ledger.cost
    wide = muprewrite.apply(h.mlp(64), h.X, base=h.mlp(), hparams=path)
    readout = muprewrite.plan_of(wide)["4.weight"].multiplier
    assert readout == pytest.approx(card.hparams.output_multiplier * 16 / 64)


def _misbehaving(run):
    if run.number == 1:
        raise ValueError("boom in trial 1")
    if run.number == 2:
        return float("nan")
    if run.number == 3:
        return "not a loss"
    if run.number == 4:
        time.sleep(30)
    if run.number == 5:
        run.report(1, float("inf"))
    return h.train(run)


def test_a_bad_trial_fails_alone_with_its_error() -> None:
    start = time.perf_counter()
    result = _tune(train=_misbehaving, n_trials=3, timeout=0.5, max_failures=10)
    assert time.perf_counter() - start < 20
    trials = result.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] + ["FAIL"] * 5 + ["COMPLETE"] * 2
    errors = {t.number: t.user_attrs["error"] for t in trials if t.state.name == "FAIL"}
    assert errors[1] == "ValueError: boom in trial 1"
    assert "ValueError: boom in trial 1" in trials[1].user_attrs["traceback"]
    assert errors[2] == "returned nan, not a finite number"
    assert errors[3].startswith("returned str 'not a loss', not a number")
    assert errors[4].startswith("timed out: ran past its time budget of 0.5 s")
    assert errors[5] == "diverged: loss inf reported at step 1"
    assert result.card.extra["proxy"]["finished"] == 3


def test_too_many_failures_stop_the_sweep_with_the_errors() -> None:
    def broken(run):
        raise RuntimeError("no data")

    with pytest.raises(TuneError, match="no trial .* completed .*RuntimeError: no data"):
        _tune(train=broken, n_trials=5, max_failures=2)


@pytest.mark.slow
def test_the_pruner_stops_a_trial_that_reports_bad_losses() -> None:
    points = [dict(GOOD, lr=lr) for lr in (0.01, 0.02, 0.03, 0.04)] + [dict(GOOD, lr=0.9)]
    states = {}
    for pruner in ("halving", "none"):
        result = _tune(train=h.train_bad_at_high_lr, n_trials=5, steps=9, pruner=pruner,
                       space=["output_multiplier"], lr=(1e-3, 1.0), enqueue=points)
        bad = result.study.trials[4]
        assert bad.params["lr"] == 0.9
        states[pruner] = (bad.state.name, bad.user_attrs["steps_run"])
        assert result.ledger.trials[4].steps == bad.user_attrs["steps_run"]
    assert states == {"halving": ("PRUNED", 1), "none": ("COMPLETE", 9)}


def test_running_again_resumes_the_study(tmp_path) -> None:
    journal = tmp_path / "tune.journal"
    first = _tune(storage=str(journal), n_trials=3, sampler="random")
    values = [t.value for t in first.study.trials]
    more = _tune(storage=str(journal), n_trials=5, sampler="random")
    assert [t.value for t in more.study.trials][:3] == values
    assert sum(t.state.name == "COMPLETE" for t in more.study.trials) == 5
    again = _tune(storage=str(journal), n_trials=5, sampler="random")
    assert len(again.study.trials) == 5
    with pytest.raises(TuneError, match="made with other settings .*steps: 4 then, 6 now"):
        _tune(storage=str(journal), n_trials=6, steps=6)


def test_the_default_space_fits_the_model_and_rule() -> None:
    assert "attention_multiplier" not in Space.default((1e-3, 1e-1), attention=False).names
    assert "branch_multiplier" in Space.default((1e-3, 1e-1), depth=True).names
    result = _tune(space=None, n_trials=1)
    assert result.card.extra["proxy"]["tuned"] == [
        "lr", "output_multiplier", "input_multiplier", "hidden_init", "lr_hidden"]
    assert result.study.trials[0].distributions["lr_hidden"].log


def test_space_forms_and_refusals() -> None:
    space = Space.of({"lr": (1e-4, 1e-2), "weight_decay": (1e-3, 1e-1),
                      "output_multiplier": 2.0}, lr=None)
    assert space.tuned == ("lr", "weight_decay")
    point = space.point({"lr": 1e-3, "weight_decay": 0.01})
    assert (point.lr, point.weight_decay, point.hparams.output_multiplier) == (1e-3, 0.01, 2.0)
    assert Space.of(["input_multiplier"], lr=(1e-3, 1e-1))["input_multiplier"].low == 2 ** -4
    with pytest.raises(muprewrite.UsageError, match="cannot tune 'dropout'"):
        Space.of(["dropout"], lr=(1e-3, 1e-1))
    with pytest.raises(muprewrite.UsageError, match="no default range"):
        Space.of(["output_multiplier"], lr=None)
    with pytest.raises(muprewrite.UsageError, match="finite numbers > 0"):
        Space.of({"hidden_init": (0.0, 1.0)}, lr=(1e-3, 1e-1))


def test_a_lambda_is_refused_for_worker_processes() -> None:
    with pytest.raises(TuneError, match="(?s)cannot be sent to a worker process.*fix: define it "
                                        "with def at the top level"):
        tune(lambda: h.mlp(), h.train, inputs=h.X, lr=(1e-3, 1e-1), n_trials=2, steps=2,
             workers=2, storage=optuna_memory(), progress=False)


def test_muprewrite_imports_without_optuna() -> None:
    code = ("import sys; sys.modules['optuna'] = None\n"
            "import muprewrite, muprewrite.training.tuning, torch\n"
            "try:\n"
            "    muprewrite.training.tuning.tune(lambda: torch.nn.Linear(2, 1), print, steps=1, lr=0.1)\n"
            "except muprewrite.MuprewriteError as exc:\n"
            "    print(exc.one_line())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "fix: pip install 'muprewrite[tune]'" in out


def test_ledger_on_a_sweep_is_the_hand_count_ratio() -> None:
    result = tune(h.linear_proxy, h.train, inputs=h.X, lr=(1e-3, 1e-1), space=[], n_trials=3,
                  steps=5, storage=optuna_memory(), progress=False, pruner="none",
                  target=h.linear_target, target_steps=1000)
    batch = h.X.shape[0]
    proxy, target = 22 * batch * h.WIDTH, 22 * batch * 2 ** 20
    assert result.ledger.proxy_flops_per_step == proxy
    assert result.ledger.target_flops_per_step == target
    assert result.ledger.cost == pytest.approx(3 * 5 * proxy / (target * 1000))
    assert not math.isnan(result.card.extra["ledger"]["cost_percent"])


def test_ctrl_c_stops_the_sweep_but_sys_exit_fails_one_trial() -> None:
    def interrupted(run):
        if run.number == 1:
            raise KeyboardInterrupt
        return h.train(run)

    storage = optuna_memory()
    with pytest.raises(KeyboardInterrupt):
        _tune(train=interrupted, storage=storage)
    study = optuna.load_study(study_name="muprewrite-tune", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]

    def exits(run):
        if run.number == 0:
            sys.exit(3)
        return h.train(run)

    result = _tune(train=exits, n_trials=2)
    assert result.study.trials[0].user_attrs["error"] == "called sys.exit(3)"
    assert [t.state.name for t in result.study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_a_database_url_is_a_storage_too(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    result = _tune(storage=url, n_trials=2)
    study = optuna.load_study(study_name="muprewrite-tune", storage=url)  # as the dashboard does
    assert [t.value for t in study.trials] == [t.value for t in result.study.trials]
    assert result.card.extra["proxy"]["storage"] == url


def test_same_trial_seeds_make_equal_settings_score_equal() -> None:
    """trial_seeds="same": every trial is seeded with the study seed, so one setting scores
    the same as trial 0 of one study and trial 1 of another (per-trial seeds: it does not)."""
    point = {"lr": 0.02, "output_multiplier": 1.5, "hidden_init": 0.7}
    other = {"lr": 0.01, "output_multiplier": 0.5, "hidden_init": 2.0}

    def value_of_point(trial_seeds: str, first: bool) -> tuple[float, int]:
        queue = [point] if first else [other, point]
        study = _tune(trial_seeds=trial_seeds, seed=5, enqueue=queue, n_trials=len(queue)).study
        trial = study.trials[len(queue) - 1]
        assert trial.params == point
        return trial.value, trial.user_attrs["seed"]

    assert value_of_point("same", True) == value_of_point("same", False)
    (v0, s0), (v1, s1) = value_of_point("per-trial", True), value_of_point("per-trial", False)
    assert (s0, s1) == (5, 6) and v0 != v1
    with pytest.raises(muprewrite.UsageError, match="trial_seeds"):
        _tune(trial_seeds="fixed")
