"""Models written twice: plainly (for muprewrite) and by hand in the mup package's form
(MuReadout, attention scale sqrt(d_base)/d_head), the oracle for the `mup` rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IN, OUT, SEQ, BASE_HEAD_DIM = 12, 7, 5, 8


def readout(width: int, hand_mup: bool) -> nn.Module:
    if hand_mup:
        import mup

        return mup.MuReadout(width, OUT)
    return nn.Linear(width, OUT)


class MLP(nn.Module):
    def __init__(self, width: int, hand_mup: bool = False) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(IN, width), nn.Linear(width, width)
        self.out = readout(width, hand_mup)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(4, IN, dtype=self.fc1.weight.dtype),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Transformer(nn.Module):
    """Pre-norm blocks, two heads whose d_head grows with width (so attention is rescaled)."""

    def __init__(self, width: int, depth: int = 2, hand_mup: bool = False) -> None:
        super().__init__()
        self.heads, self.hand_mup = 2, hand_mup
        self.embed = nn.Linear(IN, width)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "norm1": nn.LayerNorm(width), "qkv": nn.Linear(width, 3 * width),
            "proj": nn.Linear(width, width), "norm2": nn.LayerNorm(width),
            "fc1": nn.Linear(width, 4 * width), "fc2": nn.Linear(4 * width, width),
        }) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = readout(width, hand_mup)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(3, SEQ, IN, dtype=self.embed.weight.dtype),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        B, N, D = h.shape
        d_head = D // self.heads
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["norm1"](h)).view(B, N, 3, self.heads, d_head).permute(2, 0, 3, 1, 4)
            # the hand-written muP form: 1/d_head attention, equal to 1/sqrt(d_head) at base
            scale = BASE_HEAD_DIM ** 0.5 / d_head if self.hand_mup else None
            a = F.scaled_dot_product_attention(q, k, v, scale=scale)
            h = h + blk["proj"](a.transpose(1, 2).reshape(B, N, D))
            h = h + blk["fc2"](F.gelu(blk["fc1"](blk["norm2"](h))))
        return self.out(self.norm(h))
