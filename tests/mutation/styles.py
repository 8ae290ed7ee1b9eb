"""The files the mutation test emits: the style models and the bundled examples.

Each is emitted as a user would (``muprewrite FILE --model ... --base ... -o OUT``) and
checked with ``muprewrite check`` at two widths above the base (one not a power of two,
heads fixed so the head size grows as emitted) and, under ``completep``, at two depths other
than the base's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "STYLES", "Style", "by_name"]

ROOT = Path(__file__).resolve().parents[2]
_MODELS = "tests/mutation/models"


@dataclass(frozen=True)
class Style:
    name: str
    file: str  # the model file, relative to ROOT
    model: str  # --model of the emission
    base: str  # --base
    checks: tuple[str, ...]  # the --model of muprewrite check
    rule: str = "mup"
    tree: bool = False  # emitted with -o DIR/ (the project's files under DIR)

    @property
    def path(self) -> Path:
        return ROOT / self.file


def _widths(call: str, width: str, base: int, **fixed: object) -> tuple[str, str, tuple[str, ...]]:
    """(model, base, checks) of ``call`` at 2x the base width, the base, and 2x and 3x."""
    extra = "".join(f", {k}={v}" for k, v in fixed.items())

    def at(w: int) -> str:
        return call.format(f"{width}={w}{extra}")
    return at(2 * base), at(base), (at(2 * base), at(3 * base))


def _style(name: str, file: str, call: str, width: str, base: int, **fixed: object) -> Style:
    model, base_call, checks = _widths(call, width, base, **fixed)
    return Style(name, file, model, base_call, checks)


STYLES = [
    _style("adaln_dit", f"{_MODELS}/adaln_dit.py", "TinyDiT({})", "width", 32),
    _style("nano_gpt", f"{_MODELS}/nano_gpt.py", "GPT(GPTConfig({}))", "n_embd", 32),
    _style("uvit_modes", f"{_MODELS}/uvit_modes.py", "UViT({})", "embed_dim", 32),
    Style("pixart_tree", f"{_MODELS}/pixart_pkg/model.py", "PixArt(hidden_size=64)",
          "PixArt(hidden_size=32)", ("PixArt(hidden_size=64)", "PixArt(hidden_size=96)"),
          tree=True),
    Style("joint_mmdit", f"{_MODELS}/joint_mmdit.py", "MMDiT(hidden_size=64, depth=4)",
          "MMDiT(hidden_size=32, depth=2)",
          ("MMDiT(hidden_size=64, depth=4)", "MMDiT(hidden_size=96, depth=3)"), "completep"),
    Style("vit_softmax", f"{_MODELS}/vit_softmax.py", "ViT(dim=64, dim_head=32, mlp_dim=128)",
          "ViT(dim=32, dim_head=16, mlp_dim=64)",
          ("ViT(dim=64, dim_head=32, mlp_dim=128)", "ViT(dim=96, dim_head=48, mlp_dim=192)")),
    _style("example_dit", "examples/dit.py", "DiT({})", "hidden_size", 32, depth=2,
           num_heads=2, input_size=8),
    _style("example_gpt", "examples/gpt.py", "GPT({})", "n_embd", 32, vocab_size=64,
           block_size=16),
    _style("example_uvit", "examples/uvit.py", "UViT({})", "embed_dim", 32, depth=3,
           img_size=8),
    _style("example_pixart", "examples/pixart.py", "PixArtAlpha({})", "hidden_size", 32,
           input_size=8),
    _style("example_mmdit", "examples/mmdit.py", "MMDiT({})", "hidden_size", 32, depth=2,
           num_heads=2, input_size=8),
    _style("example_mlp", "examples/mlp.py", "MLP({})", "width", 32),
    _style("example_cnn", "examples/cnn.py", "CNN({})", "width", 16, image_size=8),
]


def by_name(name: str) -> Style:
    for style in STYLES:
        if style.name == name:
            return style
    raise KeyError(name)
