"""A small DiT with adaLN-Zero: every block's modulation and the final layer start at zero.

At init the model's output is exactly zero (the final linear is zero), so a loss at init is
flat; only a model moved off its init shows a missing readout or attention factor.

    D  width (grows)    H  heads    Dh  head size = D / H
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimeEmbed(nn.Module):
    def __init__(self, width: int, freq: int = 16) -> None:
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq // 2
        rates = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * rates[None]  # (B, freq / 2)
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1).to(self.mlp[0].weight.dtype))


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape  # D: width
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)
        return self.out(y.transpose(1, 2).reshape(B, N, D))


class AdaLNBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, g1, a1, s2, g2, a2 = self.ada(c).chunk(6, dim=1)  # each (B, D)
        x = x + a1.unsqueeze(1) * self.attn(modulate(self.norm1(x), s1, g1))
        return x + a2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), s2, g2))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, out_dim): fixed


class TinyDiT(nn.Module):
    def __init__(self, width: int = 32, heads: int = 2, depth: int = 2, patch: int = 2,
                 channels: int = 3, size: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.patch, self.channels, self.size, self.classes = patch, channels, size, classes
        self.embed = nn.Conv2d(channels, width, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, (size // patch) ** 2, width))
        self.t_embed = TimeEmbed(width)
        self.y_embed = nn.Embedding(classes, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width, heads) for _ in range(depth))
        self.final = FinalLayer(width, patch * patch * channels)
        self.initialize()

    def initialize(self) -> None:
        nn.init.normal_(self.pos, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for layer in (self.final.ada[-1], self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)
        c = self.t_embed(t) + self.y_embed(y)  # (B, D)
        for block in self.blocks:
            h = block(h, c)
        return self.final(h, c)  # (B, N, p * p * C)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        device = self.pos.device
        x = torch.randn(2, self.channels, self.size, self.size, device=device)
        t = torch.randint(0, 1000, (2,), device=device)
        return x, t, torch.randint(0, self.classes, (2,), device=device)
