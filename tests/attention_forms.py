"""Three attention forms written from scratch in the styles of public code, as model files.

- ``VIT``: vit-pytorch's attention: ``self.attend = nn.Softmax(dim=-1)`` over
  ``torch.matmul(q, k.transpose(-1, -2)) * self.scale``, dropout after it;
- ``UVIT``: U-ViT's attention, its path chosen by the module global ``ATTENTION_MODE``:
  'flash' (SDPA), 'xformers' (``xformers.ops.memory_efficient_attention``), 'math';
- ``SWIN``: Swin's window attention: a relative-position bias, and in the shifted block a
  window mask added through a reshape to ``(B / nW, nW, heads, N, N)`` and back.

``by_hand(name, d_head_base, base_width)`` is the same file with muP written by hand in place
of the standard parametrization: the logits times sqrt(d_head_base) / d_head where the model
writes 1/sqrt(d_head) (d_head from the width, not read off a tensor), the readout's input
times base_width / width. ``load`` writes a source to a folder and imports it. ``fake_xformers`` is a stand-in for the ``xformers.ops`` module
(xformers is not installed): plain attention with xformers' layout (B, N, heads, d_head) and
its default scale 1/sqrt(d_head).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["SOURCES", "by_hand", "load", "fake_xformers"]

VIT = '''"""A ViT in the style of vit-pytorch: an nn.Softmax module over q.k^T."""

import torch
from torch import nn

HEADS = 2


class Attention(nn.Module):
    def __init__(self, dim, heads=HEADS, dropout=0.0):
        super().__init__()
        self.heads = heads
        self.dim_head = dim // heads
        self.scale = self.dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        b, n, _ = x.shape
        x = self.norm(x)
        qkv = self.to_qkv(x).chunk(3, dim=-1)  # 3 x (B, N, C*)
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
                   for t in qkv)  # (B, H, N, D*)
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, H, N, N)
        attn = self.attend(dots)
        attn = self.dropout(attn)
        out = torch.matmul(attn, v)  # (B, H, N, D*)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x):
        return self.net(x)


class ViT(nn.Module):
    def __init__(self, dim, depth=2, patch=4, image=8, classes=5, dropout=0.0):
        super().__init__()
        self.patch = patch
        tokens = (image // patch) ** 2
        self.to_patch_embedding = nn.Linear(3 * patch * patch, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.layers = nn.ModuleList([
            nn.ModuleList([Attention(dim, dropout=dropout), FeedForward(dim, 2 * dim)])
            for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.mlp_head = nn.Linear(dim, classes)

    def forward(self, img):
        b, c, h, w = img.shape
        p = self.patch
        x = img.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        x = self.to_patch_embedding(x.reshape(b, (h // p) * (w // p), p * p * c))  # (B, N, C*)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embedding
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        x = self.norm(x)[:, 0]  # (B, C*)
        return self.mlp_head(x)

    def example_inputs(self):
        return (torch.randn(2, 3, 8, 8, device=self.mlp_head.weight.device),)
'''

UVIT = '''"""A U-ViT: attention by a global mode ('flash' | 'xformers' | 'math'), long skips."""

import torch
import torch.nn.functional as F
from torch import nn

try:
    import xformers
    import xformers.ops
    XFORMERS_IS_AVAILBLE = True
except ImportError:
    XFORMERS_IS_AVAILBLE = False

ATTENTION_MODE = "flash"


class Attention(nn.Module):
    def __init__(self, dim, num_heads=2, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, L, C = x.shape
        qkv = self.qkv(x)  # (B, L, 3C*)
        if ATTENTION_MODE == "flash":
            qkv = qkv.reshape(B, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D*)
            q, k, v = qkv[0], qkv[1], qkv[2]
            x = F.scaled_dot_product_attention(q, k, v)
            x = x.transpose(1, 2).reshape(B, L, C)
        elif ATTENTION_MODE == "xformers":
            qkv = qkv.reshape(B, L, 3, self.num_heads, -1).permute(2, 0, 1, 3, 4)  # (3, B, L, H, D*)
            q, k, v = qkv[0], qkv[1], qkv[2]
            x = xformers.ops.memory_efficient_attention(q, k, v)
            x = x.reshape(B, L, C)
        elif ATTENTION_MODE == "math":
            qkv = qkv.reshape(B, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D*)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(B, L, C)
        else:
            raise NotImplementedError(ATTENTION_MODE)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, skip=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (B, L, 2C*) -> (B, L, C*)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    def __init__(self, embed_dim, patch=2, image=4, in_chans=3):
        super().__init__()
        self.patch = patch
        tokens = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch, stride=patch)
        self.time_embed = nn.Linear(1, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + tokens, embed_dim))
        self.in_block = Block(embed_dim)
        self.mid_block = Block(embed_dim)
        self.out_block = Block(embed_dim, skip=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch * patch * in_chans)

    def forward(self, x, timesteps):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, L, C*)
        t = self.time_embed(timesteps[:, None])[:, None]  # (B, 1, C*)
        x = torch.cat([t, x], dim=1) + self.pos_embed
        skip = self.in_block(x)
        x = self.out_block(self.mid_block(skip), skip)
        x = self.norm(x)[:, 1:]
        return self.decoder_pred(x)  # (B, L, p*p*C)

    def example_inputs(self):
        device = self.decoder_pred.weight.device
        return torch.randn(2, 3, 4, 4, device=device), torch.rand(2, device=device)
'''

SWIN = '''"""Swin-style window attention: a relative-position bias, shifted windows with a mask."""

import torch
from torch import nn

HEADS, WINDOW = 2, 2


class WindowAttention(nn.Module):
    def __init__(self, dim, window=WINDOW, num_heads=HEADS):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * window - 1) ** 2, num_heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)  # (2, N)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index",
                             rel[..., 0] * (2 * window - 1) + rel[..., 1])  # (N, N)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B_, H, N, D*)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale  # (B_, H, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).contiguous()  # (H, N, N)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
            attn = self.softmax(attn)
        else:
            attn = self.softmax(attn)
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(x)


def window_partition(x, window):
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)  # (B*nW, N, C*)


def window_reverse(windows, window, H, W):
    B = windows.shape[0] // ((H // window) * (W // window))
    x = windows.view(B, H // window, W // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


class SwinBlock(nn.Module):
    def __init__(self, dim, resolution, shift=0):
        super().__init__()
        self.resolution, self.shift = resolution, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        if shift > 0:
            img = torch.zeros(1, resolution, resolution, 1)
            cuts = (slice(0, -WINDOW), slice(-WINDOW, -shift), slice(-shift, None))
            region = 0
            for h in cuts:
                for w in cuts:
                    img[:, h, w, :] = region
                    region += 1
            windows = window_partition(img, WINDOW).squeeze(-1)  # (nW, N)
            mask = windows[:, None, :] - windows[:, :, None]
            mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        else:
            mask = None
        self.register_buffer("attn_mask", mask)

    def forward(self, x):
        B, L, C = x.shape
        H = W = self.resolution
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = self.attn(window_partition(x, WINDOW), mask=self.attn_mask)
        x = window_reverse(windows, WINDOW, H, W)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.reshape(B, L, C)
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    def __init__(self, dim, patch=2, image=8, classes=5):
        super().__init__()
        self.patch = patch
        resolution = image // patch
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.blocks = nn.ModuleList([SwinBlock(dim, resolution, 0),
                                     SwinBlock(dim, resolution, WINDOW // 2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, img):
        x = self.patch_embed(img).flatten(2).transpose(1, 2)  # (B, L, C*)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).mean(dim=1)  # (B, C*)
        return self.head(x)

    def example_inputs(self):
        return (torch.randn(2, 3, 8, 8, device=self.head.weight.device),)
'''

SOURCES = {"vit": VIT, "uvit": UVIT, "swin": SWIN}
_FACTOR = "(math.sqrt(HAND[0]) / {d_head})"  # HAND: (d_head at base width, base width)
_READOUT = "(HAND[1] / x.shape[-1])"
# name -> (text, its by-hand replacement), each occurring once in the source
_HAND = {
    "vit": [("torch.matmul(q, k.transpose(-1, -2)) * self.scale",
             "torch.matmul(q, k.transpose(-1, -2)) * " + _FACTOR.format(d_head="self.dim_head")),
            ("return self.mlp_head(x)", "return self.mlp_head(x * " + _READOUT + ")")],
    "uvit": [("F.scaled_dot_product_attention(q, k, v)", "F.scaled_dot_product_attention(q, k, v, "
              "scale=" + _FACTOR.format(d_head="(C // self.num_heads)") + ")"),
             ("memory_efficient_attention(q, k, v)", "memory_efficient_attention(q, k, v, "
              "scale=" + _FACTOR.format(d_head="(C // self.num_heads)") + ")"),
             ("(q @ k.transpose(-2, -1)) * self.scale",
              "(q @ k.transpose(-2, -1)) * " + _FACTOR.format(d_head="(C // self.num_heads)")),
             ("return self.decoder_pred(x)", "return self.decoder_pred(x * " + _READOUT + ")")],
    "swin": [("(q @ k.transpose(-2, -1)) * self.scale",
              "(q @ k.transpose(-2, -1)) * " + _FACTOR.format(d_head="self.head_dim")),
             ("return self.head(x)", "return self.head(x * " + _READOUT + ")")],
}


def by_hand(name: str, d_head_base: int, base_width: int) -> str:
    """The source ``name`` with muP written by hand (see the module docstring)."""
    text = SOURCES[name]
    for old, new in _HAND[name]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return f"import math\nHAND = ({d_head_base}, {base_width})\n" + text


FAKE_XFORMERS = '''
import torch


def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None):
    """Plain attention on (B, N, heads, d_head), xformers' layout and default scale."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    attn = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    return (attn @ v).transpose(1, 2)
'''


def fake_xformers() -> dict[str, ModuleType]:
    """``sys.modules`` entries for a stand-in ``xformers`` package with ``xformers.ops``."""
    package, ops = ModuleType("xformers"), ModuleType("xformers.ops")
    exec(compile(FAKE_XFORMERS, "<fake xformers.ops>", "exec"), ops.__dict__)  # noqa: S102
    package.ops = ops  # type: ignore[attr-defined]
    return {"xformers": package, "xformers.ops": ops}


def load(folder: Path, name: str, source: str) -> ModuleType:
    """Write ``source`` to ``folder/name.py`` and import it under a unique module name."""
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"forms_{folder.name}_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
