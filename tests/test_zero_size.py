"""Zero-size parameters (issue 20): a free parameter of size 0 (vit-pytorch's CLS token under
``pool="mean"``) holds nothing to scale, so ``apply`` and the CLI both accept it with a note;
a built-in layer with zero features (a width of 0) is refused by both."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import muprewrite
from muprewrite.cli.main import cli
from muprewrite.errors import ModelSpecError

MODEL = '''
import torch
from torch import nn


class ViT(nn.Module):
    def __init__(self, dim=32, pool="mean"):
        super().__init__()
        num_cls_tokens = 1 if pool == "cls" else 0
        self.to_patch = nn.Linear(12, dim)
        self.cls_token = nn.Parameter(torch.randn(num_cls_tokens, dim))
        self.mlp = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        h = self.to_patch(x)  # (b, n, dim*)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (b, 0 or 1, dim*)
        h = torch.cat([cls, h], dim=1)
        return self.head(torch.relu(self.mlp(h)).mean(1))

    def example_inputs(self):
        return (torch.randn(2, 5, 12),)
'''


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, type[nn.Module]]:
    path = tmp_path_factory.mktemp("zero") / "vit.py"
    path.write_text(MODEL)
    spec = importlib.util.spec_from_file_location("zero_size_vit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module.ViT


def test_apply_accepts_a_free_zero_size_parameter_with_a_note(vit) -> None:
    _, ViT = vit
    torch.manual_seed(0)
    model = muprewrite.apply(ViT(dim=32).double(), base=ViT(dim=16).double())
    report = muprewrite.analyze(ViT(dim=32), base=ViT(dim=16))
    notes = [d for d in report.diagnostics if d.code == "zero-size"]
    assert [(d.severity, d.where) for d in notes] == [("info", "cls_token")]
    assert not [d for d in report.diagnostics if d.severity != "info"]
    assert model(torch.randn(2, 5, 12, dtype=torch.float64)).shape == (2, 5)


def test_cli_accepts_what_apply_accepts(vit, tmp_path: Path) -> None:
    path, _ = vit
    out = tmp_path / "vit_mup.py"
    result = CliRunner().invoke(cli, [str(path), "--model", "ViT(dim=32)", "--base",
                                      "ViT(dim=16)", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    result = CliRunner().invoke(cli, ["analyze", str(path), "--model", "ViT(dim=32)"])
    assert result.exit_code == 0, result.output
    assert "zero-size" in result.output  # the table's notes column


def test_a_layer_of_zero_features_is_refused_by_both(vit) -> None:
    path, ViT = vit
    with pytest.raises(ModelSpecError, match=r"to_patch.weight of shape \(0, 12\)"):
        muprewrite.apply(ViT(dim=0), base=ViT(dim=16))
    with pytest.raises(ModelSpecError, match="base ViT has zero-size"):
        muprewrite.apply(ViT(dim=32), base=ViT(dim=0))
    result = CliRunner().invoke(cli, ["analyze", str(path), "--model", "ViT(dim=0)"])
    assert result.exit_code != 0 and "to_patch.weight of shape (0, 12)" in result.output
