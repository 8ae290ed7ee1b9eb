"""The transfer check at the target width, and the sweep's figure."""

from __future__ import annotations

import json

import pytest
import torch
import tune_helpers as h

import muprewrite
from muprewrite.training.tuning import tune, verify_transfer
from muprewrite.training.tuning.plots import plot_tuning
from muprewrite.training.tuning.study import optuna_memory

pytest.importorskip("optuna")


def _sweep(width: int = h.WIDTH):
    return tune(lambda: h.mlp(width), h.train, inputs=h.X, lr=(1e-3, 1e-1),
                space=["output_multiplier"], n_trials=4, steps=4, sampler="random",
                pruner="none", storage=optuna_memory(), progress=False)


@pytest.mark.slow
def test_transfer_check_trains_the_card_and_its_neighbours_at_the_target() -> None:
    card = _sweep().card
    check = verify_transfer(card, h.wide_mlp, h.train, base=h.mlp, inputs=h.X, steps=4,
                            target_steps=100, progress=False)
    labels = [p.label for p in check.points]
    assert labels == ["transferred", "lr x0.5", "lr x2", "output_multiplier x0.5",
                      "output_multiplier x2"]
    assert check.points[2].point.lr == 2 * card.lr
    assert check.points[4].point.hparams.output_multiplier == 2 * card.hparams.output_multiplier
    values = [p.value for p in check.points]
    assert check.regret == values[0] - min(values) >= 0
    assert check.cost == pytest.approx(5 * 4 / 100)
    # the transferred point is the card at the target width, trained from the same seed
    torch.manual_seed(0)
    model, base = h.wide_mlp(), h.mlp()
    model = muprewrite.apply(model, h.X, base=base, hparams=card.hparams)
    opt = muprewrite.optimizer(model, lr=card.lr)
    for _ in range(4):
        loss = (model(h.X) - h.Y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert values[0] == pytest.approx(float((model(h.X) - h.Y).square().mean()), rel=1e-6)
    assert check.summary().startswith("transfer check at the target width: regret")


def test_plot_has_a_series_per_width_and_marks_the_best(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    narrow, wide = _sweep(), _sweep(32)
    png, data_path = plot_tuning([("width 16", narrow), ("width 32", wide)],
                                 tmp_path / "fig.png", mark={"lr": narrow.card.lr},
                                 study_name="s")
    assert png.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(data_path.read_text())
    assert data["hyperparameters"] == ["lr", "output_multiplier"]
    assert data["mark"] == {"lr": narrow.card.lr} and data["study_name"] == "s"
    for series, result in zip(data["series"], (narrow, wide), strict=True):
        assert len(series["trials"]) == 4
        assert series["best"]["value"] == result.best_value
        assert series["best"]["params"] == result.study.best_params
