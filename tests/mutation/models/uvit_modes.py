"""A small U-ViT: time and class as tokens, long skips from the in-blocks to the out-blocks,
checkpointed blocks, and a module-level ``ATTENTION_MODE`` choosing the attention kernel
(``xformers`` is not installed here: that branch is never taken)."""

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

try:
    import xformers.ops
    ATTENTION_MODE = "xformers"
except ImportError:
    ATTENTION_MODE = "flash" if hasattr(F, "scaled_dot_product_attention") else "math"


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape  # C: width
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, C // self.num_heads)
        if ATTENTION_MODE == "flash":
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, L, Dh)
            x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, C)
        elif ATTENTION_MODE == "xformers":
            q, k, v = qkv.permute(2, 0, 1, 3, 4)  # (B, L, H, Dh)
            x = xformers.ops.memory_efficient_attention(q, k, v).reshape(B, L, C)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, L, L)
            x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, L, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, skip: bool = False,
                 use_checkpoint: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_checkpoint and self.training:
            return torch.utils.checkpoint.checkpoint(self._forward, x, skip, use_reentrant=False)
        return self._forward(x, skip)

    def _forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    def __init__(self, img_size: int = 8, patch_size: int = 2, in_chans: int = 3,
                 embed_dim: int = 32, depth: int = 3, num_heads: int = 2,
                 num_classes: int = 5) -> None:
        super().__init__()
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.patch_size, self.embed_dim = patch_size, embed_dim
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.time_embed = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.SiLU(),
                                        nn.Linear(4 * embed_dim, embed_dim))
        self.label_emb = nn.Embedding(num_classes, embed_dim)
        tokens = 2 + (img_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, embed_dim))
        self.in_blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(depth // 2))
        self.mid_block = Block(embed_dim, num_heads)
        self.out_blocks = nn.ModuleList(Block(embed_dim, num_heads, skip=True)
                                        for _ in range(depth // 2))
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size ** 2 * in_chans)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        t = self.time_embed(timestep_embedding(timesteps, self.embed_dim).to(x.dtype))
        x = torch.cat([t[:, None], self.label_emb(y)[:, None], x], dim=1) + self.pos_embed
        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk in self.out_blocks:
            x = blk(x, skips.pop())
        return self.decoder_pred(self.norm(x))[:, 2:]  # (B, N, p * p * C)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        device = self.pos_embed.device
        x = torch.randn(2, self.in_chans, self.img_size, self.img_size, device=device)
        t = torch.randint(0, 1000, (2,), device=device)
        return x, t, torch.randint(0, self.num_classes, (2,), device=device)
