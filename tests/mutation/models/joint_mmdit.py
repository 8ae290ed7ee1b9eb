"""An SD3-style MMDiT: two streams (image patches, text tokens) with their own weights, one
joint attention over both, adaLN modulation from a pooled condition. Under ``completep``
every residual branch of both streams is scaled with the number of blocks.

    D  hidden_size (grows)    H  num_heads    Dh  head size = D / H
"""

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class StreamBlock(nn.Module):
    """One stream's half of a joint block: its own norms, qkv, output projection and MLP."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * hidden_size, hidden_size))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def pre_attention(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        mods = self.adaLN_modulation(c).chunk(6, dim=1)  # each (B, D)
        B, L, D = x.shape  # D: width
        qkv = self.qkv(modulate(self.norm1(x), mods[0], mods[1]))
        return qkv.view(B, L, 3, self.num_heads, D // self.num_heads), mods

    def post_attention(self, x: torch.Tensor, attn: torch.Tensor, mods: tuple) -> torch.Tensor:
        _s1, _c1, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa.unsqueeze(1) * self.proj(attn)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class JointBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.context_block = StreamBlock(hidden_size, num_heads)
        self.x_block = StreamBlock(hidden_size, num_heads)

    def forward(self, context: torch.Tensor, x: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx_qkv, ctx_mods = self.context_block.pre_attention(context, c)
        x_qkv, x_mods = self.x_block.pre_attention(x, c)
        qkv = torch.cat([ctx_qkv, x_qkv], dim=1)  # (B, Lc + Lx, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, L, Dh)
        y = F.scaled_dot_product_attention(q, k, v)
        B, _H, L, _Dh = y.shape
        y = y.transpose(1, 2).reshape(B, L, -1)  # (B, L, D)
        n = context.shape[1]
        context = self.context_block.post_attention(context, y[:, :n], ctx_mods)
        x = self.x_block.post_attention(x, y[:, n:], x_mods)
        return context, x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, out_dim: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, fixed)


class MMDiT(nn.Module):
    def __init__(self, input_size: int = 8, patch_size: int = 2, in_channels: int = 3,
                 hidden_size: int = 32, depth: int = 2, num_heads: int = 2,
                 context_dim: int = 12, pooled_dim: int = 10) -> None:
        super().__init__()
        self.input_size, self.in_channels = input_size, in_channels
        self.context_dim, self.pooled_dim = context_dim, pooled_dim
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, (input_size // patch_size) ** 2, hidden_size) * 0.02)
        self.t_embedder = nn.Sequential(nn.Linear(16, hidden_size), nn.SiLU(),
                                        nn.Linear(hidden_size, hidden_size))
        self.y_embedder = nn.Linear(pooled_dim, hidden_size)
        self.context_embedder = nn.Linear(context_dim, hidden_size)
        self.blocks = nn.ModuleList(JointBlock(hidden_size, num_heads) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size * patch_size * in_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        x = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)
        freqs = torch.exp(-9.2 * torch.arange(8, device=x.device, dtype=x.dtype) / 8)
        angles = t[:, None].to(x.dtype) * freqs[None]
        c = self.t_embedder(torch.cat([angles.cos(), angles.sin()], dim=-1)) + self.y_embedder(y)
        context = self.context_embedder(context)  # (B, M, D)
        for block in self.blocks:
            context, x = block(context, x, c)
        return self.final_layer(x, c)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        device = self.pos_embed.device
        x = torch.randn(2, self.in_channels, self.input_size, self.input_size, device=device)
        t = torch.randint(0, 1000, (2,), device=device)
        return (x, t, torch.randn(2, self.pooled_dim, device=device),
                torch.randn(2, 3, self.context_dim, device=device))
