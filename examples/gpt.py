"""
GPT: a decoder-only transformer language model in the shape of GPT-2.

Follows "Language Models are Unsupervised Multitask Learners" (Radford et al.,
2019) as laid out in nanoGPT: learned token and position embeddings, a stack of
pre-LayerNorm blocks (causal self-attention with one fused qkv projection, then
a 4x GELU MLP), a final LayerNorm and a language-model head whose weight is tied
to the token embedding. Initialisation is GPT-2's: Normal(0, 0.02) everywhere,
with the residual output projections (c_proj) scaled down by 1/sqrt(2 * n_layer).

Width notation used in the shape comments below:
    B  batch            T  sequence length (fixed, at most block_size)
    D  n_embd           H  n_head             Dh  head_dim, D = H * Dh
Axes marked "grows with width" scale with n_embd; the vocabulary and the
context length stay fixed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention with a fused qkv projection."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_embd = n_embd
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H, Dh = self.n_head, self.head_dim
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, D)
        q = q.view(B, T, H, Dh).transpose(1, 2)  # (B, T, H, Dh) -> (B, H, T, Dh); D = H * Dh grows with width
        k = k.view(B, T, H, Dh).transpose(1, 2)  # (B, T, H, Dh) -> (B, H, T, Dh); D = H * Dh grows with width
        v = v.view(B, T, H, Dh).transpose(1, 2)  # (B, T, H, Dh) -> (B, H, T, Dh); D = H * Dh grows with width
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, H * Dh) = (B, T, D); D grows with width
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network with a 4x hidden expansion."""

    def __init__(self, n_embd: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, bias, dropout)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, bias, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """The trunk: embeddings, the block stack and the final LayerNorm (no output head)."""

    def __init__(
        self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int, bias: bool, dropout: float
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)  # token embedding
        self.wpe = nn.Embedding(block_size, n_embd)  # learned position embedding
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList([Block(n_embd, n_head, bias, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)


class GPT(nn.Module):
    """Decoder-only language model: token ids (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(
        self,
        vocab_size: int = 256,
        block_size: int = 32,
        n_layer: int = 2,
        n_head: int = 2,
        n_embd: int = 64,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.head_dim = n_embd // n_head

        # `transformer` is registered before `lm_head`, so the tied weight is
        # reported by named_parameters() as transformer.wte.weight
        self.transformer = Transformer(vocab_size, block_size, n_layer, n_head, n_embd, bias, dropout)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying

        self.apply(self._init_weights)
        # GPT-2: scale the init of the projections that write into the residual stream
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) integer token ids with T <= block_size. Returns logits (B, T, vocab_size)."""
        _, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, D)
        pos_emb = self.transformer.wpe(pos)  # (T, D)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, D)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        return self.lm_head(x)  # (B, T, vocab_size); fixed size, not width

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        device = next(self.parameters()).device
        idx = torch.randint(0, self.vocab_size, (batch_size, self.block_size), device=device)
        return (idx,)
