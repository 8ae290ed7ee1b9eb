"""Coordinate checks and LR sweeps: slopes, verdicts, JSON, figures, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import muprewrite
from muprewrite.cli.main import cli
from muprewrite.errors import ModelSpecError
from muprewrite.spec import parse_spec
from muprewrite.verify import coord_check, lr_sweep
from muprewrite.verify.coordcheck import slope
from muprewrite.verify.plots import plot_coord_checks, plot_sweeps

ROOT = Path(__file__).resolve().parents[1]
DIT = str(ROOT / "examples" / "dit.py")


def test_slope_is_the_log_log_fit() -> None:
    widths = [64, 128, 256, 512]
    assert slope(widths, [3.0] * 4) == pytest.approx(0.0)
    assert slope(widths, [w ** 0.5 for w in widths]) == pytest.approx(0.5)
    assert slope(widths, [1 / w for w in widths]) == pytest.approx(-1.0)
    assert math.isnan(slope(widths, [1.0, 0.0, 1.0, 1.0]))


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 4))


def test_mlp_output_flagged_under_sp_not_under_mup(tmp_path: Path) -> None:
    x = torch.randn(32, 8)
    checks = [coord_check(_mlp, [64, 256, 1024], inputs=lambda m: (x,), rule=rule, lr=1e-2,
                          seeds=2) for rule in ("mup", "sp")]
    mup, sp = checks
    assert mup.flagged() == [] and mup.steps == 3 and len(mup.at("4")) == 3
    assert "" in dict(sp.flagged()) and sp.slope("") > 0.25
    assert "0 of" in mup.verdict() and "FLAGGED" in sp.verdict()
    data = json.loads(mup.save_json(tmp_path / "c.json").read_text())
    assert data["slopes"]["4"] == pytest.approx(mup.slope("4")) and data["widths"] == [64, 256, 1024]
    png = plot_coord_checks(checks, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_sweep_finds_the_optimum_and_counts_grid_steps(tmp_path: Path) -> None:
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)

    def train(model: nn.Module, lr: float) -> float:
        opt = torch.optim.Adam(muprewrite.param_groups(model, lr=lr))
        for _ in range(15):
            loss = (model(x) - y).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item() if lr < 5 else math.nan  # the largest lr "diverges"

    def build(w: int) -> nn.Module:
        return nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Linear(w, 1))

    sweep = lr_sweep(build, [16, 64], [1e-3, 1e-2, 1e-1, 10.0], train=train, inputs=(x,), seeds=1)
    assert math.isinf(sweep.loss[0][3]) and sweep.best_index(0) != 3
    for i in range(2):
        assert sweep.loss[i][sweep.best_index(i)] == min(sweep.loss[i])
    assert sweep.drift() == abs(sweep.best_index(1) - sweep.best_index(0))
    assert json.loads(sweep.save_json(tmp_path / "s.json").read_text())["loss"][0][3] is None
    assert plot_sweeps([sweep, sweep], tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_spec_arithmetic_is_numbers_only() -> None:
    assert dict(parse_spec("DiT(hidden_size=256, num_heads=256 // 64, r=2 ** 3)", "--model")
                .kwargs) == {"hidden_size": 256, "num_heads": 4, "r": 8}
    for bad, why in (("DiT(n=x * 2)", "not a literal"), ("DiT(n='a' * 3)", "numbers only"),
                     ("DiT(n=2 ** 999)", "exceed 2\\*\\*63")):
        with pytest.raises(ModelSpecError, match=why):
            parse_spec(bad, "--model")


@pytest.mark.slow
def test_coord_check_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["coord-check", DIT, "--model",
            "DiT(depth=1, hidden_size={width}, num_heads={width} // 32)", "--widths",
            "64,128,256", "--rule", "mup", "--rule", "sp", "--seeds", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "rule 'mup'" in result.output and "0 of" in result.output  # nothing flagged
    assert "rule 'sp'" in result.output and "FLAGGED" in result.output
    assert (tmp_path / "coord_check.png").is_file()
    data = json.loads((tmp_path / "coord_check.json").read_text())
    assert set(data) == {"mup", "sp"} and data["sp"]["slopes"][""] > 0.25
    again = CliRunner().invoke(cli, args)  # never overwrites without --force
    assert again.exit_code != 0 and "--force" in again.output
    bad = CliRunner().invoke(cli, ["coord-check", DIT, "--model", "DiT(hidden_size=64)",
                                   "-o", "x.png"])
    assert bad.exit_code != 0 and "{width}" in bad.output


def test_transfer_example_runs_end_to_end() -> None:
    """examples/transfer_dit.py at toy settings: real digits, real diffusion loss, finite."""
    pytest.importorskip("sklearn")
    from examples.transfer_dit import Trainer, build

    inputs = (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    sweep = lr_sweep(build, [32, 64], [1e-3, 1e-2], train=Trainer(steps=3, batch=16), inputs=inputs,
                     seeds=1, metric="held-out diffusion loss")
    assert all(math.isfinite(v) and 0 < v < 10 for row in sweep.loss for v in row)
