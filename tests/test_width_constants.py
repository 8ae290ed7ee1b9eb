"""Width-dependent constants in the user's forward (issue 24 item 1), at 2x and 4x width in
float64. T5 scales its tied readout by ``d_model ** -0.5``; an embedding may be scaled by
``width ** 0.5``. Base and model captures see different scalars: ``analyze`` lists each
(line, both values, accounting), ``apply`` divides its factor by the model's own ratio so the
total readout multiplier is 1/m relative to the base (input: 1), or refuses naming the line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import muprewrite
import muprewrite.cli.main
from muprewrite.errors import MuprewriteError
from muprewrite.rewrite.attached import plan_of
from muprewrite.verify.coordcheck import coord_check

T5_SOURCE = '''
import torch
import torch.nn.functional as F
from torch import nn


class T5Block(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.wi = nn.Linear(d_model, 2 * d_model, bias=False)
        self.wo = nn.Linear(2 * d_model, d_model, bias=False)

    def forward(self, h):
        return h + self.wo(F.relu(self.wi(self.norm(h))))


class T5Stack(nn.Module):
    """A T5-style decoder stack: shared embedding tied to the readout, scaled by
    d_model ** -0.5 before it (a width-dependent Python float)."""

    def __init__(self, d_model=32, vocab=13, depth=2, embed_scale=False, hidden_scale=False,
                 tie=True):
        super().__init__()
        self.d_model, self.embed_scale, self.hidden_scale = d_model, embed_scale, hidden_scale
        self.shared = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(T5Block(d_model) for _ in range(depth))
        self.mix = nn.Linear(d_model, d_model, bias=False)
        self.final_norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.shared.weight

    def forward(self, idx):
        h = self.shared(idx)  # (b, n, d_model*)
        if self.embed_scale:
            h = h * self.d_model ** 0.5
        for block in self.blocks:
            h = block(h)
        m = self.mix(h)
        if self.hidden_scale:
            m = m * self.d_model ** -0.5
        h = self.final_norm(h + m)
        return self.lm_head(h * (self.d_model ** -0.5))

    def example_inputs(self):
        return (torch.randint(0, 13, (2, 5)),)
'''


def _line(text: str) -> int:
    return next(i for i, line in enumerate(T5_SOURCE.splitlines(), 1) if text in line)


LINE_EMBED = _line("h = h * self.d_model ** 0.5")
LINE_HIDDEN = _line("m = m * self.d_model ** -0.5")
LINE_READOUT = _line("return self.lm_head(h *")


@pytest.fixture(scope="module")
def t5_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("t5") / "t5.py"
    path.write_text(T5_SOURCE)
    return path


@pytest.fixture(scope="module")
def T5(t5_file: Path) -> type[nn.Module]:
    spec = importlib.util.spec_from_file_location("t5_width_constants", t5_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.T5Stack


def _apply(T5, width: int, **kw) -> nn.Module:
    torch.manual_seed(0)
    return muprewrite.apply(T5(width, **kw).double(), base=T5(16, **kw).double())


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("tie", [True, False])
def test_readout_total_multiplier_is_one_over_m(T5, m: int, tie: bool) -> None:
    plan = plan_of(_apply(T5, 16 * m, tie=tie))
    own = (16 * m) ** -0.5 / 16 ** -0.5  # the model's own readout constant vs the base's
    readout = plan["shared.weight" if tie else "lm_head.weight"]
    assert abs(readout.multiplier * own - 1 / m) < 1e-10
    assert abs(readout.multiplier - (1 / m) / own) < 1e-10
    assert readout.gather == 1.0 and (tie or plan["shared.weight"].multiplier == 1.0)


@pytest.mark.parametrize("m", [2, 4])
def test_scaled_embedding_is_accounted(T5, m: int) -> None:
    plan = plan_of(_apply(T5, 16 * m, embed_scale=True))["shared.weight"]
    own = ((16 * m) / 16) ** 0.5
    assert abs(plan.gather * own - 1.0) < 1e-10  # the lookup's total factor: 1
    assert abs(plan.multiplier * (16 * m) ** -0.5 / 16 ** -0.5 - 1 / m) < 1e-10


def test_analyze_lists_each_constant(T5, t5_file: Path) -> None:
    report = muprewrite.analyze(T5(64, embed_scale=True), base=T5(16, embed_scale=True))
    found = {(int(c.source.rsplit(":", 1)[1]), c.account): c for c in report.width_constants}
    assert set(found) == {(LINE_EMBED, "input"), (LINE_READOUT, "readout")}
    readout = found[(LINE_READOUT, "readout")]
    assert readout.source.startswith(str(t5_file)) and readout.param == "shared.weight"
    assert abs(readout.model - 64 ** -0.5) < 1e-12 and abs(readout.base - 16 ** -0.5) < 1e-12
    table = report.table()
    assert f"t5.py:{LINE_READOUT}: 0.125 here, 0.25 in the base; accounted" in table
    result = CliRunner().invoke(muprewrite.cli.main.cli, [
        "analyze", str(t5_file), "--model", "T5Stack(d_model=64)", "--base",
        "T5Stack(d_model=16)", "--json"])
    assert result.exit_code == 0, result.output
    assert '"width_constants"' in result.output and '"readout"' in result.output


def test_constant_on_a_hidden_path_is_refused_naming_the_line(T5, t5_file: Path) -> None:
    report = muprewrite.analyze(T5(32, hidden_scale=True), base=T5(16, hidden_scale=True))
    warned = [d for d in report.diagnostics if d.code == "width-dependent-constant"
              and d.severity == "warning"]
    assert [d.where for d in warned] == [f"{t5_file}:{LINE_HIDDEN}"]
    with pytest.raises(MuprewriteError, match=f"t5.py:{LINE_HIDDEN}") as info:
        _apply(T5, 32, hidden_scale=True)
    assert "mix.weight" in info.value.message and info.value.fix


def test_emission_refuses_what_it_cannot_carry(t5_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "t5_mup.py"
    result = CliRunner().invoke(muprewrite.cli.main.cli, [
        str(t5_file), "--model", "T5Stack(d_model=32)", "--base", "T5Stack(d_model=16)",
        "-o", str(out)])
    assert result.exit_code != 0 and f"t5.py:{LINE_READOUT}" in result.output
    assert not out.exists()


class Sinusoid(nn.Module):
    """Frequencies ``arange(half) / half`` with half = width // 2: a width-dependent divisor
    that scales no parameter's path (nothing to account for)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.t_in, self.out = nn.Linear(width, width), nn.Linear(width, 3)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-9.2 * torch.arange(half, dtype=t.dtype) / half)  # (half*)
        emb = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)
        return self.out(F.silu(self.t_in(emb)))


