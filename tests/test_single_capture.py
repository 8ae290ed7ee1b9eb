"""Single-capture traps. 1: ``checkpoint`` (either ``use_reentrant``) and
``checkpoint_sequential`` change no role (export wraps a reentrant block, and what follows,
in ``wrap_with_set_grad_enabled`` bodies that capture inlines). 2: a timestep sinusoid as wide
as the model looks finite in one capture: the weight reading it and the line are named,
unless its size differs from the width it meets (DiT's 256 frequencies at width != 256)."""

from __future__ import annotations

import functools
import inspect
import math
import operator

import pytest
import torch
import torch.nn.functional as F
from ground_truth import ground_truth_roles
from torch import fx, nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

from muprewrite import analyze
from muprewrite.analysis.report import Diagnostic, Report
from muprewrite.capture.inline import inline_subgraphs


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) -> (B, dim): cos/sin of t at dim // 2 geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(1e4) * torch.arange(half, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (B, dim / 2)
    return torch.cat([torch.cos(args), torch.sin(args)], -1)  # (B, dim)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads)  # D = heads * d_head
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d_head)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))


class AdaBlock(nn.Module):
    """DiT block: adaLN modulation Linear(d -> 6d) of the condition, then chunk(6)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d, elementwise_affine=False), nn.LayerNorm(d)
        self.attn, self.ada = Attention(d, heads), nn.Linear(d, 6 * d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, g1, a1, s2, g2, a2 = self.ada(F.silu(c))[:, None].chunk(6, -1)  # each (B, 1, d)
        x = x + a1 * self.attn(self.norm1(x) * (1 + g1) + s1)
        return x + a2 * self.fc2(F.gelu(self.fc1(self.norm2(x) * (1 + g2) + s2)))


class TinyDiT(nn.Module):
    """Patchify 8x8x4 by 2, timestep + label condition, adaLN blocks, final layer, unpatchify.

    ``freq``: sinusoid size (DiT: a fixed 256; ``None``: as wide as the model).
    ``reentrant``: None runs the blocks plainly, else through ``checkpoint``.
    """

    def __init__(self, d: int = 128, heads: int = 2, freq: int | None = 256,
                 reentrant: bool | None = None) -> None:
        super().__init__()
        self.freq, self.reentrant = freq or d, reentrant
        self.patch, self.pos = nn.Conv2d(4, d, 2, 2), nn.Parameter(torch.zeros(1, 16, d))
        self.t_mlp = nn.Sequential(nn.Linear(self.freq, d), nn.SiLU(), nn.Linear(d, d))
        self.y_emb = nn.Embedding(10, d)
        self.blocks = nn.ModuleList(AdaBlock(d, heads) for _ in range(2))
        self.final_ada, self.final = nn.Linear(d, 2 * d), nn.Linear(d, 2 * 2 * 4)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        h = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # (B, 16, d)
        c = self.t_mlp(sinusoid(t, self.freq)) + self.y_emb(y)  # SINUSOID CALL; (B, d)
        for block in self.blocks:
            h = block(h, c) if self.reentrant is None else \
                checkpoint(block, h, c, use_reentrant=self.reentrant)
        shift, scale = self.final_ada(F.silu(c))[:, None].chunk(2, -1)
        h = self.final(F.layer_norm(h, h.shape[-1:]) * (1 + scale) + shift)  # (B, 16, 16)
        return h.reshape(B, 4, 4, 2, 2, 4).permute(0, 5, 1, 3, 2, 4).reshape(B, 4, 8, 8)


class Block(nn.Module):
    """Pre-norm U-ViT block; ``skip`` fuses a long skip: Linear(cat([x, skip])) 2d -> d."""

    def __init__(self, d: int, heads: int, skip: bool = False) -> None:
        super().__init__()
        self.skip = nn.Linear(2 * d, d) if skip else None
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip is not None and skip is not None:
            x = self.skip(torch.cat([x, skip], -1))
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyUViT(nn.Module):
    """U-ViT (original): the time token from a sinusoid as wide as the model, through
    Linear(d -> 4d) -> Linear(4d -> d); long skips. ``ckpt``: "plain", "reentrant",
    "non-reentrant", "sequential-reentrant" or "sequential-non-reentrant"
    (``checkpoint_sequential`` on the in-blocks)."""

    def __init__(self, d: int = 128, heads: int = 2, ckpt: str = "plain") -> None:
        super().__init__()
        self.d, self.ckpt = d, ckpt
        self.patch, self.pos = nn.Linear(16, d), nn.Parameter(torch.zeros(1, 17, d))
        self.t_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.ins = nn.Sequential(Block(d, heads), Block(d, heads))
        self.mid = Block(d, heads)
        self.outs = nn.ModuleList(Block(d, heads, skip=True) for _ in range(2))
        self.norm, self.out = nn.LayerNorm(d), nn.Linear(d, 16)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        half = self.d // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, device=x.device) / half)  # ARANGE
        angles = t[:, None].float() * freqs[None]  # (B, d / 2)
        time = self.t_mlp(torch.cat([torch.cos(angles), torch.sin(angles)], -1))  # (B, d)
        h = torch.cat([time[:, None], self.patch(x)], 1) + self.pos  # (B, 1 + 16, d)
        if self.ckpt.startswith("sequential"):  # one call, so both skips take its output
            h = checkpoint_sequential(self.ins, 2, h, use_reentrant=self.ckpt == "sequential-reentrant")
            skips = [h, h]
        else:
            skips = [h := self._run(block, h) for block in self.ins]
        h = self._run(self.mid, h)
        for block in self.outs:
            h = self._run(block, h, skips.pop())
        return self.out(self.norm(h))[:, 1:]  # (B, 16, 16)

    def _run(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.ckpt in ("reentrant", "non-reentrant"):
            return checkpoint(block, *args, use_reentrant=self.ckpt == "reentrant")
        return block(*args)


def _dit_inputs(model: nn.Module) -> tuple[torch.Tensor, ...]:
    with torch.device(next(model.parameters()).device):
        return torch.randn(2, 4, 8, 8), torch.randint(0, 1000, (2,)), torch.randint(0, 10, (2,))


def _uvit_inputs(model: nn.Module) -> tuple[torch.Tensor, ...]:
    with torch.device(next(model.parameters()).device):
        return torch.randn(2, 16, 16), torch.randint(0, 1000, (2,))


def _line_of(fn: object, marker: str) -> int:
    lines, first = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    return first + next(i for i, text in enumerate(lines) if marker in text)


DEVICES = ["meta", "cpu"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_dit_blocks_keep_their_roles(device: str, reentrant: bool) -> None:
    with torch.device(device):
        wide, small = TinyDiT(128, 4, reentrant=reentrant), TinyDiT(64, 2, reentrant=reentrant)
        plain = TinyDiT(128, 4)
    truth = ground_truth_roles(wide, small)
    expected = analyze(plain, _dit_inputs(plain)).roles()
    assert expected == truth and expected["final.weight"] == "output"
    assert analyze(wide, _dit_inputs(wide)).roles() == expected
    assert analyze(wide, _dit_inputs(wide), base=small).roles() == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ckpt", ["reentrant", "non-reentrant", "sequential-reentrant",
                                  "sequential-non-reentrant"])
def test_checkpointed_uvit_blocks_keep_their_roles(device: str, ckpt: str) -> None:
    with torch.device(device):
        wide, small, plain = TinyUViT(128, 4, ckpt), TinyUViT(64, 2, ckpt), TinyUViT(128, 4)
    truth = ground_truth_roles(wide, small)
    single = analyze(wide, _uvit_inputs(wide)).roles()
    assert single == analyze(plain, _uvit_inputs(plain)).roles()
    assert single["out.weight"] == "output" and single["outs.0.skip.weight"] == "hidden"
    # the width-tied sinusoid is the one role a single capture cannot see (see below)
    assert {n: r for n, r in single.items() if n != "t_mlp.0.weight"} == \
        {n: r for n, r in truth.items() if n != "t_mlp.0.weight"}
    assert analyze(wide, _uvit_inputs(wide), base=small).roles() == truth


@pytest.mark.parametrize("impl", ["NO_REENTRANT", "REENTRANT"])
def test_uvit_example_under_activation_checkpointing(impl: str) -> None:
    """examples/uvit.py has no checkpoint option: wrap its blocks the way FSDP training code
    does (``apply_activation_checkpointing``), which prefixes the wrapped parameters."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not built")
    from torch.distributed.algorithms._checkpoint import checkpoint_wrapper as cw

    from examples.uvit import Block as UViTBlock
    from examples.uvit import UViT

    wrapper = functools.partial(cw.checkpoint_wrapper, checkpoint_impl=cw.CheckpointImpl[impl])
    with torch.device("meta"):
        plain, wide, small = (UViT(embed_dim=d, num_heads=d // 64) for d in (256, 256, 128))
    for model in (wide, small):
        cw.apply_activation_checkpointing(model, checkpoint_wrapper_fn=wrapper,
                                          check_fn=lambda m: isinstance(m, UViTBlock))
    expected = analyze(plain).roles()
    assert expected["decoder_pred.weight"] == "output"
    for report in (analyze(wide), analyze(wide, base=small)):
        unwrapped = {n.replace("_checkpoint_wrapped_module.", ""): r
                     for n, r in report.roles().items()}
        assert unwrapped == expected


class Autocast(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.inp, self.hid, self.out = nn.Linear(4, d), nn.Linear(d, d), nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = self.hid(self.inp(x))
        return self.out(h.float())


def test_autocast_region_is_seen_through() -> None:
    with torch.device("meta"):
        wide, small, x = Autocast(64), Autocast(32), torch.randn(2, 4)
    assert analyze(wide, x).roles() == ground_truth_roles(wide, small)
    assert analyze(wide, x).roles() == analyze(wide, x, base=small).roles()


def _wrapped(op: object, flags: tuple, body: fx.GraphModule, *operands: str) -> fx.GraphModule:
    """A graph calling ``op(*flags, body, *operands)`` and returning its first output."""
    graph, root = fx.Graph(), nn.Module()
    root.body = body
    holders = [graph.placeholder(name) for name in operands]
    call = graph.call_function(op, (*flags, graph.get_attr("body"), *holders))  # type: ignore[arg-type]
    graph.output((graph.call_function(operator.getitem, (call, 0)),))
    return fx.GraphModule(root, graph)


def test_inliner_handles_strict_checkpoint_tags_and_nesting() -> None:
    """What strict export / dynamo make of checkpoint (``tag_activation_checkpoint``), nested
    in an autocast region: every body is spliced in, innermost first."""
    inner = fx.Graph()
    x, w = inner.placeholder("x"), inner.placeholder("w")
    inner.output((inner.call_function(torch.ops.aten.linear.default, (x, w)),))
    tagged = _wrapped(torch.ops.higher_order.tag_activation_checkpoint, (),
                      fx.GraphModule(nn.Module(), inner), "x", "w")
    outer = _wrapped(torch.ops.higher_order.wrap_with_autocast, ("cpu", None, True, False),
                     tagged, "x", "w")
    assert inline_subgraphs(outer)
    ops = [n.target for n in outer.graph.nodes if n.op == "call_function"]
    assert ops == [torch.ops.aten.linear.default]
    assert outer.graph.output_node().args[0][0].target is torch.ops.aten.linear.default


def _sized(report: Report) -> list[Diagnostic]:
    return [d for d in report.diagnostics if d.code == "width-sized-constant"]


@pytest.mark.parametrize("device", DEVICES)
def test_width_tied_sinusoid_feeding_an_mlp_is_named(device: str) -> None:
    """timestep_embedding(t, dim=hidden_size) -> Linear(d, d): the warning names the weight
    and the line where the sinusoid is made; base= measures it as hidden."""
    with torch.device(device):
        wide, small = TinyDiT(128, 4, freq=None), TinyDiT(64, 2, freq=None)
    report = analyze(wide, _dit_inputs(wide))
    [warning] = _sized(report)
    assert warning.where == "t_mlp.0.weight" and warning.severity == "warning"
    assert f"test_single_capture.py:{_line_of(TinyDiT.forward, 'SINUSOID CALL')}" in warning.message
    assert "base=" in warning.fix
    assert report["t_mlp.0.weight"].role == "input"  # what one capture can see
    measured = analyze(wide, _dit_inputs(wide), base=small)
    assert measured.roles() == ground_truth_roles(wide, small)
    assert measured["t_mlp.0.weight"].role == "hidden" and not _sized(measured)


def test_width_tied_sinusoid_two_layers_on_is_named() -> None:
    """U-ViT's original time MLP d -> 4d -> d: the match is one weight further on."""
    with torch.device("meta"):
        model = TinyUViT(128, 4)
    [warning] = _sized(analyze(model, _uvit_inputs(model)))
    assert warning.where == "t_mlp.0.weight"
    assert f"test_single_capture.py:{_line_of(TinyUViT.forward, '# ARANGE')}" in warning.message


def test_fixed_256_frequencies_are_not_flagged_below_or_above_256() -> None:
    with torch.device("meta"):
        models = [TinyDiT(d, d // 64) for d in (128, 512)]
    for model in models:
        report = analyze(model, _dit_inputs(model))
        assert report["t_mlp.0.weight"].role == "input" and not _sized(report)


def test_fixed_256_frequencies_at_width_256_are_ambiguous() -> None:
    """At width 256 the fixed and the width-tied sinusoid make the same graph: say so."""
    with torch.device("meta"):
        model = TinyDiT(256, 4)
    [warning] = _sized(analyze(model, _dit_inputs(model)))
    assert warning.where == "t_mlp.0.weight" and "cannot tell" in warning.message
