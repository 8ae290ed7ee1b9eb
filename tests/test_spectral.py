"""The spectral check: sigma_max against svdvals, real measurements under mup, sp and mup-muon,
and the ``muprewrite spectra`` command.

Under ``mup`` (Adam) every matrix's update ratio ||dW|| / sqrt(fan_out/fan_in) stays flat in
width; under ``sp`` (Adam at one learning rate for every width) the hidden update ratio grows
about like the width (slope ~ +1) and the verdict flags it; under ``mup-muon`` the hidden
matrices are stepped by Muon, whose update has a width-independent spectral norm.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from examples.gpt import GPT
from examples.mlp import MLP
from muprewrite.cli.main import cli
from muprewrite.verify import Spectra, spectral_check
from muprewrite.verify.coordcheck import SLOPE_THRESHOLD, slope
from muprewrite.verify.singular import as_matrix, sigma_max
from muprewrite.verify.spectral_plots import plot_spectra

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = [64, 128, 256]  # well above the MLP's 8 input features (see spectral.py)
X = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))


def _mlp(width: int) -> MLP:
    return MLP(in_features=8, width=width, depth=4, out_features=4)


def _check(rule: str, **kwargs: float) -> Spectra:
    return spectral_check(_mlp, WIDTHS, inputs=lambda m: (X,), rule=rule, steps=5, lr=1e-2,
                          **kwargs)


@pytest.fixture(scope="module")
def mup() -> Spectra:
    return _check("mup")


def _svd_max(matrix: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(matrix.double())[0])


@pytest.mark.parametrize("shape", [(300, 300), (1000, 200), (150, 700), (20, 50), (513, 129)])
def test_sigma_max_matches_svdvals(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    dense = torch.randn(*shape, generator=gen)  # no gap at the top: Lanczos' hardest case
    low_rank = (torch.randn(shape[0], 4, generator=gen) @ torch.randn(4, shape[1], generator=gen)
                + 1e-3 * torch.randn(*shape, generator=gen))  # an Adam update's shape
    for matrix in (dense, low_rank, dense.T):
        assert sigma_max(matrix) == pytest.approx(_svd_max(matrix), rel=1e-6)


def test_matrices_from_kernels_and_embeddings() -> None:
    kernel = torch.randn(64, 32, 3, 3)  # conv: (out, in, k, k) -> (out, in*k*k)
    flat = as_matrix(kernel, (0,))
    assert flat.shape == (64, 288) and flat.dtype == torch.float64
    assert sigma_max(flat) == pytest.approx(_svd_max(kernel.reshape(64, -1)), rel=1e-6)
    table = torch.randn(1000, 48)  # nn.Embedding (num, dim): fan_out is axis 1
    assert torch.equal(as_matrix(table, (1,)), table.T.double())
    gpt2 = torch.randn(48, 3 * 48)  # transformers Conv1D: [fan_in, fan_out]
    assert as_matrix(gpt2, (1,)).shape == (144, 48)
    assert sigma_max(torch.zeros(200, 300)) == 0.0
    assert sigma_max(torch.full((200, 300), math.nan)) == math.inf


def test_mup_keeps_every_ratio_flat(mup: Spectra, tmp_path: Path) -> None:
    assert {n: s.role for n, s in mup.matrices.items()} == {
        "input_layer.weight": "input", "hidden_layers.0.weight": "hidden",
        "hidden_layers.1.weight": "hidden", "output_layer.weight": "output"}
    assert mup.matrices["output_layer.weight"].multiplier == (1.0, 0.5, 0.25)
    assert mup.matrices["hidden_layers.0.weight"].shapes == ((64, 64), (128, 128), (256, 256))
    for role in ("input", "hidden", "output"):
        assert abs(mup.slope(role, "update")) < SLOPE_THRESHOLD, mup.summary()
    assert abs(mup.slope("hidden", "weight")) < SLOPE_THRESHOLD
    assert mup.flagged() == [] and mup.ok() and "0 of 6 ratios flagged" in mup.verdict()
    data = json.loads(mup.save_json(tmp_path / "s.json").read_text())
    assert data["widths"] == WIDTHS and data["flagged"] == []
    assert data["roles"]["hidden"]["update"]["expect"] == "flat"
    assert len(data["matrices"]["hidden_layers.0.weight"]["update"]) == 5  # steps x widths
    assert plot_spectra(mup, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_sp_hidden_updates_grow_and_are_flagged(mup: Spectra) -> None:
    """The defect the check exists for: Adam at one lr makes ||dW|| ~ lr sqrt(fan_out fan_in)
    for a hidden matrix, so its ratio grows like the width."""
    sp = _check("sp")
    hidden = sp.slope("hidden", "update")
    assert hidden > 0.5 > mup.slope("hidden", "update") + 0.25, sp.summary()
    assert ("hidden", "update", hidden) in sp.flagged() and not sp.ok()
    assert "FLAGGED hidden update" in sp.verdict()
    # the same run as mup at the base width: only the wider ones differ
    assert sp.matrices["hidden_layers.0.weight"].update[0][0] == pytest.approx(
        mup.matrices["hidden_layers.0.weight"].update[0][0], rel=1e-6)


def _gpt(width: int) -> GPT:
    return GPT(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=width)


@pytest.fixture(scope="module")
def muon() -> Spectra:
    return spectral_check(_gpt, WIDTHS, rule="mup-muon", steps=4, lr=0.02, adam_lr=3e-3)


def test_muon_hidden_updates_flat_where_muon_steps(muon: Spectra) -> None:
    """Hidden matrices (fused qkv included) are stepped by Muon, the rest by AdamW; between
    the widths where Muon steps them the hidden update ratio is flat. The tied embedding is
    recorded without its readout multiplier."""
    hidden = [s for s in muon.matrices.values() if s.role == "hidden"]
    assert len(hidden) == 4 and all(all(s.muon) for s in hidden)  # at the base width too
    assert not any(any(s.muon) for s in muon.matrices.values() if s.role != "hidden")
    assert muon.matrices["transformer.h.0.attn.c_attn.weight"].shapes[-1] == (768, 256)
    wte = muon.matrices["transformer.wte.weight"]
    assert wte.tied and wte.multiplier == (1.0, 1.0, 1.0) and wte.shapes[0] == (64, 64)
    for s in hidden:
        assert abs(slope(WIDTHS, s.ratio("update"))) < SLOPE_THRESHOLD, muon.summary(True)
    assert "MuonWithAdamW" in muon.optimizer


def test_muon_steps_the_hidden_matrices_at_the_base_width_too(muon: Spectra) -> None:
    assert muon.mixed_optimizer() == [] and muon.ok(), muon.verdict()


# -- the command ------------------------------------------------------------------------------

MLP_FILE = str(ROOT / "examples" / "mlp.py")
TEMPLATE = "MLP(in_features=8, width={width}, depth=3, out_features=4)"


def _spectra(out: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["spectra", MLP_FILE, "--model", TEMPLATE, "--widths",
                                      "32,64,128", "--steps", "3", "--inputs", "float(16, 8)",
                                      "--out", str(out), *args])
    return result.exit_code, result.output


def test_cli_writes_figure_and_json_and_fails_on_a_flag(tmp_path: Path) -> None:
    code, output = _spectra(tmp_path / "figs", "--rule", "mup", "--rule", "sp")
    assert code == 1, output
    assert "rule 'mup'" in output and "0 of 6 ratios flagged" in output
    assert "FLAGGED hidden update" in output and "not met under rule(s) 'sp'" in output
    for rule in ("mup", "sp"):
        assert (tmp_path / "figs" / f"spectra_{rule}.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "figs" / "spectra_sp.json").read_text())
    assert data["rule"] == "sp" and data["roles"]["hidden"]["update"]["slope"] > 0.5
    code, output = _spectra(tmp_path / "figs", "--rule", "mup")  # never overwrites
    assert code == 1 and "--force" in output and "widths x seeds" not in output
    code, output = _spectra(tmp_path / "figs", "--rule", "mup", "--force", "--all")
    assert code == 0, output
    assert "hidden_layers.0.weight update" in output


def test_cli_refuses_bad_arguments_before_compute(tmp_path: Path) -> None:
    code, output = _spectra(tmp_path, "--model", "MLP(width=64)")
    assert code != 0 and "{width}" in output
    code, output = _spectra(tmp_path, "--widths", "64")
    assert code != 0 and "at least two widths" in output
    (tmp_path / "blocker").write_text("a file")
    code, output = _spectra(tmp_path / "blocker")
    assert code != 0 and "widths x seeds" not in output
    code, output = _spectra(tmp_path, "--rule", "no-such-rule")
    assert code == 1 and "no-such-rule" in output and "widths x seeds" not in output
