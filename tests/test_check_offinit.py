"""``muprewrite check`` moves both models off their init before comparing.

An adaLN-Zero model (DiT, PixArt: every gate and the readout start at zero) outputs zeros at
init, so every gradient but the readout's is zero and a deleted readout multiplier, attention
factor or branch multiplier changed nothing ``check`` compared: each passed with exit 0. The
model is a tiny adaLN-Zero diffusion transformer written here in DiT's style.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from muprewrite.emit import emit
from muprewrite.verify.check_perturb import perturb, scales
from muprewrite.verify.source_check import check_emitted

pytestmark = pytest.mark.slow

MODEL = r'''"""A tiny adaLN-Zero diffusion transformer in DiT's style: zero-init gates and readout."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        s1, g1, a1, s2, g2, a2 = self.ada(c).chunk(6, dim=1)
        x = x + a1.unsqueeze(1) * self.attn(modulate(self.norm1(x), s1, g1))
        return x + a2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), s2, g2))


class Final(nn.Module):
    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out)

    def forward(self, x, c):
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class TinyDiT(nn.Module):
    def __init__(self, width: int = 16, depth: int = 1, heads: int = 2, channels: int = 3,
                 tokens: int = 4) -> None:
        super().__init__()
        self.channels, self.tokens = channels, tokens
        self.embed = nn.Linear(channels, width)
        self.t_mlp = nn.Sequential(nn.Linear(8, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(depth)])
        self.final = Final(width, channels)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def t_features(self, t):
        freqs = torch.exp(-math.log(100.0) * torch.arange(4, dtype=t.dtype, device=t.device) / 4)
        args = t[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)

    def forward(self, x, t):
        c = self.t_mlp(self.t_features(t))
        x = self.embed(x)
        for block in self.blocks:
            x = block(x, c)
        return self.final(x, c)

    def example_inputs(self):
        dev = self.embed.weight.device
        return (torch.randn(2, self.tokens, self.channels, device=dev), torch.rand(2, device=dev))
'''

WIDE = "TinyDiT(width=32, heads=2)"
BASE = "TinyDiT(width=16, heads=2)"
DEEP = "TinyDiT(width=32, heads=2, depth=2)"


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("offinit")
    (folder / "adaln.py").write_text(MODEL)
    return folder, {
        "mup": emit(folder / "adaln.py", WIDE, BASE).source,
        "completep": emit(folder / "adaln.py", DEEP, "TinyDiT(width=16, heads=2, depth=1)",
                          rule="completep").source,
    }


def _check(folder: Path, name: str, text: str, sizes: list[str]):
    (folder / name).write_text(text)
    return check_emitted(folder / name, sizes, original=folder / "adaln.py", steps=1,
                         derive=False)


def _edit(source: str, pattern: str, replacement: str = "") -> str:
    edited, count = re.subn(pattern, replacement, source)
    assert count >= 1, pattern
    return edited


@pytest.mark.parametrize("rule", ["mup", "completep"])
def test_the_emitted_file_passes(emitted: tuple[Path, dict[str, str]], rule: str) -> None:
    folder, sources = emitted
    result = _check(folder, f"ok_{rule}_mup.py", sources[rule],
                    [WIDE if rule == "mup" else DEEP])
    assert result.passed, result.divergence and result.divergence.line()
    assert all("off init" in line for line in result.compared)


@pytest.mark.parametrize(("rule", "pattern", "what"), [
    ("mup", r" \* self\.mup_linear_multiplier", "readout multiplier"),
    ("mup", r", scale=MUP_D_HEAD_BASE \*\* 0\.5 / q\.shape\[-1\]", "attention factor"),
    ("completep", r"(?<=return x \+ )self\.mup_branch_multiplier \* ", "branch multiplier"),
], ids=["readout", "attention", "branch"])
def test_a_deleted_factor_fails(emitted: tuple[Path, dict[str, str]], rule: str, pattern: str,
                                what: str) -> None:
    """Each passed before: the adaLN-Zero gates and the readout were zero when compared."""
    folder, sources = emitted
    name = f"no_{what.replace(' ', '_')}_mup.py"
    result = _check(folder, name, _edit(sources[rule], pattern),
                    [WIDE if rule == "mup" else DEEP])
    assert not result.passed, f"{what} deleted, and check passed"
    assert result.divergence is not None and result.divergence.error > 1e-3


def test_the_perturbation_is_the_same_for_both_models_and_reaches_zero_init() -> None:
    """Equal models stay equal (the same noise by name); a zero-init weight moves by its
    fan-in scale, a zero bias by its weight's."""
    import torch

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    torch.nn.init.zeros_(a[0].weight)
    torch.nn.init.zeros_(a[0].bias)
    b = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    b.load_state_dict(a.state_dict())
    sizes = scales(a)
    assert sizes["0.weight"] == pytest.approx(1 / 12 ** 0.5)  # 1/sqrt(3 fan_in)
    assert sizes["0.bias"] == pytest.approx(1 / 12 ** 0.5)
    assert sizes["1.weight"] == pytest.approx(0.1)  # a tenth of a norm's gain
    perturb((a, b), a)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
        assert float(p.detach().std()) > 0, name
