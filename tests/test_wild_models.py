"""Models in the styles of public research code, each through ``apply`` and emission.

A nanoGPT-style model whose attention picks ``flash`` or ``math`` by an attribute and whose
blocks run under ``torch.utils.checkpoint`` when a flag is set carries its own hand-written
μP knobs (``attn_factor`` on the logits, ``readout_mult`` on the readout input), as
hand-written μP code does: the by-hand reference is that class with the knobs set and the
parameters of the rewritten model. Every mode (flash/math, checkpoint on/off, train/eval)
of ``apply`` and of the emitted source must equal it in float64, and ``muprewrite check``
must pass the emitted file. A model whose width is tied to its depth (SD3.5's MMDiT:
hidden = 64 * depth) cannot have a base of another width and the same depth: its base of
another depth needs a depth rule, and every entry point says so.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import muprewrite
from muprewrite.cli.main import cli
from muprewrite.emit import emit
from muprewrite.errors import MuprewriteError
from muprewrite.spec import build_model, load_module

pytestmark = pytest.mark.slow

NANO = '''"""nanoGPT-style: flash or math attention by attribute, checkpointed blocks by flag."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class Config:
    n_embd: int = 32
    n_head: int = 2
    n_layer: int = 2
    vocab: int = 50
    block_size: int = 16
    flash: bool = True
    grad_ckpt: bool = False
    attn_factor: float = 1.0  # hand-written muP: extra factor on the attention logits
    readout_mult: float = 1.0  # hand-written muP: readout input multiplier


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.n_head, self.factor = cfg.n_head, cfg.attn_factor
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.flash = cfg.flash
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size))
        self.register_buffer("mask", mask.view(1, 1, cfg.block_size, cfg.block_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # C: width
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, Dh)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               scale=self.factor / math.sqrt(k.size(-1)))
        else:
            att = (q @ k.transpose(-2, -1)) * (self.factor / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            if self.cfg.grad_ckpt and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.lm_head(self.ln_f(x) * self.cfg.readout_mult)

    def example_inputs(self):
        return (torch.randint(0, self.cfg.vocab, (2, 8), device=self.wte.weight.device),)
'''

TIED = '''"""Width tied to depth, as SD3.5's MMDiT: hidden size = 64 * depth."""

import torch
from torch import nn


class Tied(nn.Module):
    def __init__(self, depth: int = 2) -> None:
        super().__init__()
        width = 64 * depth
        self.inp = nn.Linear(8, width)
        self.blocks = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.out = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h).relu()
        return self.out(h)

    def example_inputs(self):
        return (torch.randn(2, 8, device=self.inp.weight.device),)
