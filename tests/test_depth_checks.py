"""Verification across depth: coordinate checks and LR sweeps with depth as the axis.

The fast version of benchmarks/coord_check_depth.py (depths 2, 4, 8 at width 64, one seed):
under `completep` (the depth-2 model as base) no module's RMS grows with depth; under `mup`,
which refuses a base of another depth so each depth is its own base, the residual stream
after the last block grows with depth. Plus the pairing of blocks across depth, the sweep's
depth axis and the CLI's --depths.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import muprewrite
from benchmarks.coord_check_depth import dit_at, gpt_at, inputs
from muprewrite.cli.main import cli
from muprewrite.verify import Sweep, coord_check_depth, lr_sweep_depth
from muprewrite.verify.coordcheck import paired_names
from muprewrite.verify.plots import plot_coord_checks, plot_sweeps

ROOT = Path(__file__).resolve().parents[1]
GPT = str(ROOT / "examples" / "gpt.py")
DEPTHS = [2, 4, 8]


class Net(nn.Module):
    """Pre-LN residual MLP: blocks x + fc2(gelu(fc1(ln(x))))."""

    def __init__(self, depth: int, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width),
                                                  nn.GELU(), nn.Linear(width, width))
                                    for _ in range(depth))
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def test_blocks_are_paired_by_relative_depth() -> None:
    names = paired_names(Net(8), Net(2))
    assert names["blocks.3.1"] == "blocks.0.1" and names["blocks.7"] == "blocks.1"
    assert "blocks.2" not in names and "blocks.6.1" not in names  # between the paired ones
    assert names["embed"] == "embed" and names[""] == "" and names["head"] == "head"
    assert set(paired_names(Net(6), Net(3)).values()) == set(paired_names(Net(3), Net(3)))


@pytest.mark.slow
def test_gpt_flat_under_completep_residual_stream_grows_under_mup() -> None:
    completep, mup = (coord_check_depth(gpt_at(64), DEPTHS, inputs=inputs, rule=rule,
                                        lr=1e-3, steps=10, seeds=1)
                      for rule in ("completep", "mup"))
    assert completep.axis == "depth" and completep.sizes == (2, 4, 8)
    assert not completep.own_base and mup.own_base
    assert completep.flagged() == [], completep.verdict()
    last = "transformer.h.1"  # the final block (paired with block 1 of the base)
    assert mup.growth(last) > 1.5 and last in dict(mup.flagged()), mup.verdict()
    assert completep.growth(last) < 1.1
    assert "per doubling of depth" in mup.verdict() and "own base" in mup.verdict()


@pytest.mark.slow
def test_dit_flat_under_completep_residual_stream_grows_under_mup(tmp_path: Path) -> None:
    """The DiT's branches start at zero (adaLN-Zero gates), so depth shows only once the
    gates have trained: 20 steps. Its growth under mup is smaller than the GPT's."""
    completep, mup = (coord_check_depth(dit_at(64), DEPTHS, inputs=inputs, rule=rule,
                                        lr=1e-3, steps=20, seeds=1)
                      for rule in ("completep", "mup"))
    assert completep.flagged() == [], completep.verdict()
    final = mup.at("blocks.1")
    assert all(a < b for a, b in zip(final, final[1:])) and mup.growth("blocks.1") > 1.15, final
    assert completep.growth("blocks.1") < 1.1
    png = plot_coord_checks([completep, mup], tmp_path / "d.png")
    assert png.read_bytes()[:4] == b"\x89PNG"  # 21 steps drawn as 6 panels
    data = json.loads(mup.save_json(tmp_path / "d.json").read_text())
    assert data["depths"] == DEPTHS and data["axis"] == "depth" and "widths" not in data


def test_lr_sweep_across_depth(tmp_path: Path) -> None:
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)

    def train(model: nn.Module, lr: float) -> float:
        opt = torch.optim.Adam(muprewrite.param_groups(model, lr=lr))
        for _ in range(5):
            loss = (model(x) - y).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item()

    sweeps = [lr_sweep_depth(Net, [2, 4], [1e-3, 1e-2], train=train, inputs=(x,), rule=rule,
                             seeds=1) for rule in ("completep", "mup")]
    assert [s.own_base for s in sweeps] == [False, True] and sweeps[0].axis == "depth"
    assert all(math.isfinite(v) for s in sweeps for row in s.loss for v in row)
    assert sweeps[0].loss[0] == sweeps[1].loss[0]  # depth 2 is the base of both
    assert "best lr by depth" in sweeps[0].summary()
    path = sweeps[1].save_json(tmp_path / "s.json")
    assert json.loads(path.read_text())["depths"] == [2, 4]
    assert Sweep.load_json(path) == sweeps[1]
    assert plot_sweeps(sweeps, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_coord_check_cli_across_depth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["coord-check", GPT, "--model", "GPT(n_layer={depth}, n_embd={width}, n_head=2)",
            "--widths", "32", "--depths", "2,4", "--rule", "completep", "--rule", "mup",
            "--seeds", "1", "--steps", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "per doubling of depth" in result.output and "(each depth its own base)" in result.output
    data = json.loads((tmp_path / "coord_check.json").read_text())
    assert data["completep"]["depths"] == [2, 4] and data["mup"]["own_base"]
    for bad, why in ((["--depths", "2,4"], "one width"),  # the default widths vary too
                     (["--widths", "32", "--depths", "4"], "at least two depths")):
        out = CliRunner().invoke(cli, args[:4] + bad + ["-o", "x.png"])
        assert out.exit_code != 0 and why in out.output, out.output
    out = CliRunner().invoke(cli, ["coord-check", GPT, "--model", "GPT(n_layer={depth})",
                                   "-o", "y.png"])
    assert out.exit_code != 0 and "--depths" in out.output


def test_transfer_example_across_depth_runs_end_to_end() -> None:
    """examples/transfer_dit.py --depths at toy settings: real digits, finite losses."""
    pytest.importorskip("sklearn")
    from examples.transfer_dit import INPUTS, AtWidth, Trainer

    sweep = lr_sweep_depth(AtWidth(32), [1, 2], [1e-3], train=Trainer(steps=3, batch=16),
                           inputs=INPUTS, rule="completep", seeds=1)
    assert sweep.sizes == (1, 2) and all(0 < row[0] < 10 for row in sweep.loss)
