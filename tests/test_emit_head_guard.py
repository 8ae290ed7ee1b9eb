"""An emitted file with an attention it left unedited (the base and the model had the same
head size: heads grow, d_head fixed) refuses, in mup_init, a width at which that attention's
head size changes: it would run at 1/sqrt(d_head) where muP needs the 1/d_head factor the
file does not contain. examples/gpt.py at a small size: base 2 heads of 16, model 4 of 16."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
from emitted import import_without_muprewrite

from muprewrite.emit import emit

ROOT = Path(__file__).resolve().parents[1]
GPT = ROOT / "examples" / "gpt.py"
SIZE = dict(vocab_size=64, block_size=8, n_layer=1)
BASE = "GPT(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=32)"


@pytest.fixture(scope="module")
def heads_grow(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    emission = emit(GPT, BASE.replace("n_head=2, n_embd=32", "n_head=4, n_embd=64"), BASE)
    assert not any("attention logit scale" in c for c in emission.changes)  # no edit needed
    path = tmp_path_factory.mktemp("head_guard") / "gpt_heads_grow.py"
    path.write_text(emission.source)
    return import_without_muprewrite(path)


def test_a_head_size_the_file_cannot_scale_is_refused(heads_grow: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.head_dim is 32, but this "
                                         r"file has no attention logit edit there.*Emit the "
                                         r"file again"):
        heads_grow.GPT(**SIZE, n_head=2, n_embd=64)  # d_head 32: needs x 16/32 on the logits


def test_widths_that_keep_the_head_size_build(heads_grow: ModuleType) -> None:
    torch.manual_seed(0)
    model = heads_grow.GPT(**SIZE, n_head=8, n_embd=128)  # d_head 16, as emitted
    assert model.transformer.h[0].attn.head_dim == 16
    assert model(torch.randint(0, 64, (1, 8))).isfinite().all()


NANO = ROOT / "tests" / "mutation" / "models" / "nano_gpt.py"  # no attribute holds d_head
NANO_BASE = "GPT(GPTConfig(n_embd=32, n_head=2))"


def _check(path: Path, model: str, flash: bool = True) -> None:
    """The emitted ``path`` behaves as apply on the original at ``model`` (CheckError if not)."""
    from muprewrite.verify.source_check import check_emitted

    base = None if flash else NANO_BASE.replace("n_head=2)", "n_head=2, flash=False)")
    result = check_emitted(path, [model], original=NANO, base=base, steps=2)
    assert result.divergence is None, result.divergence
    assert result.passed


@pytest.mark.parametrize("rule", ["mup", "completep", "mup+hparams"])
def test_unguarded_attention_takes_the_factor_anyway(tmp_path: Path, rule: str) -> None:
    """nanoGPT keeps no head_dim attribute: the attention with a fixed head size is edited
    (its factor 1 at the emitted widths), so the file is right at a width whose head size
    differs too, on both paths of self.flash. Before, it had no edit and only a warning:
    at head size 32 its logits were off by sqrt(32/16) from apply's."""
    model = "GPT(GPTConfig(n_embd=64, n_head=4, n_layer=4))" if rule == "completep" else \
        "GPT(GPTConfig(n_embd=64, n_head=4))"
    hparams = {"output_multiplier": 2.0, "attention_multiplier": 0.5} if "+" in rule else None
    emission = emit(NANO, model, NANO_BASE, rule=rule.partition("+")[0], hparams=hparams)
    assert not any("WARNING" in c for c in emission.changes), emission.changes
    assert any("at line(s) 39, 41" in c for c in emission.changes), emission.changes
    assert "(MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5" in emission.source
    path = tmp_path / "nano_mup.py"
    path.write_text(emission.source)
    wider = "GPT(GPTConfig(n_embd=64, n_head=2{}))"  # head size 32: the base's was 16
    _check(path, wider.format(", n_layer=3" if rule == "completep" else ""))
    _check(path, wider.format(", flash=False"), flash=False)


def test_an_attention_that_cannot_be_edited_is_named(tmp_path: Path) -> None:
    """Where the source cannot take the edit either (the logits come from a function of
    another file) and no attribute holds the head size, the emission says so."""
    helper = tmp_path / "logits.py"
    helper.write_text("def logits(q, k):\n    return q @ k.transpose(-2, -1)\n")
    text = NANO.read_text().replace(
        "import torch\n", "import torch\nfrom logits import logits\n", 1).replace(
        "att = (q @ k.transpose(-2, -1)) *", "att = logits(q, k) *")
    model = tmp_path / "nano.py"
    model.write_text(text)
    emission = emit(model, "GPT(GPTConfig(n_embd=64, n_head=4, flash=False))",
                    "GPT(GPTConfig(n_embd=32, n_head=2, flash=False))")
    line = text.splitlines().index("            y = F.softmax(att, dim=-1) @ v") + 1
    warning = [c for c in emission.changes if "WARNING" in c]
    assert warning and f"{model}:{line} " in warning[0] and "self.head_dim" in warning[0], warning
