"""``muprewrite check``: passes a correct emitted file and fails each defect it names.

The model is a small GPT written here in nanoGPT's style: a config dataclass, a tied
readout, and a forward with two branches (all positions with ``targets`` for training, the
last position without, for generation). Emitted once; every defect is a one-line edit of
the emitted text, as a person (or a bad merge) would make it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from muprewrite.cli.main import cli
from muprewrite.emit import emit

pytestmark = pytest.mark.slow

GPT = '''"""A tiny GPT with train and generate branches and a tied readout."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    vocab_size: int = 64
    block_size: int = 16
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32


class SelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # C: width
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, Dh)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(nn.Linear(config.n_embd, 4 * config.n_embd), nn.GELU(),
                                 nn.Linear(4 * config.n_embd, config.n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)  # TRAIN-BRANCH
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            return logits, loss
        logits = self.lm_head(x[:, [-1], :])  # GENERATE-BRANCH
        return logits, None

    def example_inputs(self):
        idx = torch.randint(0, self.config.vocab_size, (2, 8), device=self.lm_head.weight.device)
        return (idx,)
'''

BASE = "GPT(GPTConfig(n_embd=32, n_head=2))"
WIDE = "GPT(GPTConfig(n_embd=64, n_head=2))"
WIDER = "GPT(GPTConfig(n_embd=128, n_head=2))"
INPUTS = ["int(2, 8, high=64)", "int(2, 8, high=64), targets=int(2, 8, high=64)"]


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("check")
    (folder / "gpt.py").write_text(GPT)
    source = emit(folder / "gpt.py", WIDE, BASE).source
    return folder, source


def check(folder: Path, name: str, text: str, *extra: str) -> tuple[int, str]:
    (folder / name).write_text(text)
    args = ["check", str(folder / name), "--model", WIDE, "--model", WIDER, "--original",
            str(folder / "gpt.py"), *extra]
    for spec in INPUTS:
        args += ["--inputs", spec]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def _edit(source: str, pattern: str, replacement: str) -> str:
    edited, count = re.subn(pattern, replacement, source)
    assert count >= 1, pattern
    return edited


def test_a_correct_file_passes(emitted: tuple[Path, str]) -> None:
    folder, source = emitted
    code, out = check(folder, "ok_mup.py", source)
    assert code == 0, out
    # the base, the two widths given (powers of two) and 1.5x the base, added by check
    assert out.count("ok: ") == 4 and "behaves as muprewrite.apply" in out


@pytest.mark.parametrize(("defect", "pattern", "replacement", "needle"), [
    ("readout multiplier", r"self\.lm_head\(x \* self\.mup_lm_head_multiplier\)",
     "self.lm_head(x)", r"GPT\.forward of <root>; first differing output: lm_head"),
    ("attention factor", r", scale=MUP_D_HEAD_BASE \*\* 0\.5 / q\.shape\[-1\]", "",
     r"SelfAttention\.forward of h\.0\.attn"),
    ("generate branch", r"self\.lm_head\(x\[:, \[-1\], :\] \* self\.mup_lm_head_multiplier\)",
     "self.lm_head(x[:, [-1], :])", r"input set 0"),
    ("base structure", r"return GPT\(GPTConfig\(n_embd=32, n_head=2\)\)",
     "return GPT(GPTConfig(n_embd=32, n_head=2, n_layer=1))",
     r"header diverges at \S+: mup_base_model\(\).*the header says the base is"),
], ids=["readout", "attention", "branch", "base"])
def test_each_defect_fails(emitted: tuple[Path, str], defect: str, pattern: str,
                           replacement: str, needle: str) -> None:
    folder, source = emitted
    name = f"{defect.replace(' ', '_')}_mup.py"
    code, out = check(folder, name, _edit(source, pattern, replacement))
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert code == 1 and len(errors) == 1, out
    assert re.search(needle, errors[0]) and "fix:" in errors[0] and name in errors[0], errors[0]
    assert "Traceback" not in out


def test_steps_0_still_compares_the_optimizer_groups(emitted: tuple[Path, str]) -> None:
    """--steps 0 skips the training steps, not the groups: a file with SP learning rates
    (the hidden lr exponent dropped) fails even then."""
    folder, source = emitted
    sp_lr = _edit(source, r'"lr": \(-1\.0, 0\.0\), ', "")
    code, out = check(folder, "sp_lr_mup.py", sp_lr, "--steps", "0")
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert code == 1 and len(errors) == 1 and "sp_lr_mup.py" in errors[0], out
    code, out = check(folder, "ok0_mup.py", source, "--steps", "0")
    assert code == 0 and "optimizer groups" in out, out


def test_a_deleted_mup_init_is_named(emitted: tuple[Path, str]) -> None:
    """Without mup_init(self) the emitted mup_param_groups refuses, and check says why (it
    was an internal error)."""
    folder, source = emitted
    code, out = check(folder, "no_init_mup.py", _edit(source, r"\n *mup_init\(self\)[^\n]*", ""))
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert code == 1 and len(errors) == 1, out
    assert "must end with mup_init(self)" in errors[0] and "internal error" not in errors[0]


def test_a_space_in_the_file_name(tmp_path: Path) -> None:
    """The header names the original; a name with spaces is read back whole."""
    (tmp_path / "my gpt.py").write_text(GPT)
    source = emit(tmp_path / "my gpt.py", WIDE, BASE).source
    (tmp_path / "my gpt_mup.py").write_text(source)
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "my gpt_mup.py"), "--model", WIDE,
                                      "--inputs", INPUTS[0], "--inputs", INPUTS[1],
                                      "--steps", "1"])
    assert result.exit_code == 0 and "behaves as muprewrite.apply on my gpt.py" in result.output, \
        result.output


def test_emitted_file_refuses_another_depth(emitted: tuple[Path, str]) -> None:
    """μP here transfers across width: at a depth the base lacks, parameters would have no
    factor, so the emitted mup_init refuses instead of leaving them as they are."""
    from emitted import import_without_muprewrite

    folder, source = emitted
    (folder / "depth_mup.py").write_text(source)
    module = import_without_muprewrite(folder / "depth_mup.py")
    module.GPT(module.GPTConfig(n_embd=64, n_head=2))  # the base's depth: fine
    with pytest.raises(ValueError, match=r"differ in \d+ parameter\(s\), e\.g\. h\.2\."):
        module.GPT(module.GPTConfig(n_embd=64, n_head=2, n_layer=3))


def test_a_model_without_example_inputs_is_checked_on_the_given_inputs(tmp_path: Path) -> None:
    """nanoGPT's GPT has no example_inputs(): apply's capture takes the first --inputs."""
    source = GPT[:GPT.index("    def example_inputs")]
    (tmp_path / "gpt.py").write_text(source)
    emitted = emit(tmp_path / "gpt.py", WIDE, BASE, inputs_expr=INPUTS[0]).source
    code, out = check(tmp_path, "bare_mup.py", emitted)
    assert code == 0, out
