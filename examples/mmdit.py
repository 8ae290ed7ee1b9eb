"""
MMDiT: the multimodal diffusion transformer of Stable Diffusion 3.

Follows "Scaling Rectified Flow Transformers for High-Resolution Image
Synthesis" (Esser et al., 2024, arXiv:2403.03206). Two token streams, the image
patches and the text-encoder tokens ("context"), each keep their own weights
(adaLN modulation, LayerNorm, q/k/v and output projections, MLP) but share one
attention operation: inside every joint block the queries, keys and values of
both streams are concatenated along the sequence axis, attended over jointly and
split back. The diffusion timestep and the pooled text embedding are summed into
a conditioning vector c that modulates every block through adaLN with
zero-initialised gates.

As in SD3, the last block only uses the context stream as keys and values: its
context half has no output projection, no MLP and only a shift/scale modulation,
so every parameter of the model reaches the output.

Width notation used in the shape comments below:
    B  batch            N  image tokens = num_patches (fixed by image/patch size)
    S  context tokens = context_length (fixed)        L = S + N joint sequence
    D  hidden_size      H  num_heads          Dh  head_dim, D = H * Dh
Axes marked "grows with width" scale with hidden_size; everything else (patch
size, channels, the text-encoder widths context_dim and pooled_dim, the 256-wide
frequency embedding) stays fixed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm modulation. x: (B, L, D); shift, scale: (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def zero_init(layer: nn.Module) -> None:
    """Set every parameter of layer (weight and bias) to zero."""
    for p in layer.parameters():
        nn.init.zeros_(p)


# -----------------------------------------------------------------------------
# embedders


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens via a strided convolution."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, h, w); D grows with width
        x = x.flatten(2)  # (B, D, N) with N = h * w; D grows with width
        return x.transpose(1, 2)  # (B, N, D); D grows with width


class TimestepEmbedder(nn.Module):
    """Scalar (fractional) diffusion timestep -> vector of size hidden_size."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """Sinusoidal features of timesteps t: (B,) -> (B, dim)."""
        half = dim // 2
        exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half
        freqs = torch.exp(-math.log(max_period) * exponents)  # (dim / 2,)
        args = t.float()[:, None] * freqs[None, :]  # (B, dim / 2); fixed size, not width
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.sinusoid(t, self.frequency_embedding_size)  # (B, 256)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (B, D); in the model's dtype


class PooledTextEmbedder(nn.Module):
    """Pooled text-encoder embedding (fixed size pooled_dim) -> vector of size hidden_size."""

    def __init__(self, pooled_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(pooled_dim, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled)  # (B, D)


# -----------------------------------------------------------------------------
# joint transformer block


class MLP(nn.Module):
    """Position-wise feed-forward network."""

    def __init__(self, hidden_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class StreamLayers(nn.Module):
    """
    The weights one stream (image or context) owns inside a joint block.

    pre_attention() normalises and modulates the tokens and projects them to
    per-head queries, keys and values; post_attention() applies the output
    projection and the MLP with gated residuals. With pre_only=True the stream
    only contributes keys and values: no output projection, no MLP, and the
    modulation produces just a shift and a scale.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float, qk_norm: bool, pre_only: bool = False
    ) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.pre_only = pre_only
        self.num_mod = 2 if pre_only else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, self.num_mod * hidden_size))
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(hidden_size, hidden_size)
        self.k = nn.Linear(hidden_size, hidden_size)
        self.v = nn.Linear(hidden_size, hidden_size)
        self.q_norm: nn.Module = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        if not pre_only:
            self.proj = nn.Linear(hidden_size, hidden_size)
            self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.mlp = MLP(hidden_size, int(hidden_size * mlp_ratio))

    def pre_attention(
        self, x: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """x: (B, L, D), c: (B, D) -> q, k, v each (B, H, L, Dh), plus the modulation chunks."""
        B, L, _ = x.shape
        H, Dh = self.num_heads, self.head_dim
        mods = self.adaLN_modulation(c).chunk(self.num_mod, dim=1)  # num_mod x (B, D)
        shift_msa, scale_msa = mods[0], mods[1]
        h = modulate(self.norm1(x), shift_msa, scale_msa)  # (B, L, D)
        q = self.q(h).view(B, L, H, Dh)  # (B, L, H, Dh); D = H * Dh grows with width
        k = self.k(h).view(B, L, H, Dh)  # (B, L, H, Dh); D = H * Dh grows with width
        v = self.v(h).view(B, L, H, Dh)  # (B, L, H, Dh); D = H * Dh grows with width
        q = self.q_norm(q)  # RMSNorm over Dh, per head
        k = self.k_norm(k)
        q = q.transpose(1, 2)  # (B, H, L, Dh); H and/or Dh grow with width
        k = k.transpose(1, 2)  # (B, H, L, Dh); H and/or Dh grow with width
        v = v.transpose(1, 2)  # (B, H, L, Dh); H and/or Dh grow with width
        return q, k, v, mods

    def post_attention(self, x: torch.Tensor, attn: torch.Tensor, mods: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """x: (B, L, D) stream input, attn: (B, L, D) this stream's slice of the joint attention."""
        if self.pre_only:
            raise RuntimeError("a pre-only stream has no post-attention layers")
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa.unsqueeze(1) * self.proj(attn)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class JointBlock(nn.Module):
    """Two streams with separate weights and one shared attention over the concatenated sequence."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float, qk_norm: bool, context_pre_only: bool = False
    ) -> None:
        super().__init__()
        self.context_block = StreamLayers(hidden_size, num_heads, mlp_ratio, qk_norm, pre_only=context_pre_only)
        self.x_block = StreamLayers(hidden_size, num_heads, mlp_ratio, qk_norm)

    def forward(self, context: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context: (B, S, D), x: (B, N, D), c: (B, D) -> updated (context, x)."""
        B, S, D = context.shape
        N = x.shape[1]
        qc, kc, vc, mods_c = self.context_block.pre_attention(context, c)  # each (B, H, S, Dh)
        qx, kx, vx, mods_x = self.x_block.pre_attention(x, c)  # each (B, H, N, Dh)

        # joint attention: concatenate along the sequence axis (context first)
        q = torch.cat([qc, qx], dim=2)  # (B, H, S + N, Dh)
        k = torch.cat([kc, kx], dim=2)  # (B, H, S + N, Dh)
        v = torch.cat([vc, vx], dim=2)  # (B, H, S + N, Dh)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh)
        y = y.transpose(1, 2).reshape(B, S + N, D)  # (B, L, H * Dh) = (B, L, D); D grows with width
        attn_c, attn_x = y.split([S, N], dim=1)  # (B, S, D), (B, N, D)

        x = self.x_block.post_attention(x, attn_x, mods_x)
        if not self.context_block.pre_only:
            context = self.context_block.post_attention(context, attn_c, mods_c)
        return context, x


class FinalLayer(nn.Module):
    """adaLN modulation followed by a projection of each image token to its patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # each (B, D)
        x = modulate(self.norm_final(x), shift, scale)
        return self.linear(x)  # (B, N, p * p * C); fixed size, not width


# -----------------------------------------------------------------------------
# the full model


class MMDiT(nn.Module):
    """Rectified-flow transformer: (noisy latent, timestep, text tokens, pooled text) -> velocity."""

    def __init__(
        self,
        input_size: int = 16,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 128,
        depth: int = 2,
        num_heads: int = 2,
        mlp_ratio: float = 4.0,
        context_dim: int = 64,
        context_length: int = 8,
        pooled_dim: int = 32,
        qk_norm: bool = True,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if input_size % patch_size != 0:
            raise ValueError(f"input_size ({input_size}) must be divisible by patch_size ({patch_size})")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.context_dim = context_dim
        self.context_length = context_length
        self.pooled_dim = pooled_dim
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size * self.grid_size

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, hidden_size))  # learned, (1, N, D)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = PooledTextEmbedder(pooled_dim, hidden_size)
        self.context_embedder = nn.Linear(context_dim, hidden_size)
        self.blocks = nn.ModuleList(
            [
                JointBlock(hidden_size, num_heads, mlp_ratio, qk_norm, context_pre_only=(i == depth - 1))
                for i in range(depth)
            ]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # default for every Linear: xavier-uniform weight, zero bias
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        nn.init.normal_(self.pos_embed, std=0.02)

        # patch embedding: treat the conv kernel like a Linear(in_ch * p * p, D)
        w = self.x_embedder.proj.weight  # (D, C, p, p)
        nn.init.xavier_uniform_(w.data.view(w.shape[0], -1))  # (D, C * p * p); D grows with width
        if self.x_embedder.proj.bias is not None:
            nn.init.zeros_(self.x_embedder.proj.bias)

        # conditioning embedders
        for mlp in (self.t_embedder.mlp, self.y_embedder.mlp):
            for layer in mlp.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=0.02)

        # adaLN-Zero: every stream of every block starts as the identity function
        for module in self.modules():
            if isinstance(module, StreamLayers):
                zero_init(module.adaLN_modulation[-1])

        # the output starts at zero
        zero_init(self.final_layer.adaLN_modulation[-1])
        zero_init(self.final_layer.linear)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p * p * C) tokens -> (B, C, input_size, input_size) image."""
        B = x.shape[0]
        c, p, g = self.out_channels, self.patch_size, self.grid_size
        x = x.reshape(B, g, g, p, p, c)  # (B, h, w, p, p, C); fixed sizes, nothing grows with width
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p); nothing grows with width
        return x.reshape(B, c, g * p, g * p)  # (B, C, H, W); nothing grows with width

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """
        x: (B, C, H, W) noisy latents, t: (B,) float timesteps, context: (B, S, context_dim)
        text-encoder tokens, pooled: (B, pooled_dim) pooled text embedding.
        Returns (B, C, H, W).
        """
        x = self.x_embedder(x) + self.pos_embed  # (B, N, D)
        c = self.t_embedder(t) + self.y_embedder(pooled)  # (B, D)
        context = self.context_embedder(context)  # (B, S, D)
        for block in self.blocks:
            context, x = block(context, x, c)
        x = self.final_layer(x, c)  # (B, N, p * p * C)
        return self.unpatchify(x)  # (B, C, H, W)

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        device = next(self.parameters()).device
        x = torch.randn(batch_size, self.in_channels, self.input_size, self.input_size, device=device)
        t = torch.rand(batch_size, device=device) * 1000.0  # rectified-flow time in [0, 1], scaled by 1000
        context = torch.randn(batch_size, self.context_length, self.context_dim, device=device)
        pooled = torch.randn(batch_size, self.pooled_dim, device=device)
        return x, t, context, pooled
