"""Residual-stream analysis (muprewrite.analysis.residual): branches, blocks, depth, the
module each branch scales through, pre/post-LN, and which parameters sit inside branches.

Models are built small on the meta device; every count below is exact (no false branch).
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from random_arch import BlockSpec, NetSpec, RandomNet, residual_truth
from torch import nn

from muprewrite.analysis.residual import ResidualStream, find_residuals
from muprewrite.capture.export import capture


def _analyse(model: nn.Module, *args: Any, **kwargs: Any) -> ResidualStream:
    return find_residuals(capture(model, [(args, kwargs)]))


def _example(module: str, cls: str, **kwargs: Any) -> tuple[nn.Module, ResidualStream]:
    with torch.device("meta"):
        model = getattr(importlib.import_module(f"examples.{module}"), cls)(**kwargs)
    return model, _analyse(model, *model.example_inputs())


def _blocks(stream: ResidualStream) -> dict[str, list[str]]:
    """block -> the modules of its branches, in graph order."""
    out: dict[str, list[str]] = {}
    for b in stream.branches:
        out.setdefault(b.block, []).append(b.module)
    return out


# ----------------------------------------------------------------------------- examples


@pytest.mark.parametrize("depth", [2, 3])
def test_gpt(depth: int) -> None:
    _, stream = _example("gpt", "GPT", n_layer=depth)
    assert stream.depth == depth and len(stream.branches) == 2 * depth
    assert _blocks(stream) == {f"transformer.h.{i}": [f"transformer.h.{i}.attn",
                                                      f"transformer.h.{i}.mlp"]
                               for i in range(depth)}
    assert {b.norm for b in stream.branches} == {"pre"}
    assert all(b.source.endswith(("gpt.py:79", "gpt.py:80")) for b in stream.branches)
    assert stream.long_skips == () and stream.diagnostics == ()
    inside = {"transformer.h.0.attn.c_attn.weight", "transformer.h.0.ln_1.weight",
              f"transformer.h.{depth - 1}.mlp.c_proj.bias", "transformer.h.1.ln_2.bias"}
    outside = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"}
    assert inside <= stream.inside and not outside & stream.inside


@pytest.mark.parametrize("depth", [2, 3])
def test_dit(depth: int) -> None:
    _, stream = _example("dit", "DiT", depth=depth)
    assert stream.depth == depth and len(stream.branches) == 2 * depth
    assert _blocks(stream) == {f"blocks.{i}": [f"blocks.{i}.attn", f"blocks.{i}.mlp"]
                               for i in range(depth)}
    assert {b.norm for b in stream.branches} == {"pre"}
    # the gate multiplies the branch: the module is the attention / MLP before it
    assert all(b.module_output != b.branch for b in stream.branches)
    # adaLN modulation only gates / shifts its block's branches: inside; the timestep MLP
    # feeds every block's modulation and the final layer: outside
    assert {"blocks.0.adaLN_modulation.1.weight", "blocks.1.attn.qkv.weight",
            "blocks.1.mlp.fc2.bias"} <= stream.inside
    assert not {"t_embedder.mlp.0.weight", "t_embedder.mlp.2.weight",
                "y_embedder.embedding_table.weight", "x_embedder.proj.weight", "pos_embed",
                "final_layer.linear.weight", "final_layer.adaLN_modulation.1.weight"
                } & stream.inside


@pytest.mark.parametrize("depth", [3, 5])
def test_uvit(depth: int) -> None:
    _, stream = _example("uvit", "UViT", depth=depth)
    half = depth // 2
    blocks = ([f"in_blocks.{i}" for i in range(half)] + ["mid_block"]
              + [f"out_blocks.{i}" for i in range(half)])
    assert stream.depth == depth and len(stream.branches) == 2 * depth
    assert _blocks(stream) == {k: [f"{k}.attn", f"{k}.mlp"] for k in blocks}
    # U-ViT's long skips concatenate (skip_linear(cat([x, skip]))): there is no add, so they
    # are neither branches nor long skips; skip_linear sits on the stream (outside)
    assert stream.long_skips == ()
    assert "in_blocks.0.attn.qkv.weight" in stream.inside
    assert not {"out_blocks.0.skip_linear.weight", "pos_embed", "norm.weight",
                "time_embed.0.weight", "decoder_pred.weight"} & stream.inside


@pytest.mark.parametrize("depth", [2, 3])
def test_pixart(depth: int) -> None:
    _, stream = _example("pixart", "PixArtAlpha", depth=depth)
    assert stream.depth == depth and len(stream.branches) == 3 * depth
    assert _blocks(stream) == {f"blocks.{i}": [f"blocks.{i}.{m}" for m in
                                               ("attn", "cross_attn", "mlp")]
                               for i in range(depth)}
    # the cross-attention branch reads the stream without a norm
    assert [b.norm for b in stream.branches[:3]] == ["pre", "none", "pre"]
    assert {"blocks.0.scale_shift_table", "blocks.1.cross_attn.kv_linear.weight"
            } <= stream.inside
    # t_block and the caption projection act on the stream only through branches: inside;
    # the timestep MLP also feeds the final layer: outside
    assert {"t_block.1.weight", "y_embedder.fc1.weight"} <= stream.inside
    assert not {"t_embedder.mlp.0.weight", "final_layer.scale_shift_table",
                "final_layer.linear.weight", "x_embedder.proj.weight"} & stream.inside


@pytest.mark.parametrize("depth", [2, 3])
def test_mmdit_two_streams(depth: int) -> None:
    _, stream = _example("mmdit", "MMDiT", depth=depth)
    # image and context streams; the last block's context stream is pre-only (no branch)
    assert stream.depth == depth and len(stream.branches) == 4 * depth - 2
    both = ["x_block.proj", "x_block.mlp", "context_block.proj", "context_block.mlp"]
    expected = {f"blocks.{i}": [f"blocks.{i}.{m}" for m in both] for i in range(depth - 1)}
    expected[f"blocks.{depth - 1}"] = [f"blocks.{depth - 1}.{m}" for m in both[:2]]
    assert _blocks(stream) == expected
    assert {b.norm for b in stream.branches} == {"pre"}
    last = f"blocks.{depth - 1}.context_block"
    assert {f"{last}.q.weight", f"{last}.adaLN_modulation.1.weight",
            "blocks.0.context_block.mlp.fc1.weight"} <= stream.inside
    assert not {"context_embedder.weight", "x_embedder.proj.weight", "y_embedder.mlp.0.weight",
                "t_embedder.mlp.2.weight", "final_layer.linear.weight"} & stream.inside


def test_several_input_sets_keep_depth() -> None:
    with torch.device("meta"):
        model = importlib.import_module("examples.gpt").GPT(n_layer=2)
    idx = model.example_inputs()[0]
    stream = find_residuals(capture(model, [((idx,), {}), ((idx[:, :5],), {})]))
    assert stream.depth == 2 and len(stream.branches) == 8
    assert all(b.module for b in stream.branches)  # every call of the module is a branch


# ----------------------------------------------------------------------------- hand-written


def test_post_ln_transformer_encoder() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
    post = _analyse(nn.TransformerEncoder(layer, 3, enable_nested_tensor=False),
                    torch.randn(2, 4, 16))
    assert post.depth == 3 and len(post.branches) == 6
    assert {b.norm for b in post.branches} == {"post"}
    assert [b.module for b in post.branches[:2]] == ["layers.0.self_attn", "layers.0.linear2"]
    assert [d.code for d in post.diagnostics] == ["post-ln"]
    assert post.diagnostics[0].severity == "warning"
    # the norms act on the stream: outside; the attention and FFN weights: inside
    assert "layers.0.norm1.weight" not in post.inside
    assert {"layers.0.self_attn.in_proj_weight", "layers.2.linear1.weight"} <= post.inside

    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
    pre = _analyse(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                   torch.randn(2, 4, 16))
    assert {b.norm for b in pre.branches} == {"pre"} and pre.diagnostics == ()
    assert "layers.0.norm1.weight" in pre.inside


class _PreNormAttention(nn.Module):
    """vit-pytorch style: the branch module holds its own pre-norm."""

    def __init__(self, width: int, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.norm = heads, nn.LayerNorm(width)
        self.to_qkv, self.to_out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2)  # (b, heads, n, d_head)
                   for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _PreNormFeedForward(nn.Sequential):
    def __init__(self, width: int) -> None:
        super().__init__(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                         nn.Linear(2 * width, width))


class _VitTransformer(nn.Module):
    """The blocks' loop and the final norm in one module, as vit-pytorch writes it."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.layers = nn.ModuleList(nn.ModuleList([_PreNormAttention(width),
                                                   _PreNormFeedForward(width)])
                                    for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:  # type: ignore[misc]
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


