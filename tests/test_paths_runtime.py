"""The runtime attention edit reaches every path of a host's forward, or refuses at the call.

Models written here in the style of timm's Attention (``fused_attn``), nanoGPT's
CausalSelfAttention (``flash``), an ``nn.TransformerEncoder`` classifier and an
``nn.MultiheadAttention`` cross-attention. Each is rewritten from one capture, then run on
every path (fused / explicit, flash / math, train / eval, ``need_weights``, the encoder's
fast paths) against a by-hand muP reference in float64: attention scale sqrt(d_base)/d_head
set by hand (our classes' ``mup_scale``; an explicit implementation from the module's
weights for ``nn.MultiheadAttention``) and the readout's input x 1/m.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import flex_attention

import muprewrite
from muprewrite import MuprewriteError

IN, OUT, SEQ, CTX, VOCAB = 6, 5, 7, 3, 11
BASE_WIDTH, BASE_HEADS = 16, 2  # base d_head 8


@torch.library.custom_op("flash_attn::muprewrite_stand_in", mutates_args=())
def _flash_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A kernel in flash-attn's torch.ops namespace, as flash-attn >= 2.6 registers them."""
    return F.scaled_dot_product_attention(q, k, v)


@pytest.fixture(autouse=True)
def _float64() -> Any:
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


class Attention(nn.Module):
    """timm style; ``mode``: "fused" (SDPA), "explicit" (@), "einsum", "baddbmm"; to be
    refused: "split" and "split-explicit" (twice the heads: a head size the capture never
    saw), "sigmoid" (logits that never reach a softmax), "mulsum" (q.k^T as a product and a sum),
    "kernel" (flash-attn's op namespace), "flex"."""

    def __init__(self, dim: int, heads: int, mode: str = "fused", p: float = 0.1) -> None:
        super().__init__()
        self.heads, self.head_dim, self.mode = heads, dim // heads, mode
        self.scale = self.head_dim ** -0.5
        self.mup_scale: float | None = None  # the by-hand reference's scale
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        heads = 2 * self.heads if self.mode.startswith("split") else self.heads
        # [3, B, heads, N, d_head (width)]
        q, k, v = self.qkv(x).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        if self.mode in ("fused", "split"):
            p = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p,
                                               scale=self.mup_scale)
        elif self.mode in ("kernel", "flex"):
            x = _flash_kernel(q, k, v) if self.mode == "kernel" else flex_attention(q, k, v)
        else:
            attn = self._logits(q, k, bias, self.mup_scale or self.scale)
            attn = attn.sigmoid() if self.mode == "sigmoid" else attn.softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))

    def _logits(self, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None,
                scale: float) -> torch.Tensor:
        """[B, heads, N, N], plus the additive relative-position bias."""
        B, H, N, _ = q.shape
        if self.mode == "baddbmm":
            add = (bias if bias is not None else q.new_zeros(1, N, N)).expand(B * H, N, N)
            return torch.baddbmm(add, q.flatten(0, 1), k.flatten(0, 1).transpose(1, 2),
                                 alpha=scale).view(B, H, N, N)
        if self.mode == "einsum":
            attn = torch.einsum("...id,...jd->...ij", q * scale, k)
        else:
            q = q * scale
            attn = (q[..., :, None, :] * k[..., None, :, :]).sum(-1) if self.mode == "mulsum" \
                else q @ k.mT
        return attn if bias is None else attn + bias


