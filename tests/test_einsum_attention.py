"""Attention whose q and k keep the head size before the sequence axis.

guided-diffusion's ``QKVAttentionLegacy`` (the ADM U-Net) computes
``einsum("bct,bcs->bts", q * scale, k * scale)`` on q, k of shape (B*heads, ch, T), and
denoising-diffusion-pytorch's ``Attention`` ``einsum("bhdn,bhdm->bhnm", q, k)``: the head
size is the axis the product contracts, not q's last axis. The analysis used to read the
sequence length as d_head, call it fixed and leave the logits at 1/sqrt(d_head).

Each model is built at base width and at 2x and 4x with the number of heads fixed (d_head
grows); ``muprewrite.apply`` must equal the same model with muP written by hand: logits
times sqrt(d_head_base)/d_head in place of the model's own 1/sqrt(d_head), readout times
base_width/width (float64, 1e-10).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import muprewrite
from muprewrite import analyze

BASE, HEADS = 32, 2  # base width; the number of heads stays fixed
IMAGE = (2, 3, 4, 5)  # 20 tokens: no head size (16, 32, 64) equals the sequence length
Hand = tuple[int, int] | None  # (d_head at base width, base width): muP by hand; None: as is


class QKVAttentionLegacy(nn.Module):
    """guided-diffusion's legacy attention: heads folded into the batch, channels first."""

    def __init__(self, n_heads: int, hand: Hand = None) -> None:
        super().__init__()
        self.n_heads, self.hand = n_heads, hand

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape  # (B, 3*H*ch*, T)
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)  # (B*H, ch*, T)
        if self.hand is None:
            scale = 1 / math.sqrt(math.sqrt(ch))  # on q and k each: more stable in fp16
            weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)  # (B*H, T, T)
        else:
            weight = torch.einsum("bct,bcs->bts", q, k) * (math.sqrt(self.hand[0]) / ch)
        weight = torch.softmax(weight, dim=-1)  # ADM casts to float32 here: kept in float64
        a = torch.einsum("bts,bcs->bct", weight, v)  # (B*H, ch*, T)
        return a.reshape(bs, -1, length)  # (B, C*, T)


class ADMAttentionNet(nn.Module):
    """A stem convolution, ADM's AttentionBlock (GroupNorm, 1x1 qkv, legacy attention, 1x1
    projection; not zero-initialised here, so the test sees the attention), a readout conv."""

    def __init__(self, width: int, hand: Hand = None) -> None:
        super().__init__()
        self.hand = hand
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.GroupNorm(8, width)
        self.qkv = nn.Conv1d(width, 3 * width, 1)
        self.attention = QKVAttentionLegacy(HEADS, hand)
        self.proj_out = nn.Conv1d(width, width, 1)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(images)  # (B, C*, H, W)
        b, c, *spatial = x.shape
        h = x.reshape(b, c, -1)  # (B, C*, T)
        h = h + self.proj_out(self.attention(self.qkv(self.norm(h))))
        return _readout(self.conv_out, h.reshape(b, c, *spatial), self.hand)


class ChannelsFirstAttention(nn.Module):
    """denoising-diffusion-pytorch style: q, k, v as (B, heads, d_head, tokens)."""

    def __init__(self, width: int, form: str = "einsum", hand: Hand = None) -> None:
        super().__init__()
        self.form, self.hand = form, hand
        self.d_head = width // HEADS
        self.scale = self.d_head ** -0.5
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.to_qkv = nn.Conv2d(width, 3 * width, 1, bias=False)
        self.to_out = nn.Conv2d(width, width, 1)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(images)  # (B, C*, H, W)
        b, c, hh, ww = x.shape
        qkv = self.to_qkv(x).chunk(3, dim=1)  # 3 x (B, C*, H, W)
        q, k, v = (t.reshape(b, HEADS, self.d_head, hh * ww) for t in qkv)  # (B, H, D*, N)
        if self.hand is not None:  # muP by hand: sqrt(d_base)/d in place of 1/sqrt(d)
            q = q * (math.sqrt(self.hand[0]) / self.d_head)
        else:
            q = q * self.scale
        if self.form == "einsum":
            sim = torch.einsum("bhdn,bhdm->bhnm", q, k)  # (B, H, N, N)
        else:
            sim = q.transpose(-2, -1) @ k  # (B, H, N, D*) @ (B, H, D*, N)
        attn = sim.softmax(dim=-1)
        out = torch.einsum("bhnm,bhdm->bhdn", attn, v)  # (B, H, D*, N)
        x = x + self.to_out(out.reshape(b, c, hh, ww))
        return _readout(self.conv_out, x, self.hand)


