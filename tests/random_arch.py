"""Random architectures for property tests: a spec (drawn by hypothesis) built at any width.

``RandomNet(spec, width)`` stacks the drawn blocks on a residual stream of size ``width``.
Parameters used through ``x @ W`` or einsum (no module type to read fans from) record their
fan axes in ``FREE_FANS`` at construction, so the ground truth never looks at the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HEAD_DIM = 8  # d_head under the "grow" convention; heads under "fixed" = FIXED_HEADS
FIXED_HEADS = 2
IN_FEATURES, VOCAB, CHANNELS, COND, CTX, CTX_LEN, SEQ = 6, 11, 3, 5, 7, 3, 4


@dataclass(frozen=True)
class BlockSpec:
    kind: str  # "mlp" | "attn" | "cross" | "joint"
    fused_qkv: bool = True
    explicit: bool = False  # softmax(q k^T) instead of SDPA
    qk_norm: bool = False
    rms: bool = False
    pre_norm: bool = True
    adaln: bool = False  # DiT-style modulation from a fixed-size condition, chunked
    gated: bool = False  # GLU MLP via chunk
    via_param: bool = False  # MLP weights used as x @ W / einsum
    layer_scale: bool = False  # branch * learned per-channel gamma (CaiT / timm LayerScale)
    drop_path: bool = False  # branch * random per-sample keep mask / keep_prob (training only)


@dataclass(frozen=True)
class NetSpec:
    stem: str  # "linear" | "embedding" | "conv"
    blocks: tuple[BlockSpec, ...]
    heads: str  # "grow" | "fixed"
    tied: bool = False
    long_skip: bool = False
    share_first: bool = False  # run block 0 a second time at the end (shared weights)
    frozen_table: bool = False
    einsum_readout: bool = False


FREE_FANS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # param suffix -> fans


def _norm(width: int, rms: bool) -> nn.Module:
    return nn.RMSNorm(width) if rms else nn.LayerNorm(width)


class Attention(nn.Module):
    logit_factor = 1.0  # a by-hand muP reference sets this (tests compare apply against it)

    def __init__(self, spec: BlockSpec, width: int, heads: int) -> None:
        super().__init__()
        self.spec, self.heads, self.d_head = spec, heads, width // heads
        if spec.fused_qkv:
            self.qkv = nn.Linear(width, 3 * width)
        else:
            self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        if spec.kind in ("cross", "joint"):
            self.ctx_kv = nn.Linear(width, 2 * width)
        if spec.qk_norm:
            self.q_norm, self.k_norm = nn.RMSNorm(self.d_head), nn.RMSNorm(self.d_head)
        self.proj = nn.Linear(width, width)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        B, N, _ = t.shape
        return t.view(B, N, self.heads, self.d_head).transpose(1, 2)  # (B, H, N, Dh)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        if self.spec.fused_qkv:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        if ctx is not None:
            ck, cv = self.ctx_kv(ctx).chunk(2, dim=-1)
            if self.spec.kind == "cross":
                k, v = ck, cv
            else:  # joint attention over both streams, concatenated along the sequence
                k, v = torch.cat([ck, k], 1), torch.cat([cv, v], 1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        if self.spec.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.spec.explicit:
            att = (q @ k.transpose(-2, -1)) / self.d_head ** 0.5
            if self.logit_factor != 1.0:
                att = att * self.logit_factor
            out = att.softmax(-1) @ v
        elif self.logit_factor != 1.0:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.logit_factor / self.d_head ** 0.5)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        B, H, N, Dh = out.shape
        return self.proj(out.transpose(1, 2).reshape(B, N, H * Dh))


class MLP(nn.Module):
    def __init__(self, spec: BlockSpec, width: int) -> None:
        super().__init__()
        self.spec = spec
        hidden = 2 * width
        out = 2 * hidden if spec.gated else hidden
        if spec.via_param:
            self.w1 = nn.Parameter(torch.randn(width, out) / width ** 0.5)  # x @ w1
            self.w2 = nn.Parameter(torch.randn(width, hidden) / hidden ** 0.5)  # einsum "bnh,dh->bnd"
            FREE_FANS["w1"], FREE_FANS["w2"] = ((0,), (1,)), ((1,), (0,))
        else:
            self.fc1, self.fc2 = nn.Linear(width, out), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.w1 if self.spec.via_param else self.fc1(x)
        if self.spec.gated:
            a, b = h.chunk(2, dim=-1)
            h = a * F.silu(b)
        else:
            h = F.gelu(h)
        return torch.einsum("bnh,dh->bnd", h, self.w2) if self.spec.via_param else self.fc2(h)


class Block(nn.Module):
    def __init__(self, spec: BlockSpec, width: int, heads: int) -> None:
        super().__init__()
        self.spec = spec
        self.norm = _norm(width, spec.rms)
        self.body = MLP(spec, width) if spec.kind == "mlp" else Attention(spec, width, heads)
        if spec.adaln:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        if spec.layer_scale:
            self.gamma = nn.Parameter(torch.full((width,), 0.1))

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        h = self.norm(x) if self.spec.pre_norm else x
        if self.spec.adaln:
            shift, scale, gate = self.modulation(c).unsqueeze(1).chunk(3, dim=-1)
            h = h * (1 + scale) + shift
        h = self.body(h) if self.spec.kind == "mlp" else self.body(h, ctx)
        if self.spec.adaln:
            h = gate * h
        if self.spec.layer_scale:
            h = h * self.gamma
        if self.spec.drop_path and self.training:
            keep = (torch.rand(h.shape[0], 1, 1, device=h.device) < 0.9).to(h.dtype)
            h = h * keep / 0.9
        x = x + h
        return x if self.spec.pre_norm else self.norm(x)


class RandomNet(nn.Module):
    readout_factor = 1.0  # a by-hand muP reference sets this: the readout's input x factor

    def __init__(self, spec: NetSpec, width: int) -> None:
        super().__init__()
        self.spec = spec
        heads = width // HEAD_DIM if spec.heads == "grow" else FIXED_HEADS
        if spec.stem == "embedding":
            self.embed = nn.Embedding(VOCAB, width)
        elif spec.stem == "conv":
            self.embed = nn.Conv2d(CHANNELS, width, 2, stride=2)
        else:
            self.embed = nn.Linear(IN_FEATURES, width)
        self.cond = nn.Linear(COND, width)
        self.context = nn.Linear(CTX, width)
        self.blocks = nn.ModuleList(Block(b, width, heads) for b in spec.blocks)
        if spec.long_skip:
            self.skip = nn.Linear(2 * width, width)
        if spec.frozen_table:
            self.table = nn.Parameter(torch.zeros(1, SEQ, width), requires_grad=False)
        self.final_norm = nn.LayerNorm(width)
        out = VOCAB if spec.stem == "embedding" else IN_FEATURES
        if spec.einsum_readout:
            self.readout = nn.Parameter(torch.randn(width, out) / width)  # einsum "bnd,do->bno"
            FREE_FANS["readout"] = ((0,), (1,))
        elif not spec.tied:
            self.head = nn.Linear(width, out)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        device = next(self.parameters()).device
        if self.spec.stem == "embedding":
            x = torch.randint(0, VOCAB, (2, SEQ), device=device)
        elif self.spec.stem == "conv":
            x = torch.randn(2, CHANNELS, 2, 2 * SEQ, device=device)  # 1 x SEQ patches
        else:
            x = torch.randn(2, SEQ, IN_FEATURES, device=device)
        return x, torch.randn(2, COND, device=device), torch.randn(2, CTX_LEN, CTX, device=device)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if self.spec.stem == "conv":
            h = h.flatten(2).transpose(1, 2)  # (B, SEQ, D)
        if self.spec.frozen_table:
            h = h + self.table
        c, ctx = self.cond(cond), self.context(context)
        first = h
        blocks = list(self.blocks) + ([self.blocks[0]] if self.spec.share_first else [])
        for block in blocks:
            h = block(h, c, ctx if block.spec.kind in ("cross", "joint") else None)
        if self.spec.long_skip:
            h = self.skip(torch.cat([h, first], dim=-1))
        h = self.final_norm(h)
        if self.readout_factor != 1.0:
            h = h * self.readout_factor
        if self.spec.einsum_readout:
            return torch.einsum("bnd,do->bno", h, self.readout)
        if self.spec.tied:
            return h @ self.embed.weight.t()
        return self.head(h)


@dataclass(frozen=True)
class ResidualTruth:
    """What the residual analysis must find in ``RandomNet(spec, width)``, from the spec alone."""

    branches: int  # one ``x + h`` per block call (block 0 twice with share_first)
    depth: int  # distinct blocks
    norms: tuple[str, ...]  # per branch, in call order: "pre" | "post"
    modules: tuple[str, ...]  # per branch: the module whose output the branch scales
    inside: tuple[str, ...]  # name prefixes of parameters inside branches
    outside: tuple[str, ...]  # name prefixes of parameters outside every branch


def residual_truth(spec: NetSpec) -> ResidualTruth:
    """Every block is one branch hosted by ``blocks.i``; a post-norm block's norm acts on
    the stream (outside); the condition / context projections act only through the blocks
    that read them (inside when one does); stem, long skip, final norm and readout are outside."""
    calls = list(range(len(spec.blocks))) + ([0] if spec.share_first else [])
    inside = []
    for i, block in enumerate(spec.blocks):
        if block.pre_norm:
            inside.append(f"blocks.{i}.")
        else:
            inside += [f"blocks.{i}.{child}." for child in ("body", "modulation")]
            inside += [f"blocks.{i}.gamma"] if block.layer_scale else []
    if any(b.adaln for b in spec.blocks):
        inside.append("cond.")
    if any(b.kind in ("cross", "joint") for b in spec.blocks):
        inside.append("context.")
    outside = ["embed.", "final_norm.", "head.", "readout", "skip.", "table"]
    outside += [f"blocks.{i}.norm." for i, b in enumerate(spec.blocks) if not b.pre_norm]
    return ResidualTruth(
        branches=len(calls), depth=len(spec.blocks),
        norms=tuple("pre" if spec.blocks[i].pre_norm else "post" for i in calls),
        modules=tuple(f"blocks.{i}.body" for i in calls),
        inside=tuple(inside), outside=tuple(outside))
