"""Models whose depth is not one module per block, for tests/test_depth_shared.py.

Written from scratch in the styles of public code: an ALBERT-like encoder that applies one
block object ``n_layers`` times, a stack listing one block object several times, a stack
whose forward runs its first block again, and a seq2seq Transformer (pre-LN encoder and
decoder stacks of their own depths, cross-attention reading the encoder's output). Every
``forward`` takes the by-hand branch multiplier(s) ``s``: each residual branch is added as
``x + s * f(x)``, ``s = 1`` leaves the graph as a user writes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 11


def _scaled(t: torch.Tensor, s: float) -> torch.Tensor:
    return t if s == 1.0 else s * t


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, -1)
        if memory is not None:  # cross-attention: keys and values from the encoder
            _, k, v = self.qkv(memory).split(d, -1)
        q, k, v = (z.reshape(b, z.shape[1], self.heads, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, s: float = 1.0) -> torch.Tensor:
        x = x + _scaled(self.attn(self.ln1(x)), s)
        return x + _scaled(self.mlp(self.ln2(x)), s)


class DecoderBlock(Block):
    """x + cross(ln(x), memory) before the self-attention and MLP branches."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.ln_x, self.cross = nn.LayerNorm(dim), Attention(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,  # type: ignore[override]
                s: float = 1.0) -> torch.Tensor:
        x = x + _scaled(self.cross(self.ln_x(x), memory), s)
        return super().forward(x, s)


class _Tokens(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randint(0, VOCAB, (2, 6)),)


class SharedBlock(_Tokens):
    """ALBERT-style: one block object applied ``n_layers`` times."""

    def __init__(self, dim: int = 16, n_layers: int = 2) -> None:
        super().__init__(dim)
        self.n_layers = n_layers
        self.block = Block(dim)

    def forward(self, idx: torch.Tensor, s: float = 1.0) -> torch.Tensor:
        x = self.embed(idx)
        for _ in range(self.n_layers):
            x = self.block(x, s)
        return self.head(self.ln_f(x))


class RepeatedList(_Tokens):
    """One block object listed ``n_layers`` times in a ModuleList."""

    def __init__(self, dim: int = 16, n_layers: int = 2) -> None:
        super().__init__(dim)
        block = Block(dim)
        self.blocks = nn.ModuleList([block] * n_layers)

    def forward(self, idx: torch.Tensor, s: float = 1.0) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, s)
        return self.head(self.ln_f(x))


class FirstAgain(_Tokens):
    """Distinct blocks, then the first block once more: ``n_layers + 1`` block calls."""

    def __init__(self, dim: int = 16, n_layers: int = 2) -> None:
        super().__init__(dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(n_layers))

    def forward(self, idx: torch.Tensor, s: float = 1.0) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, s)
        x = self.blocks[0](x, s)
        return self.head(self.ln_f(x))


class Seq2Seq(nn.Module):
    """Encoder and decoder stacks of their own depths; the decoder's residual stream starts
    from the target embedding and reads the encoder only through cross-attention."""

    def __init__(self, dim: int = 16, n_enc: int = 2, n_dec: int = 2) -> None:
        super().__init__()
        self.src_embed, self.tgt_embed = nn.Embedding(VOCAB, dim), nn.Embedding(VOCAB, dim)
        self.encoder = nn.ModuleList(Block(dim) for _ in range(n_enc))
        self.decoder = nn.ModuleList(DecoderBlock(dim) for _ in range(n_dec))
        self.ln_enc, self.ln_f = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, s_enc: float = 1.0,
                s_dec: float = 1.0) -> torch.Tensor:
        x = self.src_embed(src)
        for block in self.encoder:
            x = block(x, s_enc)
        memory = self.ln_enc(x)
        y = self.tgt_embed(tgt)
        for block in self.decoder:
            y = block(y, memory, s_dec)
        return self.head(self.ln_f(y))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return torch.randint(0, VOCAB, (2, 6)), torch.randint(0, VOCAB, (2, 5))


class TiedMLP(Seq2Seq):
    """Every decoder block reuses the first encoder block's MLP (a weight on two streams)."""

    def __init__(self, dim: int = 16, n_enc: int = 2, n_dec: int = 2) -> None:
        super().__init__(dim, n_enc, n_dec)
        for block in self.decoder:
            block.mlp = self.encoder[0].mlp