def _readout(conv: nn.Conv2d, x: torch.Tensor, hand: Hand) -> torch.Tensor:
    """The readout convolution; by hand, muP's output multiplier base_width/width on it."""
    if hand is None:
        return conv(x)  # type: ignore[no-any-return]
    return F.conv2d(x, conv.weight * (hand[1] / x.shape[1]), conv.bias, padding=1)


def _adm(width: int, hand: Hand = None) -> nn.Module:
    return ADMAttentionNet(width, hand)


def _einsum(width: int, hand: Hand = None) -> nn.Module:
    return ChannelsFirstAttention(width, "einsum", hand)


def _matmul(width: int, hand: Hand = None) -> nn.Module:
    return ChannelsFirstAttention(width, "matmul", hand)


MODELS = [_adm, _einsum, _matmul]
IDS = ["adm-legacy-bct", "einsum-bhdn", "matmul-bhdn"]


def _images() -> torch.Tensor:
    return torch.randn(*IMAGE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("build", MODELS, ids=IDS)
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_apply_equals_the_logit_factor_written_by_hand(build, scale: int) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    width, images = BASE * scale, _images()
    model = build(width).double()
    hand = build(width, (BASE // HEADS, BASE)).double()
    hand.load_state_dict(model.state_dict())
    plain = copy.deepcopy(model)
    muprewrite.apply(model, (images,), base=build(BASE).double(), init=False)
    with torch.no_grad():
        got, expected = model(images), hand(images)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
        if scale > 1:  # the factor mattered
            assert not torch.allclose(plain(images), expected, rtol=1e-4)


@pytest.mark.parametrize("build", MODELS, ids=IDS)
def test_analyze_reports_the_contracted_head_size(build) -> None:  # type: ignore[no-untyped-def]
    with torch.device("meta"):
        model, base = build(4 * BASE), build(BASE)
    images = torch.randn(*IMAGE, device="meta")
    (site,) = analyze(model, images, base=base).attention
    assert (site.d_head, site.d_head_base, site.d_head_grows) == (64, 16, True)
    assert site.d_head_axis == (-1 if build is _matmul else -2)  # of q.transpose(-2, -1)
    (single,) = analyze(model, images, heads="fixed").attention
    assert (single.d_head, single.d_head_grows) == (64, True)


@pytest.mark.slow
def test_coord_check_is_flat_on_head_size_first_attention() -> None:
    """Issue 24's acceptance: ADM's legacy attention (einsum "bct,bcs->bts", the head size
    before the sequence axis) under mup, heads fixed and d_head growing: the output's RMS at
    each of three Adam steps stays flat in width (at init it shrinks with the readout
    multiplier base/width, as muP's output does until training moves it)."""
    from muprewrite.verify.coordcheck import coord_check

    check = {rule: coord_check(lambda w: _adm(w).double(), [BASE, 2 * BASE, 4 * BASE],
                               inputs=lambda m: _images(), rule=rule, steps=3, seeds=2)
             for rule in ("mup", "sp")}
    assert all(abs(check["mup"].slope("", step)) < 0.3 for step in (1, 2, 3)), check["mup"].rms
    assert check["sp"].slope("", 1) > 0.5, check["sp"].rms[""]  # the check can tell