def test_final_norm_after_pre_ln_blocks_is_no_post_ln() -> None:
    """Issue 20: the final norm run after the last pre-LN block, inside the module hosting
    the adds, was taken for a post-LN norm of the last branch (a false ``post-ln``)."""
    model = nn.Module()
    model.embed, model.transformer = nn.Linear(3, 16), _VitTransformer(16, 2)
    model.forward = lambda x: model.transformer(model.embed(x)).mean(1)  # type: ignore[method-assign]
    stream = _analyse(model, torch.randn(2, 5, 3))
    assert len(stream.branches) == 4 and stream.depth == 2
    assert [b.norm for b in stream.branches] == ["pre"] * 4
    assert stream.diagnostics == ()
    assert "transformer.norm.weight" not in stream.inside


class _RMSNorm(nn.Module):
    """Hand-written (no aten norm op)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class _PostBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(width, 2 * width), nn.Linear(2 * width, width), _RMSNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.fc2(F.relu(self.fc1(x))))


class _Stack(nn.Module):
    def __init__(self, block: type[nn.Module], depth: int, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(3, width)
        self.blocks = nn.ModuleList(block(width) for _ in range(depth))  # type: ignore[call-arg]
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def test_post_ln_hand_written_norm() -> None:
    stream = _analyse(_Stack(_PostBlock, 3), torch.randn(2, 5, 3))
    assert len(stream.branches) == 3 and stream.depth == 3
    assert [b.norm for b in stream.branches] == ["post"] * 3
    assert [b.module for b in stream.branches] == [f"blocks.{i}.fc2" for i in range(3)]
    assert "post-ln" in [d.code for d in stream.diagnostics]
    assert "blocks.1.norm.weight" not in stream.inside and "blocks.1.fc1.weight" in stream.inside


class _LayerScale(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _DropPath(nn.Module):
    """timm-style: the mask is built from ``x.new_empty`` (shape only, not x's values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        mask = x.new_empty((x.shape[0], 1, 1)).bernoulli_(0.9)
        return x.div(0.9) * mask


class _Attention(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)  # (B, 1, N, D) each
        return self.proj(F.scaled_dot_product_attention(q, k, v).squeeze(1))


class _GatedBlock(nn.Module):
    """x + drop_path(layer_scale(gate * attn(norm(x)))), gate from a condition."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.attn = nn.LayerNorm(width), _Attention(width)
        self.gate = nn.Linear(width, width)
        self.ls, self.drop_path = _LayerScale(width), _DropPath()
        self.ls2 = nn.Parameter(torch.full((width,), 1e-2))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls(self.gate(c).unsqueeze(1) * self.attn(self.norm(x))))
        # the same with layer-scale and drop-path written inline, then dropout
        keep = (torch.rand(x.shape[0], 1, 1, device=x.device) < 0.9).to(x.dtype)
        return x + F.dropout(self.attn(self.norm(x)) * self.ls2 * keep / 0.9, 0.1)


class _GatedNet(nn.Module):
    def __init__(self, depth: int, width: int = 16) -> None:
        super().__init__()
        self.embed, self.cond = nn.Linear(3, width), nn.Linear(2, width)
        self.blocks = nn.ModuleList(_GatedBlock(width) for _ in range(depth))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h, c = self.embed(x), self.cond(c)
        for block in self.blocks:
            h = block(h, c)
        return h


def test_gates_layer_scale_drop_path_are_crossed() -> None:
    stream = _analyse(_GatedNet(2), torch.randn(2, 4, 3), torch.randn(2, 2))
    assert stream.depth == 2 and len(stream.branches) == 4
    # the attention is called twice per block: a hook on it scales both branches
    assert [b.module for b in stream.branches] == ["blocks.0.attn"] * 2 + ["blocks.1.attn"] * 2
    assert all(b.module_output.startswith("linear") for b in stream.branches)
    assert {"blocks.0.gate.weight", "blocks.0.ls.gamma", "blocks.1.ls2"} <= stream.inside
    # cond reaches the stream only through the gates of every block: inside, like PixArt's
    # t_block (a DiT timestep MLP that also feeds the final layer is outside)
    assert "cond.weight" in stream.inside and "embed.weight" not in stream.inside


class _InlineBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.fc(x))


def test_inline_branch_has_no_module() -> None:
    stream = _analyse(_Stack(_InlineBlock, 2), torch.randn(2, 5, 3))
    assert [(b.block, b.module, b.module_output) for b in stream.branches] == [
        ("blocks.0", "", ""), ("blocks.1", "", "")]
    assert all(b.source.endswith(f":{_InlineBlock.forward.__code__.co_firstlineno + 1}")
               for b in stream.branches)


class _SharedOutput(nn.Module):
    """The MLP's output also feeds an auxiliary value: a hook on it would change that too."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        self.attn = _Attention(width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(x)
        x = x + h
        return x + self.attn(x), h.mean()


def test_module_used_elsewhere_is_refused() -> None:
    stream = _analyse(_SharedOutput(), torch.randn(2, 4, 16))
    assert [b.module for b in stream.branches] == ["", "attn"]
    # adds written in the root forward, modules without an index: each branch its own block
    assert [b.block for b in stream.branches] == [stream.branches[0].add, "attn"]


class _Nested(nn.Module):
    """An MLP with a residual inside it (no branch of its own) and a U-Net-style additive
    long skip over all blocks (a long skip, no branch)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.fc1, self.fc_mid, self.fc2 = (nn.Linear(width, width) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.fc1(x)
        a = a + F.gelu(self.fc_mid(a))
        return x + self.fc2(a)


class _UNetSkip(_Stack):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = first = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h + first)


def test_nested_add_and_additive_long_skip() -> None:
    stream = _analyse(_UNetSkip(_Nested, 3), torch.randn(2, 5, 3))
    assert len(stream.branches) == 3 and stream.depth == 3
    assert [b.module for b in stream.branches] == [f"blocks.{i}.fc2" for i in range(3)]
    assert len(stream.long_skips) == 1 and stream.long_skips[0].endswith(".py:" + str(
        _UNetSkip.forward.__code__.co_firstlineno + 4))
    assert "blocks.0.fc_mid.weight" in stream.inside and "embed.weight" not in stream.inside


class _Parallel(nn.Module):
    """GPT-J / PaLM parallel block, added one branch at a time."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.attn = nn.LayerNorm(width), _Attention(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return x + self.attn(h) + self.mlp(h)


def test_parallel_branches() -> None:
    stream = _analyse(_Stack(_Parallel, 2), torch.randn(2, 5, 3))
    assert stream.depth == 2
    assert [(b.block, b.module, b.norm) for b in stream.branches] == [
        (f"blocks.{i}", f"blocks.{i}.{m}", "pre") for i in range(2) for m in ("attn", "mlp")]
    assert stream.branches[1].stream == stream.branches[0].add
    assert {"blocks.0.norm.weight", "blocks.1.mlp.2.weight"} <= stream.inside


class _NoResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(4, 8))
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x) + self.pos  # not derived from the stream
        logits = h @ h.transpose(-1, -2) + mask  # mask not derived from the logits
        return self.fc2(logits.softmax(-1) @ h + 1.0)


