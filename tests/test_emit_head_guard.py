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
