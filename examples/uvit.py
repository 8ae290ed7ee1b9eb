"""
U-ViT: a plain ViT backbone for diffusion models with U-Net style long skips.

Follows "All are Worth Words: A ViT Backbone for Diffusion Models" (Bao et al.,
CVPR 2023, arXiv:2209.12152). Everything is a token: the diffusion timestep,
the class label and the image patches are concatenated into one sequence and
processed by a stack of standard pre-LayerNorm transformer blocks. The blocks
are split into in-blocks, one mid-block and out-blocks; each out-block receives
the output of the mirrored in-block through a long skip connection (concatenate
along the feature axis, then a Linear back to embed_dim). A final 3x3 conv
smooths the unpatchified output.

Width notation used in the shape comments below:
    B  batch            L  sequence length = extras + num_patches (fixed)
    D  embed_dim        H  num_heads          Dh  head_dim, D = H * Dh
Axes marked "grows with width" scale with embed_dim; everything else
(patch size, channels, the 256-wide frequency embedding) stays fixed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps t: (B,) -> (B, dim)."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half
    freqs = torch.exp(-math.log(max_period) * exponents)  # (dim / 2,)
    args = t.float()[:, None] * freqs[None, :]  # (B, dim / 2); fixed size, not width
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens via a strided convolution."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, h, w); D grows with width
        x = x.flatten(2)  # (B, D, h * w)
        return x.transpose(1, 2)  # (B, num_patches, D); D grows with width


class Attention(nn.Module):
    """Multi-head self-attention with a single fused qkv projection."""

    def __init__(self, embed_dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        H, Dh = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(B, L, 3, H, Dh)  # (B, L, 3, H, Dh); D = H*Dh grows with width
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, L, Dh); H and/or Dh grow with width
        q, k, v = qkv.unbind(0)  # each (B, H, L, Dh)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, H * Dh) = (B, L, D); D grows with width
        return self.proj(y)


class MLP(nn.Module):
    """Position-wise feed-forward network."""

    def __init__(self, embed_dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, mlp_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """
    Pre-LayerNorm transformer block. With skip=True it first fuses a long-skip
    input: x <- Linear(cat([x, skip], dim=-1)).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.skip_linear = nn.Linear(2 * embed_dim, embed_dim) if skip else None
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = Attention(embed_dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, int(embed_dim * mlp_ratio))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("this block expects a long-skip input")
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (B, L, 2D) -> (B, L, D)
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class UViT(nn.Module):
    """U-ViT: (noisy latent, timestep, class label) -> noise prediction."""

    def __init__(
        self,
        img_size: int = 16,
        patch_size: int = 2,
        in_channels: int = 4,
        embed_dim: int = 128,
        depth: int = 5,
        num_heads: int = 2,
        mlp_ratio: float = 4.0,
        num_classes: int = 10,
        conv_out: bool = True,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if depth % 2 != 1:
            raise ValueError(f"depth must be odd (in-blocks, one mid-block, out-blocks), got {depth}")
        if img_size % patch_size != 0:
            raise ValueError(f"img_size ({img_size}) must be divisible by patch_size ({patch_size})")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.num_classes = num_classes
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size * self.grid_size
        self.frequency_embedding_size = 256
        self.extras = 2  # one time token + one label token

        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
        self.time_embed = nn.Sequential(
            nn.Linear(self.frequency_embedding_size, 4 * embed_dim),
            nn.SiLU(),
            nn.Linear(4 * embed_dim, embed_dim),
        )
        self.label_emb = nn.Embedding(num_classes, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + self.num_patches, embed_dim))

        half = depth // 2
        self.in_blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(half)])
        self.mid_block = Block(embed_dim, num_heads, mlp_ratio, qkv_bias)
        self.out_blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias, skip=True) for _ in range(half)]
        )

        self.norm = nn.LayerNorm(embed_dim)
        self.patch_dim = patch_size * patch_size * in_channels
        self.decoder_pred = nn.Linear(embed_dim, self.patch_dim)
        self.final_layer = nn.Conv2d(in_channels, in_channels, 3, padding=1) if conv_out else nn.Identity()

        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_patches, p * p * C) tokens -> (B, C, img_size, img_size) image."""
        B = x.shape[0]
        c, p, g = self.in_channels, self.patch_size, self.grid_size
        x = x.reshape(B, g, g, p, p, c)  # (B, h, w, p, p, C); fixed sizes, nothing grows with width
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
        return x.reshape(B, c, g * p, g * p)  # (B, C, H, W)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """
        x: (B, C, H, W) noisy latents, t: (B,) timesteps, y: (B,) integer class labels.
        Returns (B, C, H, W).
        """
        x = self.patch_embed(x)  # (B, num_patches, D)
        t_freq = timestep_embedding(t, self.frequency_embedding_size).to(x.dtype)  # (B, 256)
        time_token = self.time_embed(t_freq)  # (B, D)
        time_token = time_token.unsqueeze(1)  # (B, 1, D); D grows with width
        label_token = self.label_emb(y).unsqueeze(1)  # (B, 1, D); D grows with width
        x = torch.cat([time_token, label_token, x], dim=1)  # (B, L, D); L = extras + num_patches is fixed
        x = x + self.pos_embed

        skips: list[torch.Tensor] = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())

        x = self.norm(x)
        x = self.decoder_pred(x)  # (B, L, p * p * C); fixed size, not width
        x = x[:, self.extras :, :]  # (B, num_patches, p * p * C)
        x = self.unpatchify(x)  # (B, C, H, W)
        return self.final_layer(x)

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        device = next(self.parameters()).device
        x = torch.randn(batch_size, self.in_channels, self.img_size, self.img_size, device=device)
        t = torch.randint(0, 1000, (batch_size,), device=device)
        y = torch.randint(0, self.num_classes, (batch_size,), device=device)
        return x, t, y
