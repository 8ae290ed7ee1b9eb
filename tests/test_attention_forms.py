"""Attention forms the runtime edit missed or refused wrongly (tests/attention_forms.py).

- vit-pytorch's ``self.attend = nn.Softmax(dim=-1)`` over ``torch.matmul(q, kᵀ) * self.scale``:
  the softmax ran in the child ``attend``, so the edit was planned there; ``apply`` returned
  and the first forward raised ("a softmax over a tensor that is no q.k^T product"), and
  coord-check crashed.
- Swin's shifted-window block adds its mask to the logits viewed as (B/nW, nW, heads, N, N)
  and views them back: the site was not found and only the unshifted block's logits took
  their factor.
- U-ViT picks 'flash', 'xformers' or 'math' by a module global: ``apply`` refused the whole
  model because the source calls xformers, even when that path is never taken. Now the call
  is refused where it is reached, naming its line.

Each model is built at the base width 32 and at 2x and 4x with the number of heads fixed
(d_head grows); ``muprewrite.apply`` must equal the same file with muP written by hand
(logits times sqrt(d_head_base)/d_head in place of 1/sqrt(d_head), readout input times
base/width), float64, 1e-10, at every attention call.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch
from attention_forms import SOURCES, by_hand, fake_xformers, load

import muprewrite
from muprewrite import MuprewriteError, analyze
from muprewrite.verify.coordcheck import coord_check

BASE, HEADS = 32, 2
CLASSES = {"vit": "ViT", "uvit": "UViT", "swin": "Swin"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """name -> the imported model file, and name + "_hand" -> muP written by hand."""
    folder = tmp_path_factory.mktemp("forms")
    with pytest.MonkeyPatch.context() as patch:
        for key, module in fake_xformers().items():
            patch.setitem(__import__("sys").modules, key, module)
        out = {}
        for name, source in SOURCES.items():
            out[name] = load(folder, name, source)
            out[name + "_hand"] = load(folder, name + "_hand", by_hand(name, BASE // HEADS, BASE))
        yield out


def _inputs(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    return tuple(t.double() for t in model.example_inputs())


Built = tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]


@pytest.fixture(scope="module")
def applied(files: dict[str, ModuleType]) -> dict[tuple[str, int], Built]:
    """(name, width) -> (apply's model, muP by hand, the model as written), one state,
    float64, built when first asked for (the ViT with dropout 0.1: inactive in eval)."""

    class Cache(dict):  # type: ignore[type-arg]
        def __missing__(self, key: tuple[str, int]) -> Built:
            name, width = key
            cls, extra = CLASSES[name], ({"dropout": 0.1} if name == "vit" else {})
            torch.manual_seed(0)
            model = getattr(files[name], cls)(width, **extra).double()
            hand = getattr(files[name + "_hand"], cls)(width, **extra).double()
            hand.load_state_dict(model.state_dict())
            plain = copy.deepcopy(model)
            base = getattr(files[name], cls)(BASE, **extra).double()
            muprewrite.apply(model, _inputs(model), base=base, init=False)
            self[key] = (model.eval(), hand.eval(), plain.eval())
            return self[key]

    return Cache()


def _mode(files: dict[str, ModuleType], name: str, mode: str | None) -> None:
    if mode is not None:
        files[name].ATTENTION_MODE = files[name + "_hand"].ATTENTION_MODE = mode


@pytest.mark.parametrize(("name", "modes"), [("vit", [None]), ("swin", [None]),
                                             ("uvit", ["flash", "math"])],
                         ids=["vit-nn-softmax", "swin-shifted-windows", "uvit-flash-math"])
@pytest.mark.parametrize("scale", [2, 4])
def test_apply_equals_mup_by_hand_at_every_attention_call(
        files: dict[str, ModuleType], applied: dict[tuple[str, int], Built], name: str,
        modes: list[str | None], scale: int) -> None:
    """U-ViT: captured on 'flash'; 'math' is a path the capture did not run."""
    model, hand, plain = applied[name, BASE * scale]
    x = _inputs(model)
    for mode in modes:
        try:
            _mode(files, name, mode)
            with torch.no_grad():
                expected = hand(*x)
                torch.testing.assert_close(model(*x), expected, rtol=1e-10, atol=1e-10,
                                           msg=lambda m, mode=mode: f"{mode}: {m}")
                assert not torch.allclose(plain(*x), expected, rtol=1e-4)  # it mattered
        finally:
            _mode(files, name, "flash" if mode else None)


def test_nn_softmax_attention_with_dropout_in_training(
        applied: dict[tuple[str, int], Built]) -> None:
    """vit-pytorch's dropout after ``self.attend``: the same draws, the same muP logits."""
    model, hand, _ = applied["vit", 4 * BASE]
    x = _inputs(model)
    try:
        model.train(), hand.train()
        torch.manual_seed(3)
        got = model(*x)
        torch.manual_seed(3)
        torch.testing.assert_close(got, hand(*x), rtol=1e-10, atol=1e-10)
    finally:
        model.eval(), hand.eval()


def test_every_shifted_and_unshifted_window_attention_is_a_site(
        files: dict[str, ModuleType]) -> None:
    swin = files["swin"].Swin
    with torch.device("meta"):
        model, base = swin(4 * BASE), swin(BASE)
    x = (torch.randn(2, 3, 8, 8, device="meta"),)
    sites = analyze(model, x, base=base).attention
    assert [(s.d_head, s.d_head_base, s.d_head_grows) for s in sites] == [(64, 16, True)] * 2
    for i, site in enumerate(sorted(sites, key=lambda s: s.module)):  # or its softmax child
        assert site.module.startswith(f"blocks.{i}.attn"), site.module


def test_xformers_is_refused_only_where_it_is_reached(
        files: dict[str, ModuleType], applied: dict[tuple[str, int], Built]) -> None:
    """Captured on 'flash', the model runs on 'flash' and 'math' (test above); on 'xformers'
    the call raises, naming its line, and never runs at the standard scale."""
    model, _, _ = applied["uvit", 2 * BASE]
    x = _inputs(model)
    source = SOURCES["uvit"]
    line = source[:source.index("xformers.ops.memory_efficient_attention(")].count("\n") + 1
    files["uvit"].ATTENTION_MODE = "xformers"
    try:
        with pytest.raises(MuprewriteError) as refused:
            model(*x)
    finally:
        files["uvit"].ATTENTION_MODE = "flash"
    assert refused.value.where == f"{files['uvit'].__file__}:{line}"
    assert "memory_efficient_attention (xformers)" in str(refused.value)
    assert "in_block.attn" in str(refused.value) and refused.value.fix


@pytest.mark.slow
def test_coord_check_runs_on_nn_softmax_attention(files: dict[str, ModuleType]) -> None:
    """It crashed: the first forward of the applied model raised."""
    vit = files["vit"].ViT
    check = coord_check(lambda w: vit(w), [BASE, 4 * BASE], inputs=lambda m: m.example_inputs(),
                        steps=1, seeds=1)
    assert abs(check.slope("")) < 0.3


@pytest.mark.slow
def test_coord_check_is_flat_on_shifted_window_attention(files: dict[str, ModuleType]) -> None:
    """Issue 24's acceptance: Swin's two blocks (one shifted, its mask added through a view
    of the logits) under mup, heads fixed and d_head growing: the output's RMS after each of
    three Adam steps stays flat in width (at init it shrinks with the readout multiplier
    base/width, as muP's output does until training moves it). Its position-bias table is
    *input* from the base's one capture and *fixed* from two: at the base every factor is 1
    either way, and the sweep is not refused for it."""
    swin = files["swin"].Swin
    check = {rule: coord_check(lambda w: swin(w).double(), [BASE, 2 * BASE, 4 * BASE],
                               inputs=lambda m: tuple(t.double() for t in m.example_inputs()),
                               rule=rule, steps=3, seeds=2) for rule in ("mup", "sp")}
    assert all(abs(check["mup"].slope("", step)) < 0.3 for step in (1, 2, 3)), check["mup"].rms
    assert check["sp"].slope("", 1) > 0.5, check["sp"].rms[""]  # the check can tell