class ViT(nn.Module):
    """Pre-norm blocks with a learned relative-position bias, then an inline SDPA in the
    root's own forward (a host that encloses the blocks' hosts), a mean pool, a readout."""

    def __init__(self, width: int, heads: int, mode: str = "fused") -> None:
        super().__init__()
        self.heads, self.mup_scale = heads, None
        self.embed = nn.Linear(IN, width)
        self.rel = nn.Parameter(0.5 * torch.randn(1, SEQ, SEQ))
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "norm1": nn.LayerNorm(width), "attn": Attention(width, heads, mode),
            "norm2": nn.LayerNorm(width), "fc": nn.Linear(width, width)}) for _ in range(2))
        self.head = nn.Linear(width, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for blk in self.blocks:
            h = h + blk["attn"](blk["norm1"](h), self.rel)
            h = h + F.gelu(blk["fc"](blk["norm2"](h)))
        B, N, C = h.shape
        q = h.view(B, N, self.heads, C // self.heads).transpose(1, 2)  # [B, H, N, d_head]
        h = h + F.scaled_dot_product_attention(q, q, q, scale=self.mup_scale).transpose(
            1, 2).reshape(B, N, C)
        return self.head(h.mean(1))


class CausalSelfAttention(nn.Module):
    """nanoGPT style: ``flash`` picks SDPA, else the masked explicit softmax."""

    def __init__(self, width: int, heads: int, p: float = 0.1) -> None:
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.n_head, self.dropout, self.flash = heads, p, True
        self.mup_scale: float | None = None
        self.attn_dropout = nn.Dropout(p)
        self.register_buffer("bias", torch.tril(torch.ones(SEQ, SEQ)).view(1, 1, SEQ, SEQ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # [B, H, T, d]
                   for t in self.c_attn(x).split(C, dim=2))
        if self.flash:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True,
                                               scale=self.mup_scale)
        else:
            att = (q @ k.transpose(-2, -1)) * (self.mup_scale or 1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            y = self.attn_dropout(F.softmax(att, dim=-1)) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class GPT(nn.Module):
    def __init__(self, width: int, heads: int, flash: bool = True) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, width), nn.Embedding(SEQ, width)
        self.h = nn.ModuleList(CausalSelfAttention(width, heads) for _ in range(2))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for blk in self.h:
            blk.flash = flash

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.h:
            x = x + blk(x)
        return self.lm_head(self.ln_f(x))


class Encoder(nn.Module):
    """An ``nn.TransformerEncoder`` classifier (post-norm: the nested-tensor fast path)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Linear(IN, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(width, OUT)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x), src_key_padding_mask=pad).mean(1))


class Cross(nn.Module):
    """``nn.MultiheadAttention`` cross-attention over a context: a packed in-projection
    (context projected to the width) or separate ones (``kdim = vdim = CTX``)."""

    def __init__(self, width: int, heads: int, separate: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(IN, width)
        self.ctx = nn.Identity() if separate else nn.Linear(CTX, width)
        kdim = CTX if separate else None
        self.mha = nn.MultiheadAttention(width, heads, batch_first=True, kdim=kdim, vdim=kdim)
        self.head, self.need_weights = nn.Linear(width, OUT), True

    def forward(self, x: torch.Tensor, c: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h, c = self.embed(x), self.ctx(c)
        out, _ = self.mha(h, c, c, key_padding_mask=pad, need_weights=self.need_weights)
        return self.head(out + h)


def _mha(mha: nn.MultiheadAttention, q_in: torch.Tensor, kv_in: torch.Tensor, scale: float,
         pad: torch.Tensor | None) -> torch.Tensor:
    """nn.MultiheadAttention (batch_first, no dropout) written out from its weights."""
    E, H = mha.embed_dim, mha.num_heads
    if mha._qkv_same_embed_dim:
        wq, wk, wv = mha.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bq, bk, bv = mha.in_proj_bias.chunk(3)

    def heads(t: torch.Tensor) -> torch.Tensor:  # [B, L, E] -> [B, H, L, d_head]
        return t.view(t.shape[0], t.shape[1], H, E // H).transpose(1, 2)

    q, k, v = heads(F.linear(q_in, wq, bq)), heads(F.linear(kv_in, wk, bk)), heads(F.linear(kv_in, wv, bv))
    logits = q @ k.transpose(-2, -1) * scale
    if pad is not None:
        logits = logits.masked_fill(pad[:, None, None, :], float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(q_in.shape)
    return F.linear(out, mha.out_proj.weight, mha.out_proj.bias)


def _readout(head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, head.weight, head.bias)  # not head(x): head itself is rewritten


def _encoder_reference(model: Encoder, x: torch.Tensor, pad: torch.Tensor | None,
                       scale: float, m_inv: float) -> torch.Tensor:
    h = model.embed(x)
    for layer in model.encoder.layers:
        h = layer.norm1(h + _mha(layer.self_attn, h, h, scale, pad))
        h = layer.norm2(h + layer.linear2(F.relu(layer.linear1(h))))
    return _readout(model.head, h.mean(1) * m_inv)


def _scales(width: int, heads: int) -> tuple[float, float]:
    """(the muP attention scale, the readout factor 1/m) at this width."""
    d_head = width // heads
    scale = math.sqrt(BASE_WIDTH // BASE_HEADS) / d_head if heads == BASE_HEADS else d_head ** -0.5
    return scale, BASE_WIDTH / width


def _sizes(m: int, grow: str) -> tuple[int, int]:
    return BASE_WIDTH * m, BASE_HEADS * (m if grow == "heads" else 1)


def _by_hand(model: nn.Module, m: int, grow: str, readout: str) -> nn.Module:
    """The muP reference: attention scale and readout factor set by hand."""
    scale, m_inv = _scales(*_sizes(m, grow))
    for module in model.modules():
        if hasattr(module, "mup_scale"):
            module.mup_scale = scale
    model.get_submodule(readout).register_forward_pre_hook(
        lambda mod, args: (args[0] * m_inv, *args[1:]))
    return model


def _same(run: Callable[[], torch.Tensor], reference: Callable[[], torch.Tensor],
          *models: nn.Module) -> None:
    """Train and eval mode (dropout drawn from the same seed), to 1e-10 in float64."""
    for training in (True, False):
        for model in models:
            model.train(training)
        torch.manual_seed(7)
        got = run()
        torch.manual_seed(7)
        torch.testing.assert_close(got, reference(), rtol=0, atol=1e-10)


PATHS = pytest.mark.parametrize("m, grow", [(2, "d_head"), (4, "d_head"), (2, "heads"),
                                            (4, "heads")])


def _built(cls: type[nn.Module], m: int, grow: str, **kw: Any) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    base = cls(BASE_WIDTH, BASE_HEADS, **kw)
    torch.manual_seed(1)
    return cls(*_sizes(m, grow), **kw), base


def _twin(model: nn.Module, cls: type[nn.Module], m: int, grow: str, readout: str,
          **kw: Any) -> nn.Module:
    twin = cls(*_sizes(m, grow), **kw)
    twin.load_state_dict(model.state_dict())
    return _by_hand(twin, m, grow, readout)


@PATHS
@pytest.mark.parametrize("captured", ["fused", "explicit"])
def test_timm_style_every_path(m: int, grow: str, captured: str) -> None:
    model, base = _built(ViT, m, grow, mode=captured)
    reference = _twin(model, ViT, m, grow, "head")
    x = torch.randn(3, SEQ, IN)
    muprewrite.apply(model, (x,), base=base, init=False)
    for mode in ("fused", "explicit", "einsum", "baddbmm"):
        for net in (model, reference):
            for blk in net.blocks:
                blk["attn"].mode = mode
        _same(lambda: model(x), lambda: reference(x), model, reference)


@PATHS
@pytest.mark.parametrize("captured", [True, False], ids=["flash", "math"])
def test_nanogpt_style_every_path(m: int, grow: str, captured: bool) -> None:
    model, base = _built(GPT, m, grow, flash=captured)
    reference = _twin(model, GPT, m, grow, "lm_head")
    idx = torch.randint(0, VOCAB, (3, SEQ))
    muprewrite.apply(model, (idx,), base=base, init=False)
    for flash in (True, False):
        for net in (model, reference):
            for blk in net.h:
                blk.flash = flash
        _same(lambda: model(idx), lambda: reference(idx), model, reference)


@PATHS
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # torch's own path
def test_transformer_encoder_every_path(m: int, grow: str) -> None:
    """Train, eval and the eval-mode fast paths (fused layer; nested tensors with a padding
    mask) against the encoder written out by hand."""
    model, base = _built(Encoder, m, grow)
    x, pad = torch.randn(3, SEQ, IN), torch.zeros(3, SEQ, dtype=torch.bool)
    pad[0, -2:] = True
    muprewrite.apply(model, (x,), base=base, init=False)
    scale, m_inv = _scales(*_sizes(m, grow))

    def reference(mask: torch.Tensor | None) -> torch.Tensor:
        if grow == "heads":  # factor 1: the encoder as torch runs it, fast paths included
            return _readout(model.head, model.encoder(model.embed(x), src_key_padding_mask=mask).mean(1) * m_inv)
        return _encoder_reference(model, x, mask, scale, m_inv)

    for mask in (None, pad):
        _same(partial(model, x, mask), partial(reference, mask), model)
        with torch.no_grad():
            model.eval()
            torch.testing.assert_close(model(x, mask), reference(mask), rtol=0, atol=1e-10)


@PATHS
@pytest.mark.parametrize("separate", [False, True], ids=["packed", "separate"])
def test_multihead_attention_every_path(m: int, grow: str, separate: bool) -> None:
    model, base = _built(Cross, m, grow, separate=separate)
    x, c = torch.randn(3, SEQ, IN), torch.randn(3, 4, CTX)
    pad = torch.tensor([[False, False, False, True]] * 3)
    muprewrite.apply(model, (x, c, pad), base=base, init=False)
    scale, m_inv = _scales(*_sizes(m, grow))

    def reference() -> torch.Tensor:
        h, ctx = model.embed(x), model.ctx(c)
        return _readout(model.head, (_mha(model.mha, h, ctx, scale, pad) + h) * m_inv)

    for need_weights in (True, False):
        model.need_weights = need_weights
        _same(lambda: model(x, c, pad), reference, model)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x, c, pad), reference(), rtol=0, atol=1e-10)


def test_heads_growing_pays_nothing() -> None:
    """Factor 1 everywhere: no logit table, no mode on the attention modules, no guard."""
    for cls, inputs in ((ViT, (torch.randn(2, SEQ, IN),)), (Encoder, (torch.randn(2, SEQ, IN),))):
        model, base = _built(cls, 2, "heads")
        muprewrite.apply(model, inputs, base=base, init=False)
        plan = muprewrite.plan_of(model)
        assert plan is not None and all(h.logits is None and not h.attention for h in plan.hosts)
        hosts = {n for n, mod in model.named_modules() if hasattr(mod, "_muprewrite_host")}
        assert hosts == {h.module for h in plan.hosts} == {"head"}


@pytest.mark.parametrize("mode, match", [
    ("split", "scaled_dot_product_attention with head size 16"),
    ("split-explicit", "softmax over a product of activations contracting a size-16 axis"),
    ("sigmoid", "never reached a softmax"), ("mulsum", r"no q.k\^T product it can recognise"),
    ("kernel", "flash_attn kernel"),
    ("flex", "flex_attention")])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_an_attention_it_cannot_scale_raises_naming_the_module(mode: str, match: str) -> None:
    def build(width: int) -> nn.Module:
        return nn.Sequential(nn.Linear(IN, width), Attention(width, 2, p=0.0),
                             nn.Linear(width, OUT))

    x = torch.randn(2, SEQ, IN)
    model = muprewrite.apply(build(64), (x,), base=build(32), init=False)
    model[1].mode = mode
    with pytest.raises(MuprewriteError, match=match) as info, torch.no_grad():
        model(x)  # (no_grad: flex_attention has no backward on the CPU)
    assert "muprewrite cannot apply the attention logit factor in 1 (Attention)" in str(info.value)
    assert "test_paths_runtime.py:" in info.value.where  # the call, or the planned site


def flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    softmax_scale: float | None = None) -> torch.Tensor:
    """A stand-in with flash-attn's name and layout ([B, N, heads, d_head])."""
    out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)),
                                         scale=softmax_scale)
    return out.transpose(1, 2)