def test_no_residual() -> None:
    stream = _analyse(_NoResidual(), torch.randn(2, 4, 8), torch.zeros(4, 4))
    assert stream.branches == () and stream.depth == 0 and stream.inside == frozenset()
    assert [(d.severity, d.code) for d in stream.diagnostics] == [("info", "no-residual")]


# ----------------------------------------------------------------------------- libraries


def _zoo(name: str) -> Any:
    pytest.importorskip(name.split(".")[0])
    from zoo_library import library_zoo

    return next(z for z in library_zoo() if z.name == name)


@pytest.mark.slow
@pytest.mark.parametrize("name, branches, modules", [
    ("diffusers.DiTTransformer2DModel", 4, ("attn1", "ff")),
    ("diffusers.PixArtTransformer2DModel", 6, ("attn1", "attn2", "ff")),
    ("diffusers.SD3Transformer2DModel", 6, ("attn", "ff", "attn", "ff_context")),
    ("transformers.GPT2LMHeadModel", 4, ("attn", "mlp")),
    ("transformers.LlamaForCausalLM", 4, ("self_attn", "mlp")),
])
def test_library_models(name: str, branches: int, modules: tuple[str, ...]) -> None:
    zoo = _zoo(name)
    with torch.device("meta"):
        model = zoo.build(1)
    args, kwargs = zoo.example_inputs(model)
    stream = _analyse(model, *args, **kwargs)
    assert stream.depth == 2 and len(stream.branches) == branches  # the zoo builds 2 layers
    first = [b for b in stream.branches if b.block == stream.branches[0].block]
    assert tuple(b.module.rsplit(".", 1)[-1] for b in first) == modules
    assert {b.norm for b in stream.branches} <= {"pre", "none"}
    assert not [d for d in stream.diagnostics if d.severity == "warning"]


