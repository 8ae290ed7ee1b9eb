"""
PixArt-alpha: a text-conditional diffusion transformer.

Follows "PixArt-alpha: Fast Training of Diffusion Transformer for Photorealistic
Text-to-Image Synthesis" (Chen et al., ICLR 2024, arXiv:2310.00426). The
backbone is DiT with two changes:

  * text conditioning: every block gets a cross-attention layer from the image
    tokens to the (projected) caption tokens of a frozen text encoder;
  * adaLN-single: the timestep embedding is turned into one set of six
    shift/scale/gate vectors by a single shared `t_block`; each block only adds
    its own small learned `scale_shift_table` to it, instead of owning a full
    adaLN MLP as in DiT.

Width notation used in the shape comments below:
    B  batch            N  number of image tokens (fixed)   L  caption length (fixed)
    D  hidden_size      H  num_heads          Dh  head_dim, D = H * Dh
Axes marked "grows with width" scale with hidden_size; everything else
(patch size, channels, caption_channels, the 256-wide frequency embedding)
stays fixed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Modulation with shift, scale already broadcastable to x: (B, N, D) with (B, 1, D)."""
    return x * (1 + scale) + shift


def zero_init(layer: nn.Module) -> None:
    """Set every parameter of layer (weight and bias) to zero."""
    for p in layer.parameters():
        nn.init.zeros_(p)


def normal_init_linears(module: nn.Module, std: float) -> None:
    """Normal(0, std) weights for every Linear inside module; biases are left as they are."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=std)


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Fixed sine/cosine features for a flat list of positions -> (len(positions), embed_dim)."""
    half = embed_dim // 2
    omega = torch.arange(half, dtype=torch.float32, device=positions.device) / half
    omega = 1.0 / (10000.0**omega)  # (embed_dim / 2,)
    angles = positions.float()[:, None] * omega[None, :]  # (P, embed_dim / 2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (P, embed_dim)


def sincos_2d(embed_dim: int, grid_size: int, device: torch.device | None = None) -> torch.Tensor:
    """
    Fixed 2D position table for a grid_size x grid_size patch grid, row-major.
    The first half of the channels encodes the column, the second half the row.
    Returns (grid_size * grid_size, embed_dim).
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"2D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float32, device=device)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # each (g, g)
    emb_cols = sincos_1d(embed_dim // 2, cols.reshape(-1))  # (g*g, D/2)
    emb_rows = sincos_1d(embed_dim // 2, rows.reshape(-1))  # (g*g, D/2)
    return torch.cat([emb_cols, emb_rows], dim=1)  # (g*g, D); D grows with width


# -----------------------------------------------------------------------------
# embedders


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens via a strided convolution."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, h, w); D grows with width
        x = x.flatten(2)  # (B, D, N) with N = h * w
        return x.transpose(1, 2)  # (B, N, D); D grows with width


class TimestepEmbedder(nn.Module):
    """Scalar diffusion timestep -> vector of size hidden_size."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """Sinusoidal features of (possibly fractional) timesteps t: (B,) -> (B, dim)."""
        half = dim // 2
        exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half
        freqs = torch.exp(-math.log(max_period) * exponents)  # (dim / 2,)
        args = t.float()[:, None] * freqs[None, :]  # (B, dim / 2); fixed size, not width
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)  # (B, 256)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (B, D); in the model's dtype


class CaptionEmbedder(nn.Module):
    """Projects text-encoder features (fixed width caption_channels) to hidden_size."""

    def __init__(self, caption_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(caption_channels, hidden_size)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(caption)))  # (B, L, C_txt) -> (B, L, D)


# -----------------------------------------------------------------------------
# transformer


class SelfAttention(nn.Module):
    """Multi-head self-attention over image tokens with a single fused qkv projection."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        H, Dh = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(B, N, 3, H, Dh)  # (B, N, 3, H, Dh); D = H*Dh grows with width
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, N, Dh); H and/or Dh grow with width
        q, k, v = qkv.unbind(0)  # each (B, H, N, Dh)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)
        y = y.transpose(1, 2).reshape(B, N, D)  # (B, N, H * Dh) = (B, N, D); D grows with width
        return self.proj(y)