def test_constant_scaling_no_parameter_needs_nothing() -> None:
    t = torch.rand(2, dtype=torch.float64)
    report = muprewrite.analyze(Sinusoid(32), t, base=Sinusoid(16))
    assert [c.account for c in report.width_constants] == ["none"]
    torch.manual_seed(0)
    model = muprewrite.apply(Sinusoid(32).double(), t, base=Sinusoid(16).double())
    assert plan_of(model)["out.weight"].multiplier == 0.5


@pytest.mark.slow
@pytest.mark.parametrize("embed_scale", [False, True])
def test_coordinate_check_is_flat(T5, embed_scale: bool) -> None:
    """With the readout (and the scaled embedding) accounted, the logits' RMS at init and
    after a few steps stays flat in width (|slope| -0.72 / -0.68 without the accounting)."""
    check = coord_check(lambda w: T5(w, embed_scale=embed_scale).double(), [16, 32, 64],
                        inputs=lambda model: model.example_inputs(), rule="mup", steps=3,
                        lr=1e-2, seeds=2)
    assert abs(check.slope("", 0)) < 0.3 and abs(check.slope("")) < 0.3, check.rms[""]


class WidthInit(nn.Module):
    """Init code reading the width (std = width ** -0.5 on the hidden layer)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.inp, self.hid, self.out = (nn.Linear(5, width), nn.Linear(width, width),
                                        nn.Linear(width, 3))
        nn.init.normal_(self.hid.weight, std=width ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hid(torch.relu(self.inp(x)))))


@pytest.mark.parametrize("m", [2, 4])
def test_init_reading_the_width_is_not_scaled_twice(m: int) -> None:
    """apply rescales each draw to the rule's factor times the *base's* RMS, so a width read
    in the user's init is measured, not multiplied in again: hidden RMS = base RMS x m^-1/2."""
    x = torch.randn(2, 5, dtype=torch.float64)
    torch.manual_seed(0)
    base = WidthInit(16).double()
    model = muprewrite.apply(WidthInit(16 * m).double(), x, base=base)
    ratio = model.hid.weight.square().mean().sqrt() / base.hid.weight.square().mean().sqrt()
    assert abs(float(ratio) - m ** -0.5) < 1e-10


class HandReadout(nn.Module):
    """Hand-written μP readout (``out(h) * base_width / width``, nanoGPT-mup style)."""

    def __init__(self, width: int = 32, base_width: int = 16) -> None:
        super().__init__()
        self.mult = base_width / width
        self.inp, self.hid, self.out = (nn.Linear(5, width), nn.Linear(width, width),
                                        nn.Linear(width, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hid(torch.relu(self.inp(x))))) * self.mult


@pytest.mark.parametrize("m", [2, 4])
def test_hand_written_readout_multiplier_is_not_applied_twice(m: int) -> None:
    x = torch.randn(2, 5, dtype=torch.float64)
    torch.manual_seed(0)
    model = muprewrite.apply(HandReadout(16 * m).double(), x, base=HandReadout(16).double())
    assert abs(plan_of(model)["out.weight"].multiplier - 1.0) < 1e-10  # the model has 1/m
