"""``muprewrite tune``: card and figure written, resumed by the same command, inputs kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from muprewrite.cli.main import cli
from muprewrite.rules.hparams import load_card

pytest.importorskip("optuna")

NET = """import torch
from layers import block


class Net(torch.nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.inp = torch.nn.Linear(4, width)
        self.mid = block(width)
        self.out = torch.nn.Linear(width, 1)

    def forward(self, x):
        return self.out(self.mid(torch.relu(self.inp(x))))

    def example_inputs(self):
        return (torch.randn(32, 4),)
"""
LAYERS = "import torch\n\n\ndef block(w):\n    return torch.nn.Sequential(torch.nn.Linear(w, w), torch.nn.ReLU())\n"
TRAIN = """import torch


def train_trial(run):
    g = torch.Generator().manual_seed(run.seed)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(1, keepdim=True)
    for step in range(1, run.steps + 1):
        loss = (run.model(x) - y).square().mean()
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.report(step, loss.item())
    return loss.item()
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in (("net.py", NET), ("layers.py", LAYERS), ("train.py", TRAIN)):
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*extra: str, trials: str = "3") -> tuple[int, str]:
    args = ["tune", "net.py", "--model", "Net(width={width})", "--width", "16",
            "--train", "train.py:train_trial", "--lr", "1e-3:1e-1", "--space",
            "output_multiplier", "--space", "hidden_init=0.5:2", "--trials", trials, "--steps",
            "3", "--target-width", "256", "--target-steps", "1000", "--pruner", "none", *extra]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


@pytest.mark.slow
def test_tune_writes_the_card_and_figure_and_resumes(project: Path) -> None:
    code, out = run("-o", "card.toml", "--plot", "fig.png")
    assert code == 0, out
    assert "tuning cost: " in out and "optuna-dashboard muprewrite-tune.journal" in out
    card = load_card(project / "card.toml")
    assert card.base == "Net(width=16)" and card.rule == "mup"
    assert card.extra["proxy"]["finished"] == 3
    assert card.extra["proxy"]["tuned"] == ["lr", "output_multiplier", "hidden_init"]
    assert 0 < card.extra["ledger"]["cost"] < 1
    assert (project / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert (project / "muprewrite-tune.journal").is_file()
    code, out = run("-o", "card.toml", "--plot", "fig.png", trials="4")  # same study: resumes
    assert code == 0, out
    assert load_card(project / "card.toml").extra["proxy"]["finished"] == 4

    result = CliRunner().invoke(cli, ["transfer", "card.toml", "net.py", "--target",
                                      "Net(width=64)", "--train", "train.py:train_trial",
                                      "--steps", "3", "--target-steps", "300", "--vary", "lr"])
    assert result.exit_code == 0, result.output
    assert "transfer check at the target width: regret" in result.output
    check = json.loads((project / "transfer.json").read_text())
    assert [p["label"] for p in check["points"]] == ["transferred", "lr x0.5", "lr x2"]
    assert check["cost"] == pytest.approx(3 * 3 / 300)
    assert check["regret"] == check["points"][0]["value"] - min(
        p["value"] for p in check["points"])


def test_tune_never_writes_over_its_inputs(project: Path) -> None:
    before = {p.name: p.read_bytes() for p in project.iterdir()}
    for extra, what in ((["-o", "net.py"], "is the same file as input"),
                        (["-o", "layers.py"], "is the same file as input"),  # net.py imports it
                        (["-o", "card.toml", "--storage", "train.py"], "is the same file"),
                        (["--plot", "fig.png", "--storage", "fig.json"], "is the same file"),
                        (["-o", "train.py"], "is the same file as input")):
        code, out = run(*extra, "--force")
        assert code == 1 and what in out, (extra, out)
    (project / "other.toml").write_text("# someone else's card\n")
    code, out = run("-o", "other.toml")
    assert code == 1 and "exists; pass --force" in out
    assert {p.name: p.read_bytes() for p in project.iterdir()} == {
        **before, "other.toml": b"# someone else's card\n"}