@pytest.mark.slow
def test_flux_double_and_single_blocks() -> None:
    pytest.importorskip("diffusers")
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=8, num_layers=2, num_single_layers=3,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
            pooled_projection_dim=16, guidance_embeds=False, axes_dims_rope=(4, 6, 6))
    meta = {"device": "meta"}
    stream = _analyse(
        model, hidden_states=torch.randn(2, 16, 8, **meta),
        encoder_hidden_states=torch.randn(2, 6, 32, **meta),
        pooled_projections=torch.randn(2, 16, **meta), timestep=torch.ones(2, **meta),
        img_ids=torch.zeros(16, 3, **meta), txt_ids=torch.zeros(6, 3, **meta), return_dict=False)
    # two streams in the double blocks (4 branches each), one concatenated stream in the
    # single blocks (1 parallel attention + MLP branch each)
    assert len(stream.branches) == 2 * 4 + 3 and stream.depth == 5
    assert [b.module for b in stream.branches[-3:]] == [
        f"single_transformer_blocks.{i}.proj_out" for i in range(3)]
    assert not {"context_embedder.weight", "x_embedder.weight", "proj_out.weight",
                "time_text_embed.timestep_embedder.linear_1.weight"} & stream.inside
    assert "transformer_blocks.1.ff_context.net.2.weight" in stream.inside