'''

BASE = "NanoGPT(Config(n_embd=32, n_head=2))"
WIDTHS = [64, 128]  # 2x and 4x, heads fixed: d_head grows


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wild")
    (folder / "nano.py").write_text(NANO)
    (folder / "tied.py").write_text(TIED)
    return folder


def _modes(model: torch.nn.Module) -> list[tuple[bool, bool, bool]]:
    return list(itertools.product((True, False), (False, True), (True, False)))


def _set_mode(model: torch.nn.Module, flash: bool, ckpt: bool, train: bool) -> None:
    model.cfg.grad_ckpt = ckpt
    for module in model.modules():
        if hasattr(module, "flash"):
            module.flash = flash
    model.train(train)


def _reference(user, width: int, state: dict) -> torch.nn.Module:  # noqa: ANN001
    """The same class with μP written in by hand: logits x sqrt(d_base)/d_head over the
    default 1/sqrt(d_head), readout input x 1/m; parameters taken from the rewritten model."""
    d_base, d_head, m = 32 // 2, width // 2, width / 32
    ref = build_model(user, f"NanoGPT(Config(n_embd={width}, n_head=2, "
                            f"attn_factor={(d_base / d_head) ** 0.5!r}, readout_mult={1 / m!r}))",
                      device="cpu")
    ref.load_state_dict(state)
    return ref


def test_apply_equals_hand_written_mup_in_every_mode(project: Path) -> None:
    user = load_module(project / "nano.py")
    torch.set_default_dtype(torch.float64)
    try:
        base = build_model(user, BASE, device="cpu")
        for width in WIDTHS:
            model = build_model(user, f"NanoGPT(Config(n_embd={width}, n_head=2))", device="cpu")
            model = muprewrite.apply(model, base=base)
            ref = _reference(user, width, model.state_dict())
            plain = copy.deepcopy(ref)
            for a in plain.modules():
                if hasattr(a, "factor"):
                    a.factor = 1.0
            plain.cfg = copy.copy(plain.cfg)
            plain.cfg.readout_mult = 1.0
            idx = torch.randint(0, 50, (2, 8))
            for flash, ckpt, train in _modes(model):
                for net in (model, ref, plain):
                    _set_mode(net, flash, ckpt, train)
                out, expected = model(idx), ref(idx)
                torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
                assert not torch.allclose(out, plain(idx), rtol=1e-6)  # μP is not a no-op here
    finally:
        torch.set_default_dtype(torch.float32)


def test_emitted_source_passes_the_behavioural_check(project: Path) -> None:
    wide = "NanoGPT(Config(n_embd=64, n_head=2))"
    (project / "nano_mup.py").write_text(emit(project / "nano.py", wide, BASE).source)
    for flash in ("True", "False"):
        for ckpt in ("False", "True"):
            specs = [f"NanoGPT(Config(n_embd={w}, n_head=2, flash={flash}, grad_ckpt={ckpt}))"
                     for w in WIDTHS]
            args = ["check", str(project / "nano_mup.py"), "--base",
                    f"NanoGPT(Config(n_embd=32, n_head=2, flash={flash}, grad_ckpt={ckpt}))"]
            for spec in specs:
                args += ["--model", spec]
            result = CliRunner().invoke(cli, args)
            # the path flash= does not take is named as not exercised (exit 3)
            assert result.exit_code == 3, result.output
            # the base, the two widths given and 1.5x the base (added by check)
            assert result.output.count("ok: ") == 4 and "if self.flash:`" in result.output


def test_width_tied_to_depth_needs_a_depth_rule(project: Path) -> None:
    """A base of another depth is paired block by block; a width-only rule refuses it, and
    under completep a branch that ends in an inline op (``block(h).relu()``) is refused at its
    line, since no module output can carry the branch multiplier."""
    user = load_module(project / "tied.py")
    model, base = build_model(user, "Tied(depth=4)"), build_model(user, "Tied(depth=2)")
    with pytest.raises(MuprewriteError, match=r"the base has 2 residual blocks and the model 4: "
                                              r"rule 'mup' transfers across width only") as err:
        muprewrite.apply(model, base=base)
    assert "completep" in err.value.fix
    with pytest.raises(MuprewriteError, match=r"residual branch added at .*tied\.py:\d+ ends in "
                                              r"an op of the block's own forward"):
        muprewrite.apply(model, base=base, rule="completep")
    result = CliRunner().invoke(cli, [str(project / "tied.py"), "--model", "Tied(depth=4)",
                                      "--base", "Tied(depth=2)", "--diff"])
    assert result.exit_code == 1 and "residual blocks" in result.output, result.output


def test_base_running_another_path_is_refused(project: Path) -> None:
    """A base built with another flag captures another forward: widths measured between two
    programs would be guesses (the attention factor was silently lost before)."""
    user = load_module(project / "nano.py")
    model = build_model(user, "NanoGPT(Config(n_embd=64, n_head=2, flash=False))")
    with pytest.raises(MuprewriteError, match=r"base runs another forward than NanoGPT") as err:
        muprewrite.apply(model, base=build_model(user, BASE))
    assert "nano.py:" in str(err.value) and "flags" in err.value.fix
