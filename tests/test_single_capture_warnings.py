"""Single-capture guesses (issue 24 item 4): ``analyze`` without a base guesses which axes are
width. On five patterns written from scratch in the styles of public families, each
parameter's single-capture role must equal its role measured against a base (two captures),
or a ``warning`` must name the parameter and the assumption; the table then says
"pass --base to be sure". Never an unwarned wrong role."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from muprewrite import analyze
from muprewrite.analysis.render import GUESSES
from muprewrite.analysis.report import Report


class TimestepMLP(nn.Module):
    """DiT-style conditioning, but the sinusoid is as wide as the model."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.t_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.x_in, self.out = nn.Linear(6, width), nn.Linear(width, 6)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=x.dtype) / half)
        emb = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)
        return self.out(F.silu(self.x_in(x) + self.t_mlp(emb)))  # (B, width*) -> (B, 6)

    def example_inputs(self) -> tuple:
        return torch.randn(2, 6), torch.rand(2)


class SelectiveSSM(nn.Module):
    """Mamba-style: in_proj to 2 * d_inner, a sequential scan whose state is made in forward."""

    def __init__(self, width: int = 32, d_state: int = 4) -> None:
        super().__init__()
        d_inner = 2 * width
        self.d_inner, self.d_state = d_inner, d_state
        self.embed = nn.Linear(5, width)
        self.in_proj = nn.Linear(width, 2 * d_inner)
        self.x_proj = nn.Linear(d_inner, 1 + 2 * d_state)
        self.dt_proj = nn.Linear(1, d_inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1.0)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, width)
        self.head = nn.Linear(width, 5)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        b, n, _ = u.shape
        x, z = self.in_proj(self.embed(u)).chunk(2, -1)  # (b, n, d_inner*) each
        dt, B, C = self.x_proj(x).split([1, self.d_state, self.d_state], -1)
        dt = F.softplus(self.dt_proj(dt))  # (b, n, d_inner*)
        A = -torch.exp(self.A_log)  # (d_inner*, d_state)
        h = x.new_zeros(b, self.d_inner, self.d_state)  # scan state, made in forward
        ys = []
        for i in range(n):
            h = torch.exp(dt[:, i, :, None] * A) * h + dt[:, i, :, None] * B[:, i, None] * x[:, i, :, None]
            ys.append((h @ C[:, i, :, None]).squeeze(-1))  # (b, d_inner*)
        y = torch.stack(ys, 1) + x * self.D
        return self.head(self.out_proj(y * F.silu(z)))

    def example_inputs(self) -> tuple:
        return (torch.randn(2, 3, 5),)


class MoELM(nn.Module):
    """Top-2 mixture of experts: the router's output axis is the (fixed) expert count."""

    def __init__(self, width: int = 32, experts: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, width)
        self.router = nn.Linear(width, experts, bias=False)
        self.w_in = nn.Parameter(torch.randn(experts, width, 2 * width) / width ** 0.5)
        self.w_out = nn.Parameter(torch.randn(experts, 2 * width, width) / width ** 0.5)
        self.lm_head = nn.Linear(width, 11, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)  # (b, n, width*)
        gates, chosen = self.router(x).softmax(-1).topk(2, dim=-1)  # (b, n, 2)
        w_in, w_out = self.w_in[chosen], self.w_out[chosen]  # (b, n, 2, width*, 2 width*)
        h = F.gelu(torch.einsum("bnd,bnkdf->bnkf", x, w_in))
        y = torch.einsum("bnkf,bnkfd,bnk->bnd", h, w_out, gates)
        return self.lm_head(x + y)

    def example_inputs(self) -> tuple:
        return (torch.randint(0, 11, (2, 5)),)


class Perceiver(nn.Module):
    """A learned latent array cross-attends to the inputs."""

    def __init__(self, width: int = 32, latents: int = 6) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, width))
        self.to_kv = nn.Linear(7, 2 * width)
        self.to_q = nn.Linear(width, width)
        self.ff = nn.Linear(width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        b = data.shape[0]
        lat = self.latents.expand(b, -1, -1)  # (b, latents, width*)
        k, v = self.to_kv(data).chunk(2, -1)  # (b, n, width*)
        lat = lat + F.scaled_dot_product_attention(self.to_q(lat), k, v)
        return self.head(F.gelu(self.ff(lat)).mean(1))

    def example_inputs(self) -> tuple:
        return (torch.randn(2, 9, 7),)


class SwinWindow(nn.Module):
    """Windowed attention with a relative-position bias table indexed by a buffer."""

    def __init__(self, width: int = 32, heads: int = 2, window: int = 3) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(4, width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.bias_table = nn.Parameter(torch.randn(2 * window - 1, heads) * 0.02)
        pos = torch.arange(window)
        self.register_buffer("rel_index", pos[:, None] - pos[None, :] + window - 1)
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.bias_table[self.rel_index].permute(2, 0, 1)  # (heads, n, n)
        logits = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + bias
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        return self.head(self.proj(out))

    def example_inputs(self) -> tuple:
        return (torch.randn(2, 3, 4),)


MODELS = [TimestepMLP, SelectiveSSM, MoELM, Perceiver, SwinWindow]


def _wrong(single: Report, measured: Report) -> dict[str, tuple[str, str]]:
    return {p.name: (p.role, measured[p.name].role) for p in single
            if p.role != measured[p.name].role}


def _guessed(report: Report) -> dict[str, str]:
    """parameter -> code of the warning that names it as a single-capture guess."""
    return {d.where: d.code for d in report.diagnostics
            if d.severity == "warning" and d.code in GUESSES and d.where in report.params}


@pytest.mark.parametrize("cls, code", [
    (TimestepMLP, "width-sized-constant"), (SelectiveSSM, "constant-pinned"),
    (MoELM, "routing-width"), (Perceiver, "free-table-guess"), (SwinWindow, "heads-guess"),
], ids=lambda c: getattr(c, "__name__", c))
def test_every_wrong_single_capture_role_is_warned(cls: type[nn.Module], code: str) -> None:
    """Ground truth: the roles measured against a base (two captures, heads fixed here)."""
    torch.manual_seed(0)
    single, measured = analyze(cls(32)), analyze(cls(32), base=cls(16))
    wrong = _wrong(single, measured)
    assert wrong, "the pattern must make one capture guess wrong"
    guessed = _guessed(single)
    assert set(wrong) <= set(guessed), f"unwarned wrong roles: {set(wrong) - set(guessed)}"
    assert code in {guessed[name] for name in wrong}
    table = single.table()
    assert "pass --base to be sure" in table
    assert all(f"warning: {name}: " in table for name in wrong)
    assert not _guessed(measured)  # with a base nothing is guessed


@pytest.mark.parametrize("module, cls", [("gpt", "GPT"), ("dit", "DiT")])
def test_no_guess_warning_where_one_capture_is_right(module: str, cls: str) -> None:
    """The examples' GPT and DiT (heads grow, 256 fixed frequencies): one capture is right,
    and none of its parameters is called a guess."""
    import importlib

    with torch.device("meta"):
        model = getattr(importlib.import_module(f"examples.{module}"), cls)()
    assert _guessed(analyze(model)) == {}
