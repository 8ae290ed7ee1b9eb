"""Unit tests of dimension-rule helpers and of individual op families."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from muprewrite import analyze
from muprewrite.dims.rules.contract import einsum_letters
from muprewrite.dims.rules.shape import view_groups


@pytest.mark.parametrize(("a", "b", "groups"), [
    ((2, 9, 96), (2, 9, 3, 2, 16), [([0], [0]), ([1], [1]), ([2], [2, 3, 4])]),
    ((2, 4, 8, 16), (2, 32, 16), [([0], [0]), ([1, 2], [1]), ([3], [2])]),
    ((2, 1, 5), (2, 5), [([0], [0]), ([2], [1])]),
    ((6, 4), (4, 6), [([0, 1], [0, 1])]),
    ((3, 5), (4, 4), None),
])
def test_view_groups(a, b, groups) -> None:  # type: ignore[no-untyped-def]
    assert view_groups(a, b) == groups


def test_einsum_letters_expand_ellipsis() -> None:
    ops, out = einsum_letters("...d,de->...e", [4, 2])
    assert ops == [[".0", ".1", ".2", "d"], ["d", "e"]] and out == [".0", ".1", ".2", "e"]
    ops, out = einsum_letters("ij,jk", [2, 2])
    assert out == ["i", "k"]


class ConvStack(nn.Module):
    """Conv stem, grouped conv, transposed conv, pooling and a readout."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.grouped = nn.Conv2d(w, w, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(w, w, 3, padding=1, groups=w)
        self.up = nn.ConvTranspose2d(w, 2 * w, 2, stride=2)
        self.norm = nn.BatchNorm2d(2 * w)
        self.head = nn.Linear(2 * w, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(self.grouped(self.stem(x)))
        h = self.norm(self.up(h)).mean(dim=(2, 3))
        return self.head(h)


def test_convolution_family_roles() -> None:
    with torch.device("meta"):
        model = ConvStack(32)
    report = analyze(model, torch.randn(2, 3, 8, 8, device="meta"))
    assert report["stem.weight"].role == "input"
    assert report["grouped.weight"].role == "hidden"
    assert report["depthwise.weight"].width_axes == (0,)  # [w, 1, 3, 3]: channels only
    assert report["up.weight"].role == "hidden" and report["up.weight"].fan_in == (0, 2, 3)
    assert report["norm.weight"].kind == "norm" and report["norm.weight"].role == "input"
    assert report["head.weight"].role == "output"
    assert {b.name: b.width_axes for b in report.buffers}["norm.running_mean"] == (0,)


class Gated(nn.Module):
    """Chunk into two halves (GLU), split_with_sizes, stack and a free learned table."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.inp = nn.Linear(5, d)
        self.glu = nn.Linear(d, 2 * d)
        self.table = nn.Parameter(torch.zeros(3, d))
        self.out = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        a, b = self.glu(h).chunk(2, dim=-1)
        h = h + a * torch.sigmoid(b)
        first, rest = h.split([1, h.shape[1] - 1], dim=1)
        h = torch.cat([first, rest], 1) + self.table.sum(0)
        return torch.stack([self.out(h), self.out(h)], 0).mean(0)


def test_chunk_split_stack_and_free_table() -> None:
    with torch.device("meta"):
        model = Gated(64)
    report = analyze(model, torch.randn(2, 4, 5, device="meta"))
    assert report.roles() == {"inp.weight": "input", "inp.bias": "input", "glu.weight": "hidden",
                              "glu.bias": "input", "table": "input", "out.weight": "output",
                              "out.bias": "fixed"}
    assert report["table"].kind == "table" and report["table"].width_axes == (1,)
