"""Two small multi-file projects, written from scratch, and how to import an emitted tree.

``TWO``: a model file with a ``blocks.py`` beside it holding the attention and the readout
class (as PixArt-style repos do); its ``__init__`` calls ``.item()``, so it is analysed with
``device="cpu"``. ``PKG``: a package ``mypkg/`` whose model imports its layers and config
dataclass relatively.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BLOCKS = '''"""Attention and the readout layer, kept apart from the model."""

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape  # C: width
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, Dh)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))  # (B, N, out_dim): fixed size
'''

MODEL = '''"""A small transformer whose attention and readout live in blocks.py."""

import torch
from torch import nn

from blocks import Attention, FinalLayer


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.drop_path if self.training else 1.0
        x = x + keep * self.attn(self.norm1(x))
        return x + keep * self.mlp(self.norm2(x))


class Net(nn.Module):
    def __init__(self, width: int = 64, num_heads: int = 2, depth: int = 2, in_dim: int = 12,
                 out_dim: int = 6, drop_path: float = 0.1) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.embed = nn.Linear(in_dim, width)
        rates = [r.item() for r in torch.linspace(0, drop_path, depth)]  # needs real values
        self.blocks = nn.ModuleList([Block(width, num_heads, r) for r in rates])
        self.final = FinalLayer(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, N, width)
        for block in self.blocks:
            h = block(h)
        return self.final(h)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 5, self.in_dim, device=self.embed.weight.device),)
'''

CONFIG = '''from dataclasses import dataclass


@dataclass
class ModelConfig:
    width: int = 64
    num_heads: int = 2
    depth: int = 2
    vocab: int = 20
    n_out: int = 7
'''

LAYERS = '''import torch
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape  # C: width
        q = self.q(x).view(B, N, self.num_heads, -1).transpose(1, 2)  # (B, H, N, Dh)
        k, v = self.kv(x).view(B, N, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        att = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5  # (B, H, N, N)
        return self.out((att.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C))


class Head(nn.Module):
    def __init__(self, width: int, n_out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.mean(dim=1)))  # (B, n_out)
'''

PKG_MODEL = '''import torch
from torch import nn

from .config import ModelConfig
from .layers import Head, SelfAttention


class Layer(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = SelfAttention(width, num_heads)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


class Net(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.width)
        self.layers = nn.ModuleList([Layer(config.width, config.num_heads)
                                     for _ in range(config.depth)])
        self.head = Head(config.width, config.n_out)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)  # (B, N, width)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randint(0, self.config.vocab, (2, 6), device=self.embed.weight.device),)
'''

TWO = {"blocks.py": BLOCKS, "model.py": MODEL}
PKG = {"mypkg/__init__.py": '"""A package with relative imports."""\n', "mypkg/config.py": CONFIG,
       "mypkg/layers.py": LAYERS, "mypkg/model.py": PKG_MODEL}
TWO_ARGS = ["--model", "Net(width=128)", "--base", "Net(width=32)", "--device", "cpu"]
PKG_ARGS = ["--model", "Net(ModelConfig(width=64))", "--base", "Net(ModelConfig(width=32))"]


def write_project(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too: a temporary file would show)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def import_tree(folder: Path, module: str) -> ModuleType:
    """``module`` imported with ``folder`` on sys.path as a user would, muprewrite unimportable;
    afterwards the tree's modules leave sys.modules (the classes stay), and any of the same
    names there before come back."""
    names = {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/*.py")}

    def ours(key: str) -> bool:
        return key.split(".")[0] in names | {"muprewrite"}

    saved = {k: v for k, v in sys.modules.items() if ours(k)}
    for key in saved:
        del sys.modules[key]
    sys.modules["muprewrite"] = None  # type: ignore[assignment]  # makes the import raise
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(folder))
        for key in [k for k in sys.modules if ours(k)]:
            del sys.modules[key]
        sys.modules.update(saved)