# ----------------------------------------------------------------------------- properties


@st.composite
def _specs(draw: st.DrawFn) -> NetSpec:
    blocks = []
    for _ in range(draw(st.integers(1, 4))):  # the depth
        kind = draw(st.sampled_from(["mlp", "attn", "cross", "joint"]))
        blocks.append(BlockSpec(
            kind=kind, rms=draw(st.booleans()), pre_norm=draw(st.booleans()),
            adaln=draw(st.booleans()), gated=kind == "mlp" and draw(st.booleans()),
            via_param=kind == "mlp" and draw(st.booleans()),
            explicit=kind != "mlp" and draw(st.booleans()),
            layer_scale=draw(st.booleans()), drop_path=draw(st.booleans())))
    return NetSpec(stem=draw(st.sampled_from(["linear", "embedding", "conv"])),
                   blocks=tuple(blocks), heads="grow", long_skip=draw(st.booleans()),
                   share_first=draw(st.booleans()), frozen_table=draw(st.booleans()))


@pytest.mark.properties
@settings(deadline=None)  # examples: the hypothesis profile (ci: 20, thorough: 500)
@given(spec=_specs())
def test_random_architectures(spec: NetSpec) -> None:
    with torch.device("meta"):
        model = RandomNet(spec, 16)
    stream = _analyse(model, *model.example_inputs())
    truth = residual_truth(spec)
    assert len(stream.branches) == truth.branches and stream.depth == truth.depth
    assert tuple(b.norm for b in stream.branches) == truth.norms
    assert tuple(b.module for b in stream.branches) == truth.modules
    assert stream.long_skips == ()  # the long skip concatenates
    names = [n for n, _ in model.named_parameters()]
    for name in names:
        if name.startswith(truth.inside):
            assert name in stream.inside, name
        if name.startswith(truth.outside):
            assert name not in stream.inside, name
    assert ("post-ln" in [d.code for d in stream.diagnostics]) == ("post" in truth.norms)
