"""``muprewrite check`` on a model whose constructor never initialises some parameters
(issue 20: SD3.5's ``qk_norm="rms"`` RMSNorm holds ``nn.Parameter(torch.empty(dim))``,
filled only when a checkpoint loads). Two builds disagree on that memory, so the check failed
a correct emission with "init scale differs"; it now fills it with NaN, gives it one seeded
value, copies it into the emitted model and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from muprewrite.cli.main import cli
from muprewrite.verify.check_uninit import (
    copy_uninitialised,
    nan_for_uninitialised,
    seed_uninitialised,
)

SOURCE = '''
import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))  # filled when a checkpoint loads

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class JointAttention(nn.Module):
    def __init__(self, dim, heads, qk_norm="rms"):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ln_q = RMSNorm(dim // heads) if qk_norm == "rms" else nn.Identity()
        self.ln_k = RMSNorm(dim // heads) if qk_norm == "rms" else nn.Identity()

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.ln_q(q), self.ln_k(k)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, d_head*)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Net(nn.Module):
    def __init__(self, width=32, heads=2):
        super().__init__()
        self.inp, self.out = nn.Linear(6, width), nn.Linear(width, 6)
        self.attn = JointAttention(width, heads)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.attn(h))

    def example_inputs(self):
        return (torch.randn(2, 5, 6),)
'''


class _Gain(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.lin = nn.Linear(dim, dim)


def test_uninitialised_parameters_are_found_seeded_and_copied() -> None:
    enabled = torch.are_deterministic_algorithms_enabled()
    with nan_for_uninitialised():
        a, b = _Gain(4).double(), _Gain(4).double()
    assert torch.are_deterministic_algorithms_enabled() == enabled  # restored
    assert seed_uninitialised(a) == ["weight"] and not torch.isnan(a.weight).any()
    assert copy_uninitialised(b, a) == ["weight"] and torch.equal(a.weight, b.weight)
    assert not torch.equal(a.lin.weight, b.lin.weight)  # initialised ones are left alone


@pytest.mark.slow
def test_check_passes_a_correct_emission_with_uninitialised_norms(tmp_path: Path) -> None:
    source = tmp_path / "sd35.py"
    source.write_text(SOURCE)
    out = tmp_path / "sd35_mup.py"
    result = CliRunner().invoke(cli, [str(source), "--model", "Net(width=64)", "--base",
                                      "Net(width=32)", "-o", str(out)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["check", str(out), "--model", "Net(width=64)",
                                      "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert "never initialises, e.g. attn.ln_q.weight" in result.output
