"""Every example, emitted as source, equals the runtime ``muprewrite.apply`` model.

Same parameters after seeding, same outputs, same losses over 10 AdamW steps, in float64;
and the emitted file imports with muprewrite unavailable. Both width conventions: heads grow
(no attention edit) and head size grows (attention scale edited).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import EXAMPLES, ExampleSpec
from emitted import import_without_muprewrite, train_losses

import muprewrite
from muprewrite.emit import emit

ROOT = Path(__file__).resolve().parents[1]


def _call(cls: str, kwargs: dict[str, Any]) -> str:
    return f"{cls}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


@pytest.mark.slow
@pytest.mark.parametrize("width", ["wide_dhead", "wide_heads"])
def test_emitted_example_equals_runtime_apply(example: ExampleSpec, width: str,
                                              tmp_path: Path) -> None:
    _compare(example, width, "mup", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["mup-absorbed", "mup-sgd", "sp"])
@pytest.mark.parametrize("module", ["gpt", "dit"])
def test_every_rule_emits_what_apply_runs(module: str, rule: str, tmp_path: Path) -> None:
    _compare(next(e for e in EXAMPLES if e.module == module), "wide_dhead", rule, tmp_path)


def _compare(example: ExampleSpec, width: str, rule: str, tmp_path: Path) -> None:
    wide = getattr(example, width)
    emission = emit(ROOT / "examples" / f"{example.module}.py", _call(example.cls, wide),
                    _call(example.cls, example.small), rule=rule)
    path = tmp_path / f"{example.module}_mup.py"
    path.write_text(emission.source)
    imported = {a.name for node in ast.walk(ast.parse(emission.source))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    imported |= {node.module for node in ast.walk(ast.parse(emission.source))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(name.startswith("muprewrite") for name in imported)
    emitted = import_without_muprewrite(path)
    original = getattr(importlib.import_module(f"examples.{example.module}"), example.cls)
    has_attention_edit = "MUP_D_HEAD_BASE" in emission.source
    assert has_attention_edit == (width == "wide_dhead" and rule != "sp"
                                  and example.module not in ("mlp", "cnn"))

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)  # the emitted file's MUP_BASE_SEED
        base = original(**example.small)
        torch.manual_seed(1)
        runtime = muprewrite.apply(original(**wide), base=base, rule=rule)
        torch.manual_seed(1)
        model = getattr(emitted, example.cls)(**wide)

        theirs, ours = runtime.state_dict(), model.state_dict()
        assert theirs.keys() == ours.keys()
        for name in theirs:
            assert torch.equal(theirs[name], ours[name]), name

        torch.manual_seed(2)
        inputs = runtime.example_inputs()
        out = runtime(*inputs)
        torch.testing.assert_close(model(*inputs), out, rtol=1e-12, atol=1e-12)
        target = torch.randn_like(out)
        expected = train_losses(runtime, muprewrite.param_groups(runtime, lr=1e-2, weight_decay=0.1),
                          inputs, target, 10)
        got = train_losses(model, emitted.mup_param_groups(model, lr=1e-2, weight_decay=0.1), inputs,
                     target, 10)
    finally:
        torch.set_default_dtype(previous)
    assert len(set(expected)) > 1  # it trained
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_one_emitted_file_serves_every_width(tmp_path: Path) -> None:
    """Emitted for one width, the file is the original model at base width and equals
    ``apply`` at a width it was not emitted for."""
    from examples.dit import DiT

    small = dict(depth=2, hidden_size=64, num_heads=1)
    emission = emit(ROOT / "examples" / "dit.py", "DiT(depth=2, hidden_size=128, num_heads=1)",
                    _call("DiT", small))
    path = tmp_path / "dit_mup.py"
    path.write_text(emission.source)
    emitted = import_without_muprewrite(path)
    torch.manual_seed(3)
    inputs = DiT(**small).example_inputs()
    for width, heads in ((64, 1), (256, 1), (256, 4)):
        kwargs = dict(depth=2, hidden_size=width, num_heads=heads)
        torch.manual_seed(0)
        base = DiT(**small)
        torch.manual_seed(1)
        expected = DiT(**kwargs) if width == 64 else muprewrite.apply(DiT(**kwargs), base=base)
        torch.manual_seed(1)
        model = emitted.DiT(**kwargs)
        for (name, a), b in zip(expected.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), (width, name)
        with torch.no_grad():  # the zero-initialised adaLN and final layer would hide the forward
            for a, b in zip(expected.parameters(), model.parameters()):
                if not a.any():
                    a.normal_()
                    b.copy_(a)
        torch.testing.assert_close(model(*inputs), expected(*inputs), rtol=1e-5, atol=1e-6)


def test_emitted_model_built_on_meta_gets_its_init_after_materialising(tmp_path: Path) -> None:
    """Meta device: mup_init during construction only sets the multipliers; after
    to_empty(), the model's own init and mup_init(model) again, every rescaled parameter has
    the RMS the eager build has (both match the same base)."""
    kwargs = dict(depth=2, hidden_size=128, num_heads=1)
    emission = emit(ROOT / "examples" / "dit.py", _call("DiT", kwargs),
                    "DiT(depth=2, hidden_size=64, num_heads=1)")
    path = tmp_path / "dit_mup.py"
    path.write_text(emission.source)
    emitted = import_without_muprewrite(path)
    torch.manual_seed(1)
    eager = emitted.DiT(**kwargs)
    with torch.device("meta"):
        model = emitted.DiT(**kwargs)
    assert model.final_layer.mup_linear_multiplier == 0.5
    model.to_empty(device="cpu")
    model.initialize_weights()
    emitted.mup_init(model)
    base = emitted.mup_base_model()
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        rms = float(p.detach().double().square().mean().sqrt())
        assert torch.isfinite(p).all(), name
        if p.shape != dict(base.named_parameters())[name].shape and rms:
            # float32 values: the product p * factor rounds each element (~6e-8 relative)
            assert rms == pytest.approx(float(q.detach().double().square().mean().sqrt()),
                                        rel=1e-6), name
