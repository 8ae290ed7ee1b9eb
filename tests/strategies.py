"""Hypothesis strategies drawing random architectures (see random_arch.py) and widths."""

from __future__ import annotations

from hypothesis import strategies as st
from random_arch import BlockSpec, NetSpec


@st.composite
def block_specs(draw: st.DrawFn) -> BlockSpec:
    kind = draw(st.sampled_from(["mlp", "attn", "cross", "joint"]))
    attention = kind != "mlp"
    return BlockSpec(
        kind=kind,
        fused_qkv=draw(st.booleans()) if attention else True,
        explicit=draw(st.booleans()) if attention else False,
        qk_norm=draw(st.booleans()) if attention else False,
        rms=draw(st.booleans()),
        pre_norm=draw(st.booleans()),
        adaln=draw(st.booleans()),
        gated=draw(st.booleans()) if not attention else False,
        via_param=draw(st.booleans()) if not attention else False,
    )


@st.composite
def net_specs(draw: st.DrawFn) -> NetSpec:
    stem = draw(st.sampled_from(["linear", "embedding", "conv"]))
    blocks = tuple(draw(st.lists(block_specs(), min_size=1, max_size=4)))
    return NetSpec(
        stem=stem, blocks=blocks, heads=draw(st.sampled_from(["grow", "fixed"])),
        tied=draw(st.booleans()) if stem == "embedding" else False,
        long_skip=draw(st.booleans()), share_first=draw(st.booleans()),
        frozen_table=draw(st.booleans()), einsum_readout=draw(st.booleans()),
    )


widths = st.sampled_from([(32, 16), (48, 16), (64, 32)])  # (width, base width)
