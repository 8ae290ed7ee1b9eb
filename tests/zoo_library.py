"""Tiny models from third-party libraries (diffusers, transformers) for capture/analysis tests.

Each :class:`ZooModel` couples a builder ``build(scale)`` with an ``example_inputs(model)``
function. ``scale=1`` is the base width and ``scale=2`` doubles it; everything that is not a
width (vocabulary, class count, latent channels, patch size, text-encoder dims, sequence
length, depth) stays fixed, so the two scales differ only along width-like axes.

Two width conventions are offered:

* :func:`library_zoo` -- "heads grow": the per-head dimension is fixed at
  :data:`HEAD_DIM` and the number of attention heads is ``BASE_HEADS * scale``.
* :func:`library_zoo_fixed_heads` -- "head_dim grows": the number of heads is fixed at
  :data:`BASE_HEADS` and the per-head dimension is ``HEAD_DIM * scale``.

In both, ``width = heads * head_dim`` is ``BASE_HEADS * HEAD_DIM * scale`` and MLP widths
are a fixed multiple of it.

Builders never touch the network (no ``from_pretrained``); models are made from config
objects / constructor kwargs and honour an active ``with torch.device("meta"):`` block.
``example_inputs`` creates its tensors on the model's device, so it works for meta models.

Settings needed for ``torch.export.export(model, args, kwargs, strict=False)``:

* transformers: ``attn_implementation="sdpa"`` (set on the config; "eager" also exports),
  dropout probabilities 0, and ``use_cache=False`` passed to ``forward`` (and set on the
  config) so no ``DynamicCache`` object is created or returned.
* diffusers: ``timestep`` is passed as a tensor and ``return_dict=False`` so the output is
  a plain tuple. ``SD3Transformer2DModel`` gets a small ``pos_embed_max_size`` (the default
  96 would make a 96x96 positional table buffer for an 8x8 latent).

Libraries that fail to import are skipped: the zoo functions then return fewer entries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "BASE_HEADS",
    "HEAD_DIM",
    "ZooModel",
    "library_zoo",
    "library_zoo_fixed_heads",
]

#: attention heads at scale 1
BASE_HEADS = 2
#: per-head dimension at scale 1
HEAD_DIM = 16

BATCH = 2
SAMPLE_SIZE = 8  # latent height/width of the tiny diffusion models
LATENT_CHANNELS = 4
PATCH_SIZE = 2
TEXT_LEN = 6  # encoder (text) tokens for cross-attention models
TEXT_DIM = 32  # text-encoder feature size (caption_channels / joint_attention_dim)
POOLED_DIM = 16  # pooled text embedding size (SD3)
NUM_CLASSES = 10  # DiT class-conditioning labels
VOCAB = 128
SEQ_LEN = 8
MAX_POSITIONS = 32


@dataclass(frozen=True)
class ZooModel:
    """A named library model: ``build(scale)`` and matching forward inputs."""

    name: str
    build: Callable[[int], nn.Module]
    example_inputs: Callable[[nn.Module], tuple[tuple, dict]]


# --------------------------------------------------------------------------- helpers


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _heads_and_dim(scale: int, fixed_heads: bool) -> tuple[int, int]:
    """``(num_heads, head_dim)`` for ``scale`` under the chosen width convention."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if fixed_heads:
        return BASE_HEADS, HEAD_DIM * scale
    return BASE_HEADS * scale, HEAD_DIM


def _latents(model: nn.Module) -> torch.Tensor:
    device = _device_of(model)
    return torch.randn(BATCH, LATENT_CHANNELS, SAMPLE_SIZE, SAMPLE_SIZE, device=device)


def _timesteps(model: nn.Module) -> torch.Tensor:
    return torch.tensor([10, 500], dtype=torch.long, device=_device_of(model))


# --------------------------------------------------------------------------- diffusers


def _dit(scale: int, *, fixed_heads: bool = False) -> nn.Module:
    """Class-conditional DiT (adaLN-zero): 2 blocks on 8x8x4 latents, 10 classes.

    Width = heads * head_dim; the feed-forward is 4x width (diffusers default).
    """
    from diffusers import DiTTransformer2DModel

    heads, head_dim = _heads_and_dim(scale, fixed_heads)
    return DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        sample_size=SAMPLE_SIZE,
        patch_size=PATCH_SIZE,
        num_embeds_ada_norm=NUM_CLASSES,
        norm_type="ada_norm_zero",
    )


def _dit_inputs(model: nn.Module) -> tuple[tuple, dict]:
    labels = torch.tensor([1, 7], dtype=torch.long, device=_device_of(model))
    return (_latents(model),), {
        "timestep": _timesteps(model),
        "class_labels": labels,
        "return_dict": False,
    }


def _pixart(scale: int, *, fixed_heads: bool = False) -> nn.Module:
    """PixArt-alpha transformer (adaLN-single + cross-attention): 2 blocks, 8x8x4 latents.

    Captions have ``TEXT_DIM`` channels (fixed) and are projected to the model width, which
    is also the cross-attention dim. No resolution/aspect-ratio conditioning.
    """
    from diffusers import PixArtTransformer2DModel

    heads, head_dim = _heads_and_dim(scale, fixed_heads)
    return PixArtTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=LATENT_CHANNELS,
        out_channels=2 * LATENT_CHANNELS,  # learned sigma, as in the released models
        num_layers=2,
        sample_size=SAMPLE_SIZE,
        patch_size=PATCH_SIZE,
        cross_attention_dim=heads * head_dim,
        caption_channels=TEXT_DIM,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    )


