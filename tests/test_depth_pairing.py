"""A base of another depth is paired with the model block by block, or refused.

Ground truth comes from the constructors: a model with L blocks and a base with L_base blocks
pair block i of the model with a block of the base that has the same parameters (here: the
pairing must keep the parameter's path with only its layer index changed), the stem and the
head with themselves. U-ViT repeats two regions (in- and out-blocks around a mid-block).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import muprewrite
from examples.dit import DiT
from examples.gpt import GPT
from examples.mmdit import MMDiT
from examples.uvit import UViT
from muprewrite import UsageError
from muprewrite.capture.export import capture
from muprewrite.capture.input_sets import input_sets
from muprewrite.dims.align import align_depths

_INDEX = re.compile(r"\.\d+\.")

BUILDS = {
    "gpt": lambda depth, width: GPT(n_layer=depth, n_embd=width, n_head=2),
    "dit": lambda depth, width: DiT(depth=depth, hidden_size=width, num_heads=2),
    "uvit": lambda depth, width: UViT(depth=depth, embed_dim=width, num_heads=2),
    "mmdit": lambda depth, width: MMDiT(depth=depth, hidden_size=width, num_heads=2),
}


def _capture(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    return capture(model, input_sets(model.example_inputs()))  # type: ignore[operator]


@pytest.mark.parametrize("name", sorted(BUILDS))
@pytest.mark.parametrize("depths", [(7, 3), (3, 7)], ids=["deeper", "shallower"])
def test_blocks_pair_with_blocks_and_the_rest_by_name(name: str, depths: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model, base = (BUILDS[name](d, w) for d, w in zip(depths, (64, 32)))
    pairing = align_depths(_capture(model), _capture(base))
    assert pairing is not None
    base_names = {n for n, _ in base.named_parameters()}
    for ours, theirs in pairing.params.items():
        assert theirs in base_names
        assert _INDEX.sub(".*.", ours) == _INDEX.sub(".*.", theirs), (ours, theirs)
        if not _INDEX.search(ours):
            assert ours == theirs  # stem and head by name
    used = {n for n, p in model.named_parameters()}
    assert set(pairing.params) == used


@pytest.mark.parametrize("name", ["gpt", "dit"])
def test_a_base_of_another_structure_is_refused(name: str) -> None:
    model = BUILDS[name](4, 64)
    base = BUILDS[name](2, 32)
    if name == "gpt":
        base = GPT(n_layer=2, n_embd=32, n_head=2, bias=False)  # no biases: not the same model
    else:
        base.final_layer.linear = torch.nn.Linear(32, base.final_layer.linear.out_features,
                                                  bias=False)  # a head without a bias
    assert align_depths(_capture(model), _capture(base)) is None
    with pytest.raises(UsageError, match="base is not .* at another width or depth"):
        muprewrite.analyze(model, base=base)


def test_report_measures_depth_and_branches() -> None:
    report = muprewrite.analyze(BUILDS["uvit"](7, 64), base=BUILDS["uvit"](3, 32))
    assert (report.depth, report.depth_base, report.depth_ratio) == (7, 3, 7 / 3)
    assert report.base_name("out_blocks.2.skip_linear.weight") == "out_blocks.0.skip_linear.weight"
    assert report["in_blocks.2.attn.qkv.weight"].in_branch
    assert report["in_blocks.2.attn.qkv.weight"].m_depth == pytest.approx(7 / 3)
    assert not report["patch_embed.proj.weight"].in_branch
    assert "residual stream: 7 blocks" in report.table()


class Flagged(torch.nn.Module):
    """Residual MLP blocks whose activation is an option."""

    def __init__(self, width: int, depth: int, gelu: bool = True) -> None:
        super().__init__()
        self.gelu = gelu
        self.inp, self.out = torch.nn.Linear(4, width), torch.nn.Linear(width, 3)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(torch.nn.functional.gelu(h) if self.gelu else h.relu())
        return self.out(h)


def test_a_base_of_another_depth_running_other_ops_says_so() -> None:
    x = torch.randn(2, 4)
    muprewrite.analyze(Flagged(64, 4), x, base=Flagged(32, 2))  # same option: paired
    with pytest.raises(UsageError, match="differ from the model's only in their layer "
                                         "indices.*but its forward runs other ops") as info:
        muprewrite.analyze(Flagged(64, 4), x, base=Flagged(32, 2, gelu=False))
    text = str(info.value)  # one account: the names differ by depth, the ops by an option
    assert "match block for block" not in text, text  # it said so, then listed unmatched names
    assert "only the model runs aten.gelu" in text and "only the base runs aten.relu" in text
    assert f"{Path(__file__).name}:" in text, text  # the line of the op that differs
