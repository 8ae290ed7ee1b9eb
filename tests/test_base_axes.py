"""A base may differ from the model only along axes that grow with width.

A base with a padded vocabulary or another number of classes used to be diffed like any
other: the vocabulary axis "grew", the readout became hidden and a tied embedding lost its
tie, silently. Such a base is refused (by analyze, and so by apply), naming the parameter,
the axis and both sizes; the bases that differ only in width are still accepted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from ground_truth import ground_truth_roles
from torch import nn

import muprewrite
from muprewrite import analyze
from muprewrite.errors import UsageError

FIX = "build the base with the model's vocab_size/num_classes"


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65  # characters of the training text
    block_size: int = 16
    n_embd: int = 64  # width
    n_head: int = 2


class CharGPT(nn.Module):
    """A one-block character-level GPT whose readout is tied to the token embedding."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C*)
        q, k, v = self.c_attn(self.ln_1(x)).split(self.cfg.n_embd, dim=2)  # 3 x (B, T, C*)
        q, k, v = (t.view(B, T, self.cfg.n_head, -1).transpose(1, 2)
                   for t in (q, k, v))  # (B, H, T, D*): heads fixed, d_head grows
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, C*)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)


def _gpt(**changes: int) -> CharGPT:
    torch.manual_seed(0)
    return CharGPT(replace(GPTConfig(), **changes))


TOKENS = torch.randint(0, 65, (2, 8))


class ViTClassifier(nn.Module):
    """Patches by a strided convolution, a class token, one attention block, a linear head."""

    def __init__(self, dim: int = 64, heads: int = 2, num_classes: int = 10,
                 patch: int = 4, image: int = 16) -> None:
        super().__init__()
        self.heads = heads
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, C*)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed
        B, N, C = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H*, N, D)
        y = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(y.transpose(1, 2).reshape(B, N, C))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(self.norm(x)[:, 0])  # (B, classes)


class MLPClassifier(nn.Module):
    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.inp = nn.Linear(20, width)
        self.hidden = nn.Linear(width, width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.hidden(F.relu(self.inp(x)))))


class MLPBackbone(nn.Module):
    """Returns its hidden state: the output axis grows with the width."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.inp = nn.Linear(20, width)
        self.hidden = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(F.relu(self.inp(x)))


def _refused(model: nn.Module, inputs: object, base: nn.Module) -> str:
    with pytest.raises(UsageError) as info:
        analyze(model, inputs, base=base)
    assert FIX in info.value.fix
    return info.value.message


@pytest.mark.parametrize("width", [64, 128])
def test_tied_gpt_with_a_padded_base_vocabulary_is_refused(width: int) -> None:
    """vocab 65 padded to 128 in the base (as GPT-2's 50257 -> 50304): at the model's own
    width and at half of it."""
    message = _refused(_gpt(n_embd=width), TOKENS, _gpt(vocab_size=128))
    assert "wte.weight axis 0 is 65 in the model, 128 in base" in message
    assert "embedding table rows" in message


def test_apply_refuses_the_padded_base_and_leaves_the_model_alone() -> None:
    model = _gpt(n_embd=128)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UsageError, match=r"wte\.weight axis 0 is 65 in the model, 128 in base"):
        muprewrite.apply(model, TOKENS, base=_gpt(vocab_size=128))
    assert muprewrite.plan_of(model) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_tied_gpt_with_the_model_vocabulary_keeps_its_tie() -> None:
    report = analyze(_gpt(n_embd=128), TOKENS, base=_gpt())
    assert report["wte.weight"].role == "input" and report["wte.weight"].tied
    assert report["wte.weight"].m_in == 1 and report["wte.weight"].m_out == 2


@pytest.mark.parametrize("build, inputs", [
    (ViTClassifier, torch.randn(2, 3, 16, 16)),
    (MLPClassifier, torch.randn(2, 20)),
], ids=["vit", "mlp"])
def test_classifier_with_other_base_classes_is_refused(build: type, inputs: torch.Tensor
                                                        ) -> None:
    wide = {"dim": 128} if build is ViTClassifier else {"width": 128}
    message = _refused(build(**wide, num_classes=10), inputs, build(num_classes=100))
    assert "head.weight axis 0 is 10 in the model, 100 in base" in message
    assert "head.bias axis 0 is 10 in the model, 100 in base" in message
    report = analyze(build(**wide, num_classes=10), inputs, base=build(num_classes=10))
    assert report["head.weight"].role == "output" and report["head.bias"].role == "fixed"


def test_vit_heads_and_d_head_growing_are_accepted() -> None:
    """Width through more heads (d_head fixed) or a longer d_head (heads fixed), MLP 4x."""
    images = torch.randn(2, 3, 16, 16)
    for heads in (2, 4):
        with torch.device("meta"):
            model, base = ViTClassifier(128, heads), ViTClassifier(64, 2)
        report = analyze(model, images.to("meta"), base=base)
        assert report.roles() == ground_truth_roles(model, base)
        assert report["head.weight"].role == "output"


def test_backbone_whose_output_grows_with_width_is_accepted() -> None:
    """No attention tells a single capture that the output is width; the base does."""
    model, base = MLPBackbone(128), MLPBackbone(64)
    report = analyze(model, torch.randn(2, 20), base=base)
    assert report["hidden.weight"].role == "hidden"
    assert report.roles() == ground_truth_roles(model, base)


def test_base_of_other_patch_size_is_refused() -> None:
    message = _refused(ViTClassifier(128, patch=4), torch.randn(2, 3, 16, 16),
                       ViTClassifier(64, patch=2))
    assert "patch_embed.weight axis 2 is 4 in the model, 2 in base" in message
