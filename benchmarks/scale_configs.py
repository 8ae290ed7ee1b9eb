"""Production-scale model configs for capture/analysis benchmarks (build them on ``meta``).

* :func:`sd3_19b` -- kwargs for ``diffusers.SD3Transformer2DModel``: an MMDiT of 56 joint
  blocks, 48 heads x 64 = 3072 wide, about 19.0B parameters.
* :func:`llama_70b` -- a ``transformers.LlamaConfig`` shaped like Llama-3-70B
  (80 layers, hidden 8192, 64 query / 8 key-value heads, MLP 28672, vocab 128256),
  about 70.6B parameters.

Nothing is downloaded: the configs are written out here. Build under
``with torch.device("meta"):`` so no parameter memory is allocated, e.g.::

    with torch.device("meta"):
        model = build_sd3_19b()
    args, kwargs = sd3_19b_inputs(model)
    torch.export.export(model, args, kwargs, strict=False)

Running this file builds both on ``meta``, counts parameters and times a non-strict
``torch.export.export`` of each (each in a fresh subprocess, so peak RSS is per model)::

    python benchmarks/scale_configs.py            # both
    python benchmarks/scale_configs.py sd3_19b    # one
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

__all__ = [
    "build_llama_70b",
    "build_sd3_19b",
    "llama_70b",
    "llama_70b_inputs",
    "sd3_19b",
    "sd3_19b_inputs",
]


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- SD3 ~19B


def sd3_19b() -> dict[str, Any]:
    """``SD3Transformer2DModel`` kwargs for a ~19.0B-parameter MMDiT.

    SD3-style I/O (16 latent channels, patch 2, T5 4096-d text tokens, 2048-d pooled CLIP
    text) with 56 joint blocks of width 48 heads x 64 = 3072. Each joint block holds about
    36 * 3072**2 = 340M parameters (image + context attention projections, two 4x MLPs,
    two adaLN-zero modulations), so 56 blocks give ~19.0B.
    """
    return dict(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=56,
        attention_head_dim=64,
        num_attention_heads=48,
        joint_attention_dim=4096,
        caption_projection_dim=48 * 64,
        pooled_projection_dim=2048,
        pos_embed_max_size=192,
        qk_norm="rms_norm",
    )


def build_sd3_19b() -> nn.Module:
    """Instantiate :func:`sd3_19b` (honours an active ``torch.device`` context)."""
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(**sd3_19b())


def build_sd3_19b_base() -> nn.Module:
    """The 19B MMDiT's proxy for depth transfer: 4 blocks, 8 heads x 64 (width 512)."""
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(**{**sd3_19b(), "num_layers": 4, "num_attention_heads": 8,
                                    "caption_projection_dim": 512})


def sd3_19b_inputs(
    model: nn.Module, batch: int = 1, latent_size: int = 32, text_len: int = 16
) -> tuple[tuple, dict]:
    """Forward inputs for :func:`build_sd3_19b`, on the model's device.

    ``latent_size`` 32 is a 256x256 image (16x16 = 256 image tokens); ``text_len`` text
    tokens of 4096 features; pooled text of 2048 features.
    """
    device = _device_of(model)
    config = sd3_19b()
    return (
        torch.randn(batch, config["in_channels"], latent_size, latent_size, device=device),
    ), {
        "encoder_hidden_states": torch.randn(
            batch, text_len, config["joint_attention_dim"], device=device
        ),
        "pooled_projections": torch.randn(batch, config["pooled_projection_dim"], device=device),
        "timestep": torch.full((batch,), 500, dtype=torch.long, device=device),
        "return_dict": False,
    }


# --------------------------------------------------------------------------- Llama ~70B


def llama_70b():
    """``LlamaConfig`` shaped like Llama-3-70B (~70.6B parameters, untied embeddings).

    SDPA attention and ``use_cache=False`` so ``torch.export`` sees a plain forward.
    """
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        use_cache=False,
        bos_token_id=128000,
        eos_token_id=128001,
    )
    config._attn_implementation = "sdpa"
    return config


def build_llama_70b() -> nn.Module:
    """Instantiate ``LlamaForCausalLM(llama_70b())`` (honours an active device context)."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(llama_70b())


def build_llama_70b_base() -> nn.Module:
    """The 70B Llama's proxy for depth transfer: 4 layers, width 1024 (8 heads x 128)."""
    from transformers import LlamaForCausalLM

    config = llama_70b()
    config.num_hidden_layers, config.hidden_size = 4, 1024
    config.num_attention_heads, config.num_key_value_heads = 8, 1
    config.intermediate_size = 3584
    return LlamaForCausalLM(config)


def llama_70b_inputs(model: nn.Module, batch: int = 1, seq_len: int = 16) -> tuple[tuple, dict]:
    """Forward inputs for :func:`build_llama_70b`: ``input_ids`` and ``use_cache=False``."""
    ids = torch.arange(batch * seq_len, device=_device_of(model)).reshape(batch, seq_len)
    return (), {"input_ids": ids + 1000, "use_cache": False}


# --------------------------------------------------------------------------- benchmark

_MODELS = {
    "sd3_19b": (build_sd3_19b, sd3_19b_inputs),
    "llama_70b": (build_llama_70b, llama_70b_inputs),
}


def _bench_one(name: str) -> None:
    import resource
    import time
    import warnings

    warnings.filterwarnings("ignore")
    build, inputs = _MODELS[name]
    start = time.perf_counter()
    with torch.device("meta"):
        model = build()
    built = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    args, kwargs = inputs(model)
    program = torch.export.export(model, args, kwargs, strict=False)
    exported = time.perf_counter()
    nodes = sum(1 for _ in program.graph.nodes)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        f"{name}: {params / 1e9:.3f}B params ({params:,}); build {built - start:.1f}s; "
        f"export {exported - built:.1f}s; {nodes} graph nodes; peak RSS {peak_mib:.0f} MiB"
    )


def main(argv: list[str]) -> None:
    import subprocess

    names = argv or list(_MODELS)
    if len(names) == 1:
        _bench_one(names[0])
        return
    for name in names:  # one process each so peak RSS is per model
        subprocess.run([sys.executable, __file__, name], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
