"""Emission of attention whose query holds the head size before the sequence axis.

``torch.einsum("bhdn,bhdm->bhnm", q, k)`` on q of shape (B, heads, d_head, tokens), as
denoising-diffusion-pytorch writes it: the logits' factor must read d_head as
``q.shape[-2]``. The emitter wrote ``q.shape[-1]``, the token count, at every width, and
exited 0. The model below holds both layouts, one per branch: emitted from a capture of
one, the other branch is edited by pattern and must read its axis off its own equation.

Each emitted file is imported without muprewrite, built at base width, 2x and 4x (d_head
grows: the number of heads is fixed), given the state of ``muprewrite.apply``'s model, and
must give its output (float64, 1e-10); ``muprewrite check`` must pass it.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
from click.testing import CliRunner
from emitted import float64, import_without_muprewrite

import muprewrite
from muprewrite.cli.main import cli
from muprewrite.emit import EmitError, emit
from muprewrite.emit.find.attention import _head_axis

pytestmark = pytest.mark.slow

BASE = 32
LAYOUTS = ["bhdn", "bhnd"]
IMAGE = (2, 3, 4, 5)  # as example_inputs(): 20 tokens, no head size (16, 32, 64)

NET = '''"""Attention over the pixels of a feature map, q and k in the layout asked for."""

import torch
from torch import nn

HEADS = 2


class PixelAttention(nn.Module):
    def __init__(self, width: int, layout: str = "bhdn") -> None:
        super().__init__()
        self.layout = layout
        self.d_head = width // HEADS
        self.scale = self.d_head ** -0.5
        self.equation = "bhnd,bhmd->bhnm"
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.to_qkv = nn.Conv2d(width, 3 * width, 1, bias=False)
        self.to_out = nn.Conv2d(width, width, 1)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(images)  # (B, C*, H, W)
        b, c, hh, ww = x.shape
        qkv = self.to_qkv(x).chunk(3, dim=1)  # 3 x (B, C*, H, W)
        q, k, v = (t.reshape(b, HEADS, self.d_head, hh * ww) for t in qkv)  # (B, H, D*, N)
        if self.layout == "bhdn":
            sim = torch.einsum("bhdn,bhdm->bhnm", q, k) * self.scale  # (B, H, N, N)
        else:
            q, k = q.transpose(-2, -1), k.transpose(-2, -1)  # (B, H, N, D*)
            sim = torch.einsum("bhnd,bhmd->bhnm", q, k) * self.scale  # (B, H, N, N)
        attn = sim.softmax(dim=-1)
        out = torch.einsum("bhnm,bhdm->bhdn", attn, v)  # (B, H, D*, N)
        x = x + self.to_out(out.reshape(b, c, hh, ww))
        return self.conv_out(x)

    def example_inputs(self):
        return (torch.randn(2, 3, 4, 5, device=self.conv_in.weight.device),)
'''
BHND_LINE = NET[:NET.index('torch.einsum("bhnd')].count("\n") + 1


def _call(width: int, layout: str) -> str:
    return f"PixelAttention({width}, {layout!r})"


def _emit(folder: Path, layout: str, source: str = NET) -> tuple[Path, str]:
    (folder / "net.py").write_text(source)
    return folder / "net.py", emit(folder / "net.py", _call(2 * BASE, layout),
                                   _call(BASE, layout)).source


@pytest.fixture(scope="module", params=LAYOUTS, ids=[f"emitted-{x}" for x in LAYOUTS])
def emitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[str, Path, Path]:
    """(the layout captured, the original file, the emitted file)."""
    folder = tmp_path_factory.mktemp(f"einsum_{request.param}")
    original, text = _emit(folder, request.param)
    (folder / "net_mup.py").write_text(text)
    return request.param, original, folder / "net_mup.py"


def _applied(original: ModuleType, width: int, layout: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = original.PixelAttention(width, layout)
    images = torch.randn(*IMAGE, generator=torch.Generator().manual_seed(1))
    return muprewrite.apply(model, (images,), base=original.PixelAttention(BASE, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_emitted_equals_apply(emitted: tuple[str, Path, Path], layout: str) -> None:
    """The captured layout and the one edited by pattern, at 1x, 2x, 4x."""
    _, original_path, path = emitted
    original, ours = import_without_muprewrite(original_path), import_without_muprewrite(path)
    images = torch.randn(*IMAGE, generator=torch.Generator().manual_seed(2))
    with float64(), torch.no_grad():
        for width in (BASE, 2 * BASE, 4 * BASE):
            expected = _applied(original, width, layout)
            model = ours.PixelAttention(width, layout)
            model.load_state_dict(expected.state_dict())
            torch.testing.assert_close(model(images.double()), expected(images.double()),
                                       rtol=1e-10, atol=1e-10,
                                       msg=lambda m, w=width: f"width {w}: {m}")


def test_the_head_size_is_read_off_the_contracted_axis(emitted: tuple[str, Path, Path]) -> None:
    text = emitted[2].read_text()
    assert ('torch.einsum("bhdn,bhdm->bhnm", q, k) * (MUP_D_HEAD_BASE / q.shape[-2]) ** 0.5'
            in text)
    assert ('torch.einsum("bhnd,bhmd->bhnm", q, k) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5'
            in text)


def test_check_passes_the_emitted_file(emitted: tuple[str, Path, Path]) -> None:
    layout, original, path = emitted
    result = CliRunner().invoke(cli, ["check", str(path), "--original", str(original),
                                      "--model", _call(2 * BASE, layout),
                                      "--model", _call(4 * BASE, layout), "--steps", "2"])
    # one layout per model: the other layout's edit is named as not exercised (exit 3)
    assert result.exit_code == 3, result.output
    assert "passed what it ran, 1 edit(s) not exercised" in result.output
    assert "guarded by `if self.layout == \"bhdn\":`" in result.output.replace("else of ", "")


def test_an_equation_the_source_does_not_show_is_taken_from_the_capture_or_refused(
        tmp_path: Path) -> None:
    """``torch.einsum(self.equation, q, k)``: captured, its axis is the capture's (-1 here);
    not run by the capture, the emitter cannot know it and refuses, naming the line."""
    source = NET.replace('torch.einsum("bhnd,bhmd->bhnm", q, k)',
                         "torch.einsum(self.equation, q, k)")
    _, text = _emit(tmp_path, "bhnd", source)
    assert "torch.einsum(self.equation, q, k) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5" in text
    assert ('torch.einsum("bhdn,bhdm->bhnm", q, k) * (MUP_D_HEAD_BASE / q.shape[-2]) ** 0.5'
            in text)
    with pytest.raises(EmitError) as refused:
        _emit(tmp_path, "bhdn", source)
    assert refused.value.where == f"{(tmp_path / 'net.py').resolve()}:{BHND_LINE}"
    assert "not a string literal" in str(refused.value) and refused.value.fix


SHARED = '''"""Two attentions of one class, one line: the equation an attribute per layout."""

import torch
from torch import nn


class Mixer(nn.Module):
    def __init__(self, width: int, layout: str) -> None:
        super().__init__()
        self.layout, self.d_head = layout, width // 2
        self.equation = {"bhdn": "bhdn,bhdm->bhnm", "bhnd": "bhnd,bhmd->bhnm"}[layout]
        self.to_qk = nn.Linear(width, 2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k = (t.reshape(b, n, 2, self.d_head).permute(0, 2, 3, 1)  # (B, H, D*, N)
                for t in self.to_qk(x).chunk(2, dim=-1))
        if self.layout == "bhnd":
            q, k = q.transpose(-2, -1), k.transpose(-2, -1)  # (B, H, N, D*)
        sim = torch.einsum(self.equation, q, k) / self.d_head ** 0.5  # (B, H, N, N)
        return x + sim.softmax(dim=-1).mean(dim=(1, 3))[..., None]


class Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Linear(3, width)
        self.first, self.second = Mixer(width, "bhdn"), Mixer(width, "bhnd")
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.second(self.first(self.embed(x))))

    def example_inputs(self):
        return (torch.randn(2, 20, 3, device=self.embed.weight.device),)
'''


def test_one_line_run_with_two_layouts_is_refused(tmp_path: Path) -> None:
    """Two modules run ``torch.einsum(self.equation, q, k)`` with the head size at -2 and -1:
    one expression cannot read both."""
    (tmp_path / "net.py").write_text(SHARED)
    with pytest.raises(EmitError) as refused:
        emit(tmp_path / "net.py", "Net(64)", "Net(32)")
    line = SHARED[:SHARED.index("sim = torch.einsum")].count("\n") + 1
    assert refused.value.where == f"{(tmp_path / 'net.py').resolve()}:{line}"
    assert "different axes (-2, -1" in str(refused.value) and refused.value.fix


@pytest.mark.parametrize(("equation", "axis"), [
    ("bhdn,bhdm->bhnm", -2), ("bhnd,bhmd->bhnm", -1), ("bct,bcs->bts", -2),
    ("...dn,...dm->...nm", -2), ("b h n d, b h m d -> b h n m", -1), ("nd,md", -1),
    ("d...n,d...m->...nm", None), ("bhnd,bhmd,bhmd->bhnm", None), ("bhnd,bhnd->bhn", -1),
])
def test_the_axis_an_equation_contracts(equation: str, axis: int | None) -> None:
    import libcst as cst

    assert _head_axis(cst.parse_expression(f"torch.einsum({equation!r}, q, k)")) == axis
