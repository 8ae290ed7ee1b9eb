"""More diffusers models: Flux (double + single stream, RoPE) and AuraFlow (rounded FF width)."""

from __future__ import annotations

import pytest
import torch
from ground_truth import ground_truth_roles

from muprewrite import analyze

diffusers = pytest.importorskip("diffusers")


def _flux(scale: int, fixed_heads: bool) -> torch.nn.Module:
    heads, dim = (2, 16 * scale) if fixed_heads else (2 * scale, 16)
    rope = (4 * scale, 6 * scale, 6 * scale) if fixed_heads else (4, 6, 6)
    return diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=dim,
        num_attention_heads=heads, joint_attention_dim=32, pooled_projection_dim=16,
        guidance_embeds=True, axes_dims_rope=rope)


def _flux_inputs(model: torch.nn.Module) -> tuple[tuple, dict]:
    dev = next(model.parameters()).device
    return (), dict(hidden_states=torch.randn(2, 16, 16, device=dev),
                    encoder_hidden_states=torch.randn(2, 6, 32, device=dev),
                    pooled_projections=torch.randn(2, 16, device=dev),
                    timestep=torch.ones(2, device=dev), img_ids=torch.zeros(16, 3, device=dev),
                    txt_ids=torch.zeros(6, 3, device=dev), guidance=torch.ones(2, device=dev),
                    return_dict=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "base"])
@pytest.mark.parametrize("heads", ["grow", "fixed"])
def test_flux_roles(heads: str, mode: str) -> None:
    with torch.device("meta"):
        wide, small = _flux(2, heads == "fixed"), _flux(1, heads == "fixed")
    report = analyze(wide, _flux_inputs(wide), heads=heads,  # type: ignore[arg-type]
                     base=small if mode == "base" else None)
    truth = ground_truth_roles(wide, small)
    assert {n: (report[n].role, t) for n, t in truth.items() if report[n].role != t} == {}


def _aura(width: int) -> torch.nn.Module:
    return diffusers.AuraFlowTransformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
        attention_head_dim=16, num_attention_heads=width // 16, joint_attention_dim=32,
        caption_projection_dim=width, out_channels=4, pos_embed_max_size=16)


def _aura_inputs(model: torch.nn.Module) -> tuple[tuple, dict]:
    dev = next(model.parameters()).device
    return (), dict(hidden_states=torch.randn(2, 4, 8, 8, device=dev),
                    encoder_hidden_states=torch.randn(2, 6, 32, device=dev),
                    timestep=torch.ones(2, device=dev), return_dict=False)


@pytest.mark.slow
def test_auraflow_rounded_ff_width() -> None:
    with torch.device("meta"):
        m32, m64, m128, m256 = (_aura(w) for w in (32, 64, 128, 256))
    # FF width rounds up to a multiple of 256: 256 at widths 32 and 64, 512 / 768 at 128 / 256.
    truth = ground_truth_roles(m256, m128)
    single = analyze(m256, _aura_inputs(m256))
    assert single.roles() == truth
    assert analyze(m64, _aura_inputs(m64)).roles() == ground_truth_roles(m256, m128)
    near = analyze(m64, _aura_inputs(m64), base=m32)  # measures 256 == 256: says so, loudly
    flagged = {d.where.split(" axis")[0] for d in near.diagnostics if d.code == "looks-fixed"}
    assert {n for n, r in truth.items() if r == "hidden" and ".ff" in n} <= flagged
    # at width 256 its 256-channel timestep sinusoid is as wide as the model: flagged, nothing else
    warned = {d.code for d in single.diagnostics if d.severity == "warning"}
    assert warned <= {"width-sized-constant"}