def _pixart_inputs(model: nn.Module) -> tuple[tuple, dict]:
    device = _device_of(model)
    return (_latents(model),), {
        "encoder_hidden_states": torch.randn(BATCH, TEXT_LEN, TEXT_DIM, device=device),
        "timestep": _timesteps(model),
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        "return_dict": False,
    }


def _sd3(scale: int, *, fixed_heads: bool = False) -> nn.Module:
    """Stable Diffusion 3 MMDiT: 2 joint blocks on 8x8x4 latents, RMS qk-norm.

    Text tokens have ``TEXT_DIM`` features (fixed) projected to the model width
    (``caption_projection_dim``); pooled text has ``POOLED_DIM`` features.
    """
    import inspect

    from diffusers import SD3Transformer2DModel

    heads, head_dim = _heads_and_dim(scale, fixed_heads)
    kwargs: dict[str, Any] = dict(
        sample_size=SAMPLE_SIZE,
        patch_size=PATCH_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=TEXT_DIM,
        caption_projection_dim=heads * head_dim,
        pooled_projection_dim=POOLED_DIM,
        pos_embed_max_size=SAMPLE_SIZE // PATCH_SIZE * 2,
    )
    if "qk_norm" in inspect.signature(SD3Transformer2DModel.__init__).parameters:
        kwargs["qk_norm"] = "rms_norm"
    return SD3Transformer2DModel(**kwargs)


def _sd3_inputs(model: nn.Module) -> tuple[tuple, dict]:
    device = _device_of(model)
    return (_latents(model),), {
        "encoder_hidden_states": torch.randn(BATCH, TEXT_LEN, TEXT_DIM, device=device),
        "pooled_projections": torch.randn(BATCH, POOLED_DIM, device=device),
        "timestep": _timesteps(model),
        "return_dict": False,
    }


# --------------------------------------------------------------------------- transformers


def _gpt2(scale: int, *, fixed_heads: bool = False) -> nn.Module:
    """GPT-2 LM head model: 2 layers, vocab 128, 32 positions, tied embeddings, no dropout.

    ``n_embd`` = heads * head_dim; the MLP is 4x ``n_embd`` (GPT-2 default).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    heads, head_dim = _heads_and_dim(scale, fixed_heads)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=MAX_POSITIONS,
        n_embd=heads * head_dim,
        n_layer=2,
        n_head=heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    config._attn_implementation = "sdpa"
    return GPT2LMHeadModel(config)


def _llama(scale: int, *, fixed_heads: bool = False) -> nn.Module:
    """Llama causal LM with grouped-query attention: 2 layers, vocab 128, untied head.

    ``num_key_value_heads`` is half of ``num_attention_heads`` (and grows with it under the
    heads-grow convention); ``intermediate_size`` is 4x hidden.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    heads, head_dim = _heads_and_dim(scale, fixed_heads)
    hidden = heads * head_dim
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        head_dim=head_dim,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def _token_inputs(model: nn.Module) -> tuple[tuple, dict]:
    ids = torch.arange(BATCH * SEQ_LEN, device=_device_of(model)).reshape(BATCH, SEQ_LEN)
    return (), {"input_ids": ids % VOCAB, "use_cache": False}


# --------------------------------------------------------------------------- zoo


def _available(module: str, name: str) -> bool:
    """Whether ``from module import name`` works (any failure means "skip the entry")."""
    try:
        getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - broken installs raise all sorts of errors
        return False
    return True


def _zoo(fixed_heads: bool) -> list[ZooModel]:
    def bind(builder: Callable[..., nn.Module]) -> Callable[[int], nn.Module]:
        def build(scale: int) -> nn.Module:
            return builder(scale, fixed_heads=fixed_heads)

        build.__doc__ = builder.__doc__
        build.__name__ = builder.__name__.lstrip("_")
        return build

    catalogue = (
        ("diffusers", "DiTTransformer2DModel", _dit, _dit_inputs),
        ("diffusers", "PixArtTransformer2DModel", _pixart, _pixart_inputs),
        ("diffusers", "SD3Transformer2DModel", _sd3, _sd3_inputs),
        ("transformers", "GPT2LMHeadModel", _gpt2, _token_inputs),
        ("transformers", "LlamaForCausalLM", _llama, _token_inputs),
    )
    return [
        ZooModel(f"{module}.{cls}", bind(builder), inputs)
        for module, cls, builder, inputs in catalogue
        if _available(module, cls)
    ]


def library_zoo() -> list[ZooModel]:
    """Library models, "heads grow" convention: head_dim fixed, heads = BASE_HEADS*scale."""
    return _zoo(fixed_heads=False)


def library_zoo_fixed_heads() -> list[ZooModel]:
    """Library models, "head_dim grows" convention: heads fixed, head_dim = HEAD_DIM*scale."""
    return _zoo(fixed_heads=True)
