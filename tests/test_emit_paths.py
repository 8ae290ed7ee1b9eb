"""Every code path of an emitted file is muP, captured or not; what cannot be edited is refused.

Three model files written for these tests, each with paths one capture cannot all run: a GPT
with train/generate branches, a tied readout and attention chosen by ``self.flash``; a ViT
whose readout sits in ``forward_head`` and whose attention has a ``fused_attn`` switch and
dropout; an encoder choosing attention by a string (the math path in a top-level function)
with a pooled readout through ``F.linear(x, self.head.weight, ...)``. Each emitted model, at
2x and 4x the base width with the head size growing (base 32 wide, 2 heads), is compared in
every mode, float64, with muP written by hand from the original class (the readout's input
x 1/m, the query x sqrt(d_base / d_head), so that the logits are q.k sqrt(d_base) / d_head);
and its init with the RMS rule (hidden weights x m^-1/2 of the base's RMS, the rest x 1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from emitted import float64, import_without_muprewrite
from torch import nn

from muprewrite.emit import Emission, EmitError, emit

pytestmark = pytest.mark.slow

GPT = '''import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, block_size, flash):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.flash = flash
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size))
                             .view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.size()  # C: width
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, Dh)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.flash:
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                                                 is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, flash):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, flash)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, n_embd=32, n_head=2, vocab_size=40, block_size=16, flash=True):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head, block_size, flash) for _ in range(2)]),
            ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        pos = torch.arange(0, idx.size(1), dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        else:
            logits = self.lm_head(x[:, [-1], :])  # generation: the last position only
            loss = None
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0):
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.block_size:])
            probs = F.softmax(logits[:, -1, :] / temperature, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx

    def example_inputs(self):
        return (torch.randint(0, 40, (2, 8), device=self.lm_head.weight.device),)
'''

VIT = '''import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, num_heads, fused_attn):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(0.1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape  # C: width
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, N, Dh)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, num_heads, fused_attn):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, fused_attn)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, width=32, heads=2, fused_attn=True):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, width, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, width) * 0.02)
        self.blocks = nn.Sequential(*[Block(width, heads, fused_attn) for _ in range(2)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward_features(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, 16, width)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm(self.blocks(x + self.pos_embed))

    def forward_head(self, x, pre_logits: bool = False):
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x):
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x

    def example_inputs(self):
        return (torch.randn(2, 3, 16, 16),)
'''

ENCODER = '''import torch
import torch.nn.functional as F
from torch import nn


def math_attention(q, k, v):
    scores = torch.matmul(q, k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    return scores.softmax(-1) @ v


class Attention(nn.Module):
    def __init__(self, width, heads, impl):
        super().__init__()
        self.heads, self.impl = heads, impl
        self.q, self.kv = nn.Linear(width, width), nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x):
        B, N, C = x.shape  # C: width
        k, v = self.kv(x).chunk(2, dim=-1)
        q, k, v = (t.view(B, N, self.heads, -1).transpose(1, 2) for t in (self.q(x), k, v))
        if self.impl == "flash":
            y = F.scaled_dot_product_attention(q, k, v)
        elif self.impl == "math":
            y = math_attention(q, k, v)
        else:
            raise ValueError(self.impl)
        return self.out(y.transpose(1, 2).reshape(B, N, C))


class Encoder(nn.Module):
    def __init__(self, width=32, heads=2, impl="flash"):
        super().__init__()
        self.embed = nn.Linear(6, width)
        self.attn = Attention(width, heads, impl)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 5)

    def forward(self, x, pool=False):
        x = self.embed(x)
        h = self.norm(x + self.attn(x))
        if pool:
            return F.linear(h.mean(1), self.head.weight, self.head.bias)
        return self.head(h)

    def example_inputs(self):
        return (torch.randn(2, 5, 6),)
'''

WIDTHS = (64, 128)  # 2x and 4x the base width 32; 2 heads: d_head 16 -> 32, 64
TOLERANCE = 1e-10




def _emit(tmp_path: Path, name: str, source: str, model: str, base: str,
          inputs: str | None = None) -> tuple[Emission, ModuleType, ModuleType]:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    emission = emit(path, model, base, inputs_expr=inputs)
    out = tmp_path / f"{name}_mup.py"
    out.write_text(emission.source)
    return emission, import_without_muprewrite(out), import_without_muprewrite(path)


def _line(source: str, code: str) -> int:
    """The line of ``source`` that holds ``code`` (once)."""
    (line,) = [i for i, text in enumerate(source.splitlines(), 1) if code in text]
    return line


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().square().mean().sqrt())


def _check_init(model: nn.Module, plain: nn.Module, base: nn.Module) -> None:
    """The RMS rule, by hand: a weight whose two axes both grow (hidden) has m_in^-1/2 times
    the base's RMS, every other parameter the base's; each is the plain init rescaled."""
    base_params = dict(base.named_parameters())
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        b = base_params[name]
        if p.shape == b.shape or not q.any():
            assert torch.equal(p, q), name
            continue
        hidden = p.ndim == 2 and p.shape[0] != b.shape[0] and p.shape[1] != b.shape[1]
        factor = (p.shape[1] / b.shape[1]) ** -0.5 if hidden else 1.0
        assert _rms(p) == pytest.approx(factor * _rms(b), rel=1e-12), name
        torch.testing.assert_close(p, q * (_rms(p) / _rms(q)), rtol=1e-12, atol=1e-15)


def _scale_input(module: nn.Module, factor: float) -> None:
    module.register_forward_pre_hook(lambda _m, args: (args[0] * factor, *args[1:]))


def _scale_query(module: nn.Module, factor: float, parts: int) -> None:
    """A forward hook on the projection whose output starts with the query."""
    def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[..., :out.shape[-1] // parts] *= factor
        return out
    module.register_forward_hook(hook)


def _pair(emitted: ModuleType, original: ModuleType, cls: str, base_kwargs: dict,
          kwargs: dict, by_hand: Callable[[nn.Module, float, float], None]
          ) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(emitted model, by-hand muP reference, the original without muP), same weights."""
    torch.manual_seed(0)  # the emitted file's MUP_BASE_SEED
    base = getattr(original, cls)(**base_kwargs)
    torch.manual_seed(1)
    model = getattr(emitted, cls)(**kwargs)
    torch.manual_seed(1)
    reference = getattr(original, cls)(**kwargs)
    _check_init(model, reference, base)
    reference.load_state_dict(model.state_dict())
    plain = getattr(original, cls)(**kwargs)
    plain.load_state_dict(model.state_dict())
    width = next(v for k, v in kwargs.items() if k in ("n_embd", "width"))
    by_hand(reference, 32 / width, (16 / (width // 2)) ** 0.5)  # 1/m, sqrt(d_base / d_head)
    return model, reference, plain


def _compare(model: nn.Module, reference: nn.Module, plain: nn.Module,
             run: Callable[[nn.Module], tuple], errors: list[float]) -> None:
    """Same outputs as the reference (train mode: the same dropout draws), unlike ``plain``."""
    for training in (True, False):
        outs = []
        for m in (model, reference, plain):
            m.train(training)
            torch.manual_seed(5)
            outs.append([t for t in run(m) if t is not None])
        for got, want, unscaled in zip(*outs):
            got, want = got.detach(), want.detach()
            error = float((got - want).abs().max()) / max(1.0, float(want.abs().max()))
            errors.append(error)
            assert error <= TOLERANCE, error
            assert not torch.allclose(got, unscaled, rtol=1e-6, atol=1e-9)  # muP acts here


def _gpt_by_hand(model: nn.Module, inv_m: float, logit: float) -> None:
    _scale_input(model.lm_head, inv_m)
    for block in model.transformer.h:
        _scale_query(block.attn.c_attn, logit, 3)


@pytest.mark.parametrize("captured", ["generate", "train", "math"])
def test_gpt_every_branch_and_attention_path(tmp_path: Path, captured: str) -> None:
    """Captured through one branch and one attention path, the other branch and path are
    edited by pattern: generation and training logits, flash and math, all equal muP."""
    flash = captured != "math"
    inputs = "int(2, 8, high=40), targets=int(2, 8, high=40)" if captured == "train" else None
    emission, emitted, original = _emit(tmp_path, "gpt", GPT, f"GPT(n_embd=64, flash={flash})",
                                        f"GPT(n_embd=32, flash={flash})", inputs)
    train, generate = "logits = self.lm_head(x)", "logits = self.lm_head(x[:, [-1], :])"
    math, sdpa = "att = (q @ k.transpose(-2, -1))", "scaled_dot_product_attention(q, k, v"
    pattern = {"generate": [train, math], "train": [generate, math], "math": [train, sdpa]}
    noted = [c for c in emission.changes if c.endswith("not run by any capture; edited by "
                                                       "pattern")]
    assert [int(c.split(":")[1]) for c in noted] == sorted(
        _line(GPT, code) for code in pattern[captured])
    errors: list[float] = []
    with float64():
        idx, targets = torch.randint(0, 40, (2, 8)), torch.randint(0, 40, (2, 8))
        for width in WIDTHS:
            for mode in (True, False):
                model, reference, plain = _pair(emitted, original, "GPT", {"n_embd": 32},
                                                {"n_embd": width, "flash": mode}, _gpt_by_hand)
                _compare(model, reference, plain, lambda m: m(idx), errors)
                _compare(model, reference, plain, lambda m: m(idx, targets), errors)
    assert len(errors) == 2 * 2 * 2 * 3 and max(errors) <= TOLERANCE  # (logits) + (logits, loss)


def test_gpt_header_and_source(tmp_path: Path) -> None:
    emission, _, _ = _emit(tmp_path, "gpt", GPT, "GPT(n_embd=64)", "GPT(n_embd=32)")
    source = emission.source
    assert "logits = self.lm_head(x * self.mup_lm_head_multiplier)\n" in source
    assert "self.lm_head(x[:, [-1], :] * self.mup_lm_head_multiplier)" in source
    assert "att = (q @ k.transpose(-2, -1)) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5 * " \
           "(1.0 / math.sqrt(k.size(-1)))" in source
    assert "self.transformer.wte(idx)" in source  # the tied weight's lookup stays unscaled
    assert "probs = F.softmax(logits[:, -1, :] / temperature, dim=-1)" in source
    header = " ".join(line[2:] for line in source.splitlines()[:12] if line.startswith("#"))
    assert f"gpt.py:{_line(GPT, 'logits = self.lm_head(x)')}: readout call self.lm_head(...) " \
           "not run by any capture; edited by pattern" in header
    assert f"gpt.py:{_line(GPT, 'att = (q @ k')}: q.k^T product before a softmax not run by " \
           "any capture" in header


def _vit_by_hand(model: nn.Module, inv_m: float, logit: float) -> None:
    _scale_input(model.head, inv_m)
    for block in model.blocks:
        _scale_query(block.attn.qkv, logit, 3)


def test_vit_forward_head_and_both_attention_paths(tmp_path: Path) -> None:
    """The readout in forward_head (refused before, at the wrong line) is edited; fused and
    non-fused attention, train (dropout) and eval, all equal muP."""
    emission, emitted, original = _emit(tmp_path, "vit", VIT, "ViT(width=64)", "ViT(width=32)")
    assert "return x if pre_logits else self.head(x * self.mup_head_multiplier)" in \
        emission.source
    assert f"vit.py:{_line(VIT, 'attn = q @ k')}: q.k^T product before a softmax not run by " \
           "any capture" in " ".join(emission.changes)
    errors: list[float] = []
    with float64():
        torch.manual_seed(3)
        x = torch.randn(2, 3, 16, 16)
        for width in WIDTHS:
            for fused in (True, False):
                model, reference, plain = _pair(emitted, original, "ViT", {"width": 32},
                                                {"width": width, "fused_attn": fused},
                                                _vit_by_hand)
                _compare(model, reference, plain, lambda m: (m(x),), errors)
                _compare(model, reference, plain,
                         lambda m: (m.forward_head(m.forward_features(x)),), errors)
    assert len(errors) == 2 * 2 * 2 * 2 and max(errors) <= TOLERANCE


def _encoder_by_hand(model: nn.Module, inv_m: float, logit: float) -> None:
    with torch.no_grad():
        model.head.weight.mul_(inv_m)  # W x/m for both readout forms
    _scale_query(model.attn.q, logit, 1)


def test_string_mode_helper_function_and_functional_readout(tmp_path: Path) -> None:
    """Attention chosen by a string, the math path in a top-level function; the pooled
    readout through F.linear(x, self.head.weight, bias): edited by pattern, equal to muP."""
    emission, emitted, original = _emit(tmp_path, "encoder", ENCODER, "Encoder(width=64)",
                                        "Encoder(width=32)")
    assert "return F.linear(h.mean(1) * self.mup_head_multiplier, self.head.weight, " \
           "self.head.bias)" in emission.source
    assert "scores = torch.matmul(q, k.transpose(-2, -1)) * (MUP_D_HEAD_BASE / " \
           "q.shape[-1]) ** 0.5 / q.shape[-1] ** 0.5" in emission.source
    errors: list[float] = []
    with float64():
        torch.manual_seed(3)
        x = torch.randn(2, 5, 6)
        for width in WIDTHS:
            for impl in ("flash", "math"):
                model, reference, plain = _pair(emitted, original, "Encoder", {"width": 32},
                                                {"width": width, "impl": impl},
                                                _encoder_by_hand)
                for pool in (False, True):
                    _compare(model, reference, plain, lambda m, p=pool: (m(x, p),), errors)
    assert len(errors) == 2 * 2 * 2 * 2 and max(errors) <= TOLERANCE


@pytest.mark.parametrize("source, needle, code", [
    (VIT.replace("            attn = q @ k.transpose(-2, -1)\n",
                 "            attn = -torch.cdist(q, k)\n"),
     "softmax over something the emitter does not recognise as a q.k^T product",
     "attn = attn.softmax(dim=-1)"),
    (VIT.replace("    def forward(self, x):\n        x = self.forward_features(x)",
                 "    def get_classifier(self):\n        return self.head\n\n"
                 "    def forward(self, x):\n        x = self.forward_features(x)"),
     "self.head (the readout) is used other than by a call", "return self.head"),
    (VIT.replace("    def forward(self, x):\n        x = self.forward_features(x)",
                 "    def logits(self, x, name='head'):\n        return getattr(self, name)(x)\n\n"
                 "    def forward(self, x):\n        x = self.forward_features(x)"),
     "getattr(self, ...) may reach the readout", "return getattr(self, name)(x)"),
], ids=["softmax-not-qk", "readout-returned", "getattr"])
def test_what_cannot_be_edited_is_refused_at_its_line(tmp_path: Path, source: str,
                                                      needle: str, code: str) -> None:
    """An attention-like softmax or a readout use the emitter cannot edit with certainty, in a
    method no capture ran: an EmitError naming path:line and the runtime fallback."""
    path = tmp_path / "vit.py"
    path.write_text(source)
    with pytest.raises(EmitError) as err:
        emit(path, "ViT(width=64)", "ViT(width=32)")
    line = _line(source, code)
    assert needle in err.value.message and f"{path}:{line}" in str(err.value), str(err.value)
    assert "muprewrite.apply" in err.value.fix
