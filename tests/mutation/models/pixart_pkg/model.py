"""PixArt-alpha-style model: adaLN-single (one shared time MLP, a per-block table), text
cross-attention, blocks imported from ``blocks.py`` relatively."""

import math

import torch
from torch import nn

from .blocks import MultiHeadCrossAttention, SelfAttention, T2IFinalLayer, t2i_modulate


class PixArtBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden_size, num_heads)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * hidden_size, hidden_size))
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size ** 0.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        mods = (self.scale_shift_table[None] + t.reshape(B, 6, -1)).chunk(6, dim=1)  # (B, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa * self.attn(t2i_modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn(x, y)
        return x + gate_mlp * self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp))


class PixArt(nn.Module):
    def __init__(self, input_size: int = 8, patch_size: int = 2, in_channels: int = 3,
                 hidden_size: int = 32, depth: int = 2, num_heads: int = 2,
                 caption_channels: int = 12, text_len: int = 4) -> None:
        super().__init__()
        self.input_size, self.in_channels = input_size, in_channels
        self.caption_channels, self.text_len = caption_channels, text_len
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.t_embedder = nn.Sequential(nn.Linear(16, hidden_size), nn.SiLU(),
                                        nn.Linear(hidden_size, hidden_size))
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = nn.Sequential(nn.Linear(caption_channels, hidden_size), nn.GELU(),
                                        nn.Linear(hidden_size, hidden_size))
        self.blocks = nn.ModuleList(PixArtBlock(hidden_size, num_heads) for _ in range(depth))
        self.final_layer = T2IFinalLayer(hidden_size, patch_size, in_channels)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, N, D)
        freqs = torch.exp(-math.log(1000.0) * torch.arange(8, device=x.device) / 8)
        angles = timestep[:, None].to(x.dtype) * freqs[None].to(x.dtype)
        t = self.t_embedder(torch.cat([angles.cos(), angles.sin()], dim=-1))  # (B, D)
        t0 = self.t_block(t)  # (B, 6 * D)
        y = self.y_embedder(y)  # (B, M, D)
        for block in self.blocks:
            x = block(x, y, t0)
        return self.final_layer(x, t)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        device = self.x_embedder.weight.device
        x = torch.randn(2, self.in_channels, self.input_size, self.input_size, device=device)
        t = torch.randint(0, 1000, (2,), device=device).double()
        return x, t, torch.randn(2, self.text_len, self.caption_channels, device=device)
