"""``muprewrite check`` names the emitted edits no run reached, and runs a width the user did
not give.

The model is a tiny GPT written here in nanoGPT's style: ``self.flash`` (a constructor option)
chooses between ``F.scaled_dot_product_attention`` and the math path, and the emitter edits
both. A check whose specs take one path never runs the other: the factor deleted there passed
with exit 0, and the verdict did not say the path went untested. Now each edit no run reached
is named with the ``if`` that guards it, and the exit status is 3 (passed what it ran, N edits
not exercised).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from muprewrite.cli.check_cmd import NOT_EXERCISED
from muprewrite.cli.main import cli
from muprewrite.emit import emit

pytestmark = pytest.mark.slow

MODEL = r'''"""A tiny GPT in nanoGPT's style: a flash switch chooses the attention path."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Config:
    vocab_size: int = 32
    block_size: int = 8
    n_layer: int = 1
    n_head: int = 2
    n_embd: int = 16
    flash: bool = True


class CausalSelfAttention(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.flash = config.flash
        mask = torch.tril(torch.ones(config.block_size, config.block_size))
        self.register_buffer("bias", mask.view(1, 1, config.block_size, config.block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class Block(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def example_inputs(self):
        return (torch.randint(0, self.config.vocab_size, (2, 8), device=self.lm_head.weight.device),)
'''

BASE = "GPT(Config(n_embd=16, n_head=2))"
WIDE = "GPT(Config(n_embd=32, n_head=2))"
MATH = r" \* \(MUP_D_HEAD_BASE / q\.shape\[-1\]\) \*\* 0\.5"


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("coverage")
    (folder / "nano.py").write_text(MODEL)
    return folder, emit(folder / "nano.py", WIDE, BASE).source


def check(folder: Path, name: str, text: str, *args: str) -> tuple[int, str]:
    (folder / name).write_text(text)
    result = CliRunner().invoke(cli, ["check", str(folder / name), "--original",
                                      str(folder / "nano.py"), "--steps", "1", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _edit(source: str, pattern: str, replacement: str = "") -> str:
    edited, count = re.subn(pattern, replacement, source)
    assert count == 1, pattern
    return edited


def test_the_path_no_run_takes_is_named_with_its_guard(emitted: tuple[Path, str]) -> None:
    folder, source = emitted
    code, out = check(folder, "ok_mup.py", source, "--model", WIDE, "--no-derive")
    assert code == NOT_EXERCISED == 3, out
    missed = [line for line in out.splitlines() if line.startswith("not exercised: ")]
    assert len(missed) == 1, out
    line = source.splitlines().index(next(s for s in source.splitlines()
                                          if "att = (q @ k.transpose(-2, -1))" in s)) + 1
    assert f"ok_mup.py:{line}: att = (q @ k" in missed[0]
    assert "guarded by `else of if self.flash:`" in missed[0]
    assert "passed what it ran, 1 edit(s) not exercised" in out


def test_a_deleted_factor_on_that_path_is_never_a_pass(emitted: tuple[Path, str]) -> None:
    """Deleting the math path's factor gave exit 0 (the path never ran); now the line is
    still an edit (the header lists it) and no run reached it: exit 3. Run with specs that
    take the math path, it fails."""
    folder, source = emitted
    broken = _edit(source, MATH)
    code, out = check(folder, "no_math_mup.py", broken, "--model", WIDE, "--no-derive")
    assert code == NOT_EXERCISED and "guarded by `else of if self.flash:`" in out, out
    code, out = check(folder, "no_math2_mup.py", broken, "--no-derive",
                      "--model", "GPT(Config(n_embd=32, n_head=2, flash=False))",
                      "--base", "GPT(Config(n_embd=16, n_head=2, flash=False))")
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert code == 1 and len(errors) == 1 and "CausalSelfAttention.forward" in errors[0], out


def test_a_factor_wrong_only_at_another_width_fails(emitted: tuple[Path, str]) -> None:
    """A factor right at every power-of-two width (head sizes 8, 16) and wrong at others:
    checked with the user's one --model it passed; check adds 1.5x the base (head size 12)."""
    folder, source = emitted
    sdpa = "MUP_D_HEAD_BASE ** 0.5 / q.shape[-1]"
    assert f"scale={sdpa}" in source
    broken = source.replace(f"scale={sdpa}", f"scale=({sdpa} if q.shape[-1] % 8 == 0 else 1.0)")
    code, out = check(folder, "odd_mup.py", broken, "--model", WIDE)
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert code == 1 and len(errors) == 1, out
    assert "n_embd=24" in errors[0] and "CausalSelfAttention.forward" in errors[0], out