class CrossAttention(nn.Module):
    """Image tokens (queries) attend to caption tokens (keys/values)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_linear = nn.Linear(hidden_size, hidden_size)
        self.kv_linear = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        L = cond.shape[1]
        H, Dh = self.num_heads, self.head_dim
        q = self.q_linear(x).reshape(B, N, H, Dh)  # (B, N, H, Dh); D = H*Dh grows with width
        q = q.transpose(1, 2)  # (B, H, N, Dh)
        kv = self.kv_linear(cond).reshape(B, L, 2, H, Dh)  # (B, L, 2, H, Dh); D = H*Dh grows with width
        kv = kv.permute(2, 0, 3, 1, 4)  # (2, B, H, L, Dh); H and/or Dh grow with width
        k, v = kv.unbind(0)  # each (B, H, L, Dh)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh); query length N != key length L
        y = y.transpose(1, 2).reshape(B, N, D)  # (B, N, H * Dh) = (B, N, D); D grows with width
        return self.proj(y)


class MLP(nn.Module):
    """Position-wise feed-forward network."""

    def __init__(self, hidden_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PixArtBlock(nn.Module):
    """Self-attention, cross-attention to the caption, MLP; adaLN-single modulation."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden_size, num_heads)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(hidden_size, int(hidden_size * mlp_ratio))
        # per-block offset added to the shared timestep modulation
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) image tokens, cond: (B, L, D) caption tokens, t: (B, 6 * D) from t_block."""
        B = x.shape[0]
        mod = self.scale_shift_table[None] + t.reshape(B, 6, -1)  # (B, 6, D); D grows with width
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)  # each (B, 1, D)
        x = x + gate_msa * self.attn(t2i_modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn(x, cond)
        x = x + gate_mlp * self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """Final modulation (own scale_shift_table) and projection of tokens to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D), t: (B, D) timestep embedding (before t_block)."""
        mod = self.scale_shift_table[None] + t[:, None]  # (B, 2, D); D grows with width
        shift, scale = mod.chunk(2, dim=1)  # each (B, 1, D)
        x = t2i_modulate(self.norm_final(x), shift, scale)
        return self.linear(x)  # (B, N, p * p * C_out); fixed size, not width


# -----------------------------------------------------------------------------
# the full model


class PixArtAlpha(nn.Module):
    """PixArt-alpha: (noisy latent, timestep, caption embeddings) -> noise (+ variance)."""

    def __init__(
        self,
        input_size: int = 16,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 128,
        depth: int = 2,
        num_heads: int = 2,
        mlp_ratio: float = 4.0,
        caption_channels: int = 64,
        model_max_length: int = 8,
        learn_sigma: bool = True,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if input_size % patch_size != 0:
            raise ValueError(f"input_size ({input_size}) must be divisible by patch_size ({patch_size})")
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.caption_channels = caption_channels
        self.model_max_length = model_max_length
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size * self.grid_size

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        # adaLN-single: one shared projection of the timestep to 6 modulation vectors
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size)
        # fixed sin-cos table, filled in initialize_weights()
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([PixArtBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # default for every Linear: xavier-uniform weight, zero bias
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        # fixed 2D sin-cos position embedding, computed with torch on the parameter's device
        with torch.no_grad():
            table = sincos_2d(self.hidden_size, self.grid_size, device=self.pos_embed.device)  # (N, D)
            self.pos_embed.copy_(table.unsqueeze(0))  # (1, N, D); D grows with width

        # patch embedding: treat the conv kernel like a Linear(in_ch * p * p, D)
        w = self.x_embedder.proj.weight  # (D, C_in, p, p)
        nn.init.xavier_uniform_(w.data.view(w.shape[0], -1))  # (D, C_in * p * p); D grows with width
        if self.x_embedder.proj.bias is not None:
            nn.init.zeros_(self.x_embedder.proj.bias)

        # timestep and caption embedders
        normal_init_linears(self.t_embedder.mlp, std=0.02)
        normal_init_linears(self.t_block, std=0.02)
        normal_init_linears(self.y_embedder, std=0.02)

        # cross-attention starts as a no-op, so the model starts as an unconditional DiT
        for module in self.modules():
            if isinstance(module, CrossAttention):
                zero_init(module.proj)

        # the output starts at zero
        zero_init(self.final_layer.linear)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p * p * C_out) tokens -> (B, C_out, input_size, input_size) image."""
        B = x.shape[0]
        c, p, g = self.out_channels, self.patch_size, self.grid_size
        x = x.reshape(B, g, g, p, p, c)  # (B, h, w, p, p, C_out); fixed sizes, nothing grows with width
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C_out, h, p, w, p)
        return x.reshape(B, c, g * p, g * p)  # (B, C_out, H, W)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """
        x: (B, C_in, H, W) noisy latents, t: (B,) timesteps,
        y: (B, model_max_length, caption_channels) text-encoder features.
        Returns (B, C_out, H, W) with C_out = 2 * C_in if learn_sigma else C_in.
        """
        x = self.x_embedder(x) + self.pos_embed  # (B, N, D)
        t_emb = self.t_embedder(t)  # (B, D)
        t_mod = self.t_block(t_emb)  # (B, 6 * D); shared by all blocks
        cond = self.y_embedder(y)  # (B, L, D)
        for block in self.blocks:
            x = block(x, cond, t_mod)  # (B, N, D)
        x = self.final_layer(x, t_emb)  # (B, N, p * p * C_out)
        return self.unpatchify(x)  # (B, C_out, H, W)

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        device = next(self.parameters()).device
        x = torch.randn(batch_size, self.in_channels, self.input_size, self.input_size, device=device)
        t = torch.randint(0, 1000, (batch_size,), device=device)
        y = torch.randn(batch_size, self.model_max_length, self.caption_channels, device=device)
        return x, t, y
