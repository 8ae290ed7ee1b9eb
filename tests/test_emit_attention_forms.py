"""Emission of the attention forms of tests/attention_forms.py, and what it says when it cannot.

- vit-pytorch's ``self.attend = nn.Softmax(dim=-1)``: emission refused, saying a library
  module computed the attention (the planned host was the ``nn.Softmax`` child);
- Swin's shifted window: the masked site was not found;
- U-ViT's 'xformers' path: ``xformers.ops.memory_efficient_attention(q, k, v)`` was left at
  its default scale 1/sqrt(d_head) in the emitted file. It now takes ``scale=`` like SDPA.

Each file is emitted from its model at 2x the base width 32, imported without muprewrite
(a stand-in ``xformers.ops`` in ``sys.modules``), built at 2x and 4x (heads fixed, d_head
grows) with the state of the same file with muP written by hand, and must give its output
on every attention path (float64, 1e-10); at 4x also that of ``muprewrite.apply``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import libcst as cst
import pytest
import torch
from attention_forms import SOURCES, by_hand, fake_xformers, load
from emitted import float64, import_without_muprewrite
from libcst.metadata import MetadataWrapper

import muprewrite
from muprewrite.emit import EmitError, emit
from muprewrite.emit.cst.source import SourceFile
from muprewrite.emit.find.attention import scan_attention
from muprewrite.emit.plan.edits import NodeEdit
from muprewrite.emit.write.forms import apply_edit

pytestmark = pytest.mark.slow

BASE, HEADS = 32, 2
CLASSES = {"vit": "ViT", "uvit": "UViT", "swin": "Swin"}
MODES = {"vit": [None], "swin": [None], "uvit": ["flash", "xformers", "math"]}
Files = dict[str, tuple[ModuleType, ModuleType, ModuleType, str]]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    """name -> (the original file, muP by hand, the emitted file, its text)."""
    folder = tmp_path_factory.mktemp("emit_forms")
    with pytest.MonkeyPatch.context() as patch:
        for key, module in fake_xformers().items():
            patch.setitem(sys.modules, key, module)
        out = {}
        for name, source in SOURCES.items():
            original = load(folder, name, source)
            hand = load(folder, name + "_hand", by_hand(name, BASE // HEADS, BASE))
            cls = CLASSES[name]
            text = emit(folder / f"{name}.py", f"{cls}({2 * BASE})", f"{cls}({BASE})").source
            (folder / f"{name}_mup.py").write_text(text)
            out[name] = (original, hand, import_without_muprewrite(folder / f"{name}_mup.py"),
                         text)
        yield out


def _set_mode(modules: tuple[ModuleType, ...], mode: str | None) -> None:
    for module in modules:
        if mode is not None:
            module.ATTENTION_MODE = mode


@pytest.mark.parametrize("name", list(SOURCES))
def test_emitted_equals_mup_by_hand_on_every_path(files: Files, name: str) -> None:
    original, hand_file, ours, _ = files[name]
    cls = CLASSES[name]
    for width in (2 * BASE, 4 * BASE):
        torch.manual_seed(0)
        with float64():
            hand, model = getattr(hand_file, cls)(width), getattr(ours, cls)(width)
            model.load_state_dict(hand.state_dict())
            torch.manual_seed(1)
            x = model.example_inputs()
        for mode in MODES[name]:
            try:
                _set_mode((hand_file, ours), mode)
                with torch.no_grad():
                    torch.testing.assert_close(
                        model(*x), hand(*x), rtol=1e-10, atol=1e-10,
                        msg=lambda m, w=width, p=mode: f"width {w}, {p}: {m}")
            finally:
                _set_mode((hand_file, ours), "flash" if mode else None)


@pytest.mark.parametrize("name", list(SOURCES))
def test_emitted_equals_apply(files: Files, name: str) -> None:
    """At 4x, on the path ``apply`` captured and (U-ViT) the math path it did not."""
    original, _, ours, _ = files[name]
    cls = CLASSES[name]
    with float64():
        torch.manual_seed(0)
        applied = getattr(original, cls)(4 * BASE)
        torch.manual_seed(1)
        x = applied.example_inputs()
        muprewrite.apply(applied, x, base=getattr(original, cls)(BASE))
        model = getattr(ours, cls)(4 * BASE)
    model.load_state_dict(applied.state_dict())
    for mode in MODES[name][:1] + MODES[name][2:]:  # not xformers: apply refuses it there
        try:
            _set_mode((original, ours), mode)
            with torch.no_grad():
                torch.testing.assert_close(model(*x), applied(*x), rtol=1e-10, atol=1e-10)
        finally:
            _set_mode((original, ours), "flash" if mode else None)


def test_the_xformers_call_takes_the_mup_scale(files: Files) -> None:
    text = files["uvit"][3]
    assert ("xformers.ops.memory_efficient_attention(q, k, v, scale=MUP_D_HEAD_BASE ** 0.5 / "
            "q.shape[-1])") in text
    assert "F.scaled_dot_product_attention(q, k, v, scale=MUP_D_HEAD_BASE ** 0.5 / q.shape[-1])" \
        in text


def test_the_nn_softmax_attention_is_edited_in_its_parent(files: Files) -> None:
    assert ("torch.matmul(q, k.transpose(-1, -2)) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5 * "
            "self.scale") in files["vit"][3]


@pytest.mark.parametrize(("call", "expected"), [
    ("flash_attn_func(q, k, v, causal=True)",
     "flash_attn_func(q, k, v, causal=True, softmax_scale=MUP_D_HEAD_BASE ** 0.5 / q.shape[-1])"),
    ("flash_attn_func(q, k, v, softmax_scale=0.125)",
     "flash_attn_func(q, k, v, softmax_scale=0.125 * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5)"),
    ("xops.memory_efficient_attention(q, k, v, attn_bias=None, scale=self.scale)",
     "xops.memory_efficient_attention(q, k, v, attn_bias=None, scale=MUP_D_HEAD_BASE ** 0.5 / "
     "q.shape[-1] if self.scale is None else self.scale * (MUP_D_HEAD_BASE / q.shape[-1]) ** "
     "0.5)"),
])
def test_an_external_kernel_takes_its_own_scale_keyword(call: str, expected: str) -> None:
    edit = NodeEdit("sdpa", "MUP_D_HEAD_BASE", "x.py:1", query="q")
    node = apply_edit(cst.parse_expression(call), edit)
    assert cst.Module([]).code_for_node(node) == expected


SCANNED = '''
class Attention:
    def forward(self, q, k, v):
        a = memory_efficient_attention(q, k, v, None, 0.0, self.scale)
        b = flash_attn_func(q, k, v, 0.0)
        c = flash_attn_varlen_func(q, k, v, cu, cu, n, n)
        d = xformers.ops.memory_efficient_attention(q, k, v, None, 0.0)
        return flash_attn_func(q, k, v, softmax_scale=0.5)
'''


def test_an_external_scale_the_emitter_cannot_set_is_refused_with_its_line() -> None:
    src = SourceFile(MetadataWrapper(cst.parse_module(SCANNED)), Path("attn.py"))
    scan = scan_attention(src, src.methods(("Attention",)), {})
    assert [src.line(f.node) for f in scan.found] == [7, 8]
    refused = {src.line(r.node): r.message for r in scan.refusals}
    assert sorted(refused) == [4, 5, 6]
    assert "positional" in refused[4] and "positional" in refused[5]
    assert "flash_attn_varlen_func (flash-attn)" in refused[6]


USER_FILE = '''import torch
from torch import nn

from {helper} import {name}


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.heads = 2
        self.inp = nn.Linear(4, width)
        self.qkv = nn.Linear(width, 3 * width)
        {attribute}
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        b, n, _ = x.shape
        h = self.inp(x)
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(h).chunk(3, -1))
        y = {call}.transpose(1, 2).reshape(b, n, -1)
        return self.out(h + y)

    def example_inputs(self):
        return (torch.randn(2, 5, 4),)
'''
HELPER = '''import torch.nn.functional as F


def attend(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)
'''


def test_a_library_module_is_named_only_where_one_computes_the_attention(
        tmp_path: Path) -> None:
    """The attention in a function of another file of the user's project is the user's code;
    in an ``nn.MultiheadAttention`` it is torch's."""
    (tmp_path / "ops.py").write_text(HELPER)
    (tmp_path / "net.py").write_text(USER_FILE.format(helper="ops", name="attend",
                                                      attribute="", call="attend(q, k, v)"))
    with pytest.raises(EmitError) as own:
        emit(tmp_path / "net.py", "Net(64)", "Net(32)")
    assert "library module" not in str(own.value) and "methods of Net" in str(own.value)
    assert own.value.where.endswith("net.py:21")
    (tmp_path / "mha.py").write_text(USER_FILE.format(
        helper="torch.nn", name="MultiheadAttention",
        attribute="self.mha = MultiheadAttention(width, 2, batch_first=True)",
        call="self.mha(h, h, h, need_weights=False)[0].reshape(b, n, 2, -1).transpose(1, 2)"))
    with pytest.raises(EmitError) as torch_own:
        emit(tmp_path / "mha.py", "Net(64)", "Net(32)")
    assert "a library module computes it" in str(torch_own.value)
