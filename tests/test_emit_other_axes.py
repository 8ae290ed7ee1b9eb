"""An emitted file refuses, in mup_init, a model that differs from its recorded base along an
axis that does not grow with width: its factors measure width only, so another vocabulary or
patch grid would be read as a width ratio (an input weight taking a readout's factors), or a
table of another size silently rescaled to the base's RMS.

examples/gpt.py under ``mup`` (base vocabulary 64) and examples/mmdit.py under ``completep``
(the depth rule's mup_factors pairs blocks by position, and holds the same axes fixed)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
from emitted import import_without_muprewrite

from muprewrite.emit import emit

ROOT = Path(__file__).resolve().parents[1]
GPT = "GPT(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd={})"
MMDIT = "MMDiT(input_size=8, hidden_size={}, depth={}, num_heads=2, context_length=8)"


def _emitted(tmp: Path, name: str, model: str, base: str, rule: str = "mup") -> ModuleType:
    emission = emit(ROOT / "examples" / f"{name}.py", model, base, rule=rule)
    path = tmp / f"{name}_{rule}.py"
    path.write_text(emission.source)
    return import_without_muprewrite(path)


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return _emitted(tmp_path_factory.mktemp("axes"), "gpt", GPT.format(64), GPT.format(32))


@pytest.fixture(scope="module")
def mmdit(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return _emitted(tmp_path_factory.mktemp("axes"), "mmdit", MMDIT.format(64, 4),
                    MMDIT.format(32, 2), rule="completep")


def test_another_vocabulary_is_refused(gpt: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"along axes that do not grow with width: "
                                         r"transformer\.wte\.weight axis 0: 80 \(base 64\)"):
        gpt.GPT(vocab_size=80, block_size=8, n_layer=1, n_head=3, n_embd=96)


def test_another_context_length_is_refused(gpt: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"transformer\.wpe\.weight axis 0: 16 \(base 8\)"):
        gpt.GPT(vocab_size=64, block_size=16, n_layer=1, n_head=3, n_embd=96)


def test_the_base_sizes_at_a_new_width_build(gpt: ModuleType) -> None:
    torch.manual_seed(0)
    model = gpt.GPT(vocab_size=64, block_size=8, n_layer=1, n_head=3, n_embd=96)
    assert model(torch.randint(0, 64, (1, 8))).isfinite().all()
    assert gpt.mup_param_groups(model, lr=1e-3)  # the same check passes for the optimizer


def test_the_depth_rule_refuses_another_patch_grid(mmdit: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"along axes that do not grow with width: "
                                         r"pos_embed axis 1: 64 \(base 16\)"):
        mmdit.MMDiT(input_size=16, hidden_size=96, depth=3, num_heads=2, context_length=8)


def test_the_depth_rule_builds_another_width_and_depth(mmdit: ModuleType) -> None:
    model = mmdit.MMDiT(input_size=8, hidden_size=96, depth=3, num_heads=2, context_length=8)
    assert model.mup_factors