def memory_efficient_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               scale: float | None = None) -> torch.Tensor:
    """A stand-in with xformers' name and layout."""
    return flash_attn_func(q, k, v, scale)


class Backends(Attention):
    """An attention with a ``backend`` attribute: "sdpa" (captured), "flash", "xformers"."""

    backend = "sdpa"

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.backend == "sdpa":
            return super().forward(x, bias)
        return self._external(x)

    def _external(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).unbind(2)
        if self.backend == "flash":
            y = flash_attn_func(q, k, v, softmax_scale=self.scale)
        else:
            y = memory_efficient_attention(q, k, v, scale=self.scale)
        return self.proj(y.reshape(B, N, C))


def test_external_kernels_are_refused_where_reached_when_logits_need_a_factor() -> None:
    """Not at apply (a model that never takes that path runs): at the call, naming its line."""
    def build(width: int, heads: int = 2) -> nn.Module:
        return nn.Sequential(nn.Linear(IN, width), Backends(width, heads, p=0.0),
                             nn.Linear(width, OUT))

    x = torch.randn(2, SEQ, IN)
    model = muprewrite.apply(build(64), (x,), base=build(32))
    assert model(x).shape == (2, SEQ, OUT)  # the captured path, sdpa
    for backend, name in (("flash", "flash_attn_func"), ("xformers", "memory_efficient_attention")):
        model[1].backend = backend
        with pytest.raises(MuprewriteError, match=rf"{name} \(") as info:
            model(x)
        line = inspect.getsourcelines(Backends._external)
        call = next(i for i, text in enumerate(line[0]) if f"= {name}(" in text)
        assert info.value.where == f"{__file__}:{line[1] + call}"
    model = muprewrite.apply(build(64, 4), (x,), base=build(32))  # heads grow: factor 1
    model[1].backend = "xformers"
    assert model(x).shape == (2, SEQ, OUT)


def test_no_new_graph_breaks_on_either_path() -> None:
    import torch._dynamo as dynamo

    for mode in ("explicit", "fused"):
        model, base = _built(ViT, 2, "d_head", mode=mode)
        x = torch.randn(2, SEQ, IN)
        dynamo.reset()
        before = dynamo.explain(model)(x)
        muprewrite.apply(model, (x,), base=base, init=False)
        dynamo.reset()
        after = dynamo.explain(model)(x)
        assert (after.graph_count, after.graph_break_count) == (before.graph_count,
                                                                before.graph_break_count)
