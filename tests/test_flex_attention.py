"""``flex_attention``: its logits run inside a compiled kernel no edit reaches. Where d_head
grows (so the logits need a muP factor) the model is refused at the call; where heads grow at
fixed d_head (no factor) it is rewritten like any other."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.attention.flex_attention import flex_attention

import muprewrite
from muprewrite import CaptureError


class FlexNet(nn.Module):
    def __init__(self, width: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.embed, self.qkv = nn.Linear(4, width), nn.Linear(width, 3 * width)
        self.proj, self.head = nn.Linear(width, width), nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        B, N, C = h.shape
        q, k, v = self.qkv(h).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = flex_attention(q, k, v)
        return self.head(self.proj(y.transpose(1, 2).reshape(B, N, C)))


X = torch.randn(2, 8, 4)


def test_a_growing_head_size_is_refused_at_the_call() -> None:
    with torch.no_grad(), pytest.raises(CaptureError, match="flex_attention computes attention") as caught:
        muprewrite.apply(FlexNet(64), X, base=FlexNet(16))  # on CPU, export needs no_grad
    assert f"{__file__}:" in caught.value.where and "F.scaled_dot_product_attention" in caught.value.fix


def test_growing_heads_need_no_factor() -> None:
    with torch.no_grad():
        model = muprewrite.apply(FlexNet(64, 8), X, base=FlexNet(16, 2))
    assert muprewrite.plan_of(model)["head.weight"].multiplier == pytest.approx(0.25)


def test_the_meta_capture_says_what_to_do() -> None:
    with torch.device("meta"):
        model, base = FlexNet(64), FlexNet(16)
    with pytest.raises(CaptureError, match="FlexAttention") as caught:
        muprewrite.analyze(model, torch.randn(2, 8, 4, device="meta"), base=base)
    assert "scaled_dot_product_attention" in caught.value.fix
