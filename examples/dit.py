"""
DiT: a class-conditional diffusion transformer operating on latent patches.

Follows "Scalable Diffusion Models with Transformers" (Peebles & Xie, 2023,
arXiv:2212.09748). The noisy latent is cut into patches, each patch becomes a
token, and a stack of transformer blocks predicts the noise (and, optionally,
the variance). Conditioning on the timestep and the class label enters every
block through adaptive LayerNorm with zero-initialised gates ("adaLN-Zero").

Width notation used in the shape comments below:
    B  batch            N / T  number of patch tokens (fixed by image/patch size)
    D  hidden_size      H      num_heads          Dh  head_dim, D = H * Dh
Axes marked "grows with width" scale with hidden_size; everything else
(patch size, channels, the 256-wide frequency embedding) stays fixed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm modulation. x: (B, N, D); shift, scale: (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


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
        x = x.flatten(2)  # (B, D, T) with T = h * w
        return x.transpose(1, 2)  # (B, T, D); D grows with width


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


class LabelEmbedder(nn.Module):
    """
    Class label -> vector of size hidden_size. When dropout_prob > 0 an extra
    "null" row (index num_classes) is kept for classifier-free guidance, and
    labels are replaced by it at random during training.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + int(self.use_cfg_embedding), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Replace some labels by the null class (random, or where force_drop_ids == 1)."""
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is not None and not self.use_cfg_embedding:
            raise ValueError("force_drop_ids needs a null class; construct with class_dropout_prob > 0")
        if (self.training and self.use_cfg_embedding) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)  # (B, D)


# -----------------------------------------------------------------------------
# transformer


class Attention(nn.Module):
    """Multi-head self-attention with a single fused qkv projection."""

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


class MLP(nn.Module):
    """Position-wise feed-forward network."""

    def __init__(self, hidden_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on c."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(hidden_size, int(hidden_size * mlp_ratio))
        # produces shift/scale/gate for the attention and the MLP branch
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # c: (B, D) -> six (B, D) chunks
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN modulation followed by a projection of each token to its patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # each (B, D)
        x = modulate(self.norm_final(x), shift, scale)
        return self.linear(x)  # (B, N, p * p * C_out); fixed size, not width


# -----------------------------------------------------------------------------
# the full model


class DiT(nn.Module):
    """Diffusion transformer: (noisy latent, timestep, class label) -> noise (+ variance)."""

    def __init__(
        self,
        input_size: int = 16,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 128,
        depth: int = 2,
        num_heads: int = 2,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 10,
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
        self.num_classes = num_classes
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size * self.grid_size

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # fixed sin-cos table, filled in initialize_weights()
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
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
            table = sincos_2d(self.hidden_size, self.grid_size, device=self.pos_embed.device)  # (T, D)
            table = table.unsqueeze(0)  # (1, T, D); D grows with width
            if hasattr(self.pos_embed, "device_mesh"):  # sharded by FSDP2: shard the table alike
                from torch.distributed.tensor import distribute_tensor

                table = distribute_tensor(table, self.pos_embed.device_mesh, self.pos_embed.placements)
            self.pos_embed.copy_(table)

        # patch embedding: treat the conv kernel like a Linear(in_ch * p * p, D)
        w = self.x_embedder.proj.weight  # (D, C_in, p, p)
        nn.init.xavier_uniform_(w.data.view(w.shape[0], -1))  # (D, C_in * p * p); D grows with width
        if self.x_embedder.proj.bias is not None:
            nn.init.zeros_(self.x_embedder.proj.bias)

        # conditioning embedders
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        normal_init_linears(self.t_embedder.mlp, std=0.02)

        # adaLN-Zero: every block starts as the identity function
        for module in self.modules():
            if isinstance(module, DiTBlock):
                zero_init(module.adaLN_modulation[-1])

        # the output starts at zero
        zero_init(self.final_layer.adaLN_modulation[-1])
        zero_init(self.final_layer.linear)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, p * p * C_out) tokens -> (B, C_out, input_size, input_size) image."""
        B = x.shape[0]
        c, p, g = self.out_channels, self.patch_size, self.grid_size
        x = x.reshape(B, g, g, p, p, c)  # (B, h, w, p, p, C_out); fixed sizes, nothing grows with width
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C_out, h, p, w, p)
        return x.reshape(B, c, g * p, g * p)  # (B, C_out, H, W)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """
        x: (B, C_in, H, W) noisy latents, t: (B,) timesteps, y: (B,) integer class labels.
        Returns (B, C_out, H, W) with C_out = 2 * C_in if learn_sigma else C_in.
        """
        x = self.x_embedder(x) + self.pos_embed  # (B, T, D)
        c = self.t_embedder(t) + self.y_embedder(y)  # (B, D)
        for block in self.blocks:
            x = block(x, c)  # (B, T, D)
        x = self.final_layer(x, c)  # (B, T, p * p * C_out)
        return self.unpatchify(x)  # (B, C_out, H, W)

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float
    ) -> torch.Tensor:
        """
        Classifier-free guidance for sampling. The batch is two halves: the first
        half carries real labels, the second half the null label (num_classes).
        Only the first half of x is used; both halves see the same latents. The
        guided noise estimate is written to both halves; the variance channels
        (when learn_sigma) are passed through unguided.
        """
        half = x.shape[0] // 2
        x_half = x[:half]
        combined = torch.cat([x_half, x_half], dim=0)  # (2 * B/2, C_in, H, W)
        model_out = self.forward(combined, t, y)  # (B, C_out, H, W)
        eps, rest = model_out[:, : self.in_channels], model_out[:, self.in_channels :]
        cond_eps, uncond_eps = eps[:half], eps[half:]
        guided = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([guided, guided], dim=0)
        return torch.cat([eps, rest], dim=1)

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        device = next(self.parameters()).device
        x = torch.randn(batch_size, self.in_channels, self.input_size, self.input_size, device=device)
        t = torch.randint(0, 1000, (batch_size,), device=device)
        y = torch.randint(0, self.num_classes, (batch_size,), device=device)
        return x, t, y
