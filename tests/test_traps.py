"""Known traps (DESIGN.md section 5): each classified right and explained in diagnostics."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from ground_truth import ground_truth_roles
from torch import nn

from muprewrite import CaptureError, analyze


class WidthTiedSinusoid(nn.Module):
    """Original U-ViT style: a timestep sinusoid as wide as the model, used as a token."""

    def __init__(self, d: int = 64, heads: int = 2) -> None:
        super().__init__()
        self.d, self.heads = d, heads
        self.inp = nn.Linear(8, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.out = nn.Linear(d, 8)
        self.unused = nn.Linear(d, d)
        self.frozen = nn.Parameter(torch.zeros(d), requires_grad=False)
        self.register_buffer("scale", torch.ones(d))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        half = self.d // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, device=x.device) / half)
        angles = t[:, None].float() * freqs[None]
        token = torch.cat([torch.cos(angles), torch.sin(angles)], -1)[:, None]
        h = torch.cat([token, self.inp(x)], 1) + self.frozen * self.scale
        B, N, D = h.shape
        q, k, v = self.qkv(h).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        h = h + self.proj(o)
        return self.out(h[:, 1:])


def _inputs(model: nn.Module) -> tuple:
    device = next(model.parameters()).device
    return torch.randn(2, 5, 8, device=device), torch.randint(0, 1000, (2,), device=device)


def test_width_tied_constant_is_width_and_flagged() -> None:
    with torch.device("meta"):
        wide, small = WidthTiedSinusoid(128, 4), WidthTiedSinusoid(64, 2)
    truth = ground_truth_roles(wide, small)
    report = analyze(wide, _inputs(wide))
    used = {n for n in truth if not n.startswith("unused.")}
    assert {n: report[n].role for n in used} == {n: truth[n] for n in used}
    flagged = [d for d in report.diagnostics if d.code == "width-constant"]
    assert flagged and "arange" in flagged[0].where and "test_traps.py" in flagged[0].where


def test_unused_frozen_and_buffers_are_reported_not_guessed() -> None:
    with torch.device("meta"):
        model = WidthTiedSinusoid(128, 4)
    report = analyze(model, _inputs(model))
    assert report["unused.weight"].role == "unused" and report["unused.weight"].uses == ()
    assert any(d.code == "unused" and d.where == "unused.weight" for d in report.diagnostics)
    assert report["frozen"].trainable is False and report["frozen"].role == "input"
    assert [(b.name, b.width_axes) for b in report.buffers] == [("scale", (0,))]


def test_backbone_returning_hidden_states() -> None:
    transformers = pytest.importorskip("transformers")

    def vit(scale: int) -> nn.Module:
        config = transformers.ViTConfig(hidden_size=32 * scale, num_hidden_layers=2,
                                        num_attention_heads=2 * scale,
                                        intermediate_size=64 * scale, image_size=16,
                                        patch_size=4, num_channels=3)
        return transformers.ViTModel(config, add_pooling_layer=False)

    with torch.device("meta"):
        wide, small = vit(2), vit(1)
    truth = ground_truth_roles(wide, small)
    report = analyze(wide, torch.randn(2, 3, 16, 16, device="meta"))
    assert report.roles() == truth
    assert any(d.code == "width-output" for d in report.diagnostics)


class RoundedFF(nn.Module):
    """AuraFlow-style FF width rounded up to a multiple of 256: looks fixed at small widths."""

    def __init__(self, d: int) -> None:
        super().__init__()
        ff = 256 * math.ceil(4 * d / 256)
        self.inp, self.up, self.down, self.out = nn.Linear(4, d), nn.Linear(d, ff), nn.Linear(ff, d), nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.down(F.gelu(self.up(h)))
        return self.out(h)


def test_rounded_width_axis_is_flagged_with_base() -> None:
    with torch.device("meta"):
        wide, small = RoundedFF(64), RoundedFF(32)  # ff = 256 at both widths
    report = analyze(wide, torch.randn(2, 4, device="meta"), base=small)
    assert report.roles() == ground_truth_roles(wide, small)  # base mode reports what it measured
    flagged = {d.where for d in report.diagnostics if d.code == "looks-fixed"}
    assert "up.weight axis 0" in flagged and "down.weight axis 1" in flagged
    single = analyze(wide, torch.randn(2, 4, device="meta"))
    assert single["up.weight"].role == "hidden"  # structure alone sees it as a width axis


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum().item() > 0:  # the line the error must name
            return self.lin(x)
        return x


def test_capture_error_names_module_line_and_fix() -> None:
    line = next(i for i, text in enumerate(inspect.getsourcelines(DataDependent.forward)[0])
                if ".item()" in text) + DataDependent.forward.__code__.co_firstlineno
    with pytest.raises(CaptureError) as info:
        analyze(DataDependent(), torch.randn(2, 4))
    text = str(info.value)
    assert "DataDependent" in text and f"test_traps.py:{line}" in text
    assert "fix:" in text and ".item()" in text
