"""A model edited after ``apply`` is refused by ``param_groups`` and ``optimizer``: a planned
module replaced (a new fine-tuning head loses the readout multiplier and the init scale), a
parameter added, a shape changed. What changes a model legitimately still passes:
``copy.deepcopy``, a meta-built model brought to a device with ``to_empty``, and
the ``torch.compile`` wrapper (DDP and FSDP2: tests/test_distributed.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import muprewrite
from muprewrite import MuprewriteError


class Tagger(nn.Module):
    """A small token classifier: embedding, two hidden layers, a readout head."""

    def __init__(self, width: int, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, width)
        self.hidden = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # (B, T, D), D the width axis
        return self.head(self.norm(x + self.hidden(x)))


def _applied(width: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return muprewrite.apply(Tagger(width).double(), torch.randint(0, 32, (2, 4)),
                            base=Tagger(8).double())


@pytest.fixture(scope="module")
def applied() -> nn.Module:
    return _applied()


def _refused(model: nn.Module, *names: str) -> None:
    for build in (lambda: muprewrite.param_groups(model, lr=1e-3),
                  lambda: muprewrite.optimizer(model, lr=1e-3)):
        with pytest.raises(MuprewriteError, match="edited after muprewrite.apply") as info:
            build()
        assert all(repr(n) in str(info.value) for n in names), str(info.value)
        assert "apply again" in info.value.fix


def test_new_readout_head_is_refused(applied: nn.Module) -> None:
    model = copy.deepcopy(applied)
    x = torch.randint(0, 32, (2, 4))
    model.head = nn.Linear(32, 5).double()  # a new fine-tuning head, same shape
    with torch.no_grad():
        model.head.weight.copy_(applied.head.weight)
        model.head.bias.copy_(applied.head.bias)
    # the edit lost the readout multiplier (1/m = 1/4 at 4x the base width): not the same model
    assert not torch.allclose(model(x), applied(x))
    _refused(model, "head.weight", "head.bias")


def test_hidden_module_replaced_is_refused(applied: nn.Module) -> None:
    model = copy.deepcopy(applied)
    model.hidden[0] = nn.Linear(32, 32).double()  # standard init, not the rule's
    _refused(model, "hidden.0.weight")


def test_parameter_added_or_reshaped_is_refused(applied: nn.Module) -> None:
    added = copy.deepcopy(applied)
    added.scale = nn.Parameter(torch.ones(32, dtype=torch.float64))
    _refused(added, "scale")
    reshaped = copy.deepcopy(applied)
    reshaped.head = nn.Linear(32, 7).double()  # a head with more classes
    _refused(reshaped, "head.weight")


def test_legitimate_changes_are_accepted(applied: nn.Module) -> None:
    def lrs(model: nn.Module) -> dict[str, float]:
        return {n: g["lr"] for g in muprewrite.param_groups(model, lr=1e-3)
                for n in g["param_names"]}

    expected = lrs(applied)
    assert expected["hidden.0.weight"] == pytest.approx(2.5e-4)
    assert lrs(copy.deepcopy(applied)) == expected
    assert lrs(torch.compile(copy.deepcopy(applied))) == expected  # the wrapper, not compiled


def test_meta_built_model_brought_to_a_device_is_accepted() -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        model = Tagger(32).double()
    model = muprewrite.apply(model, torch.randint(0, 32, (2, 4), device="meta"),
                             base=Tagger(8).double())
    model.to_empty(device="cpu")  # new parameter objects on the same modules
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    muprewrite.rescale_init(model)
    assert len(muprewrite.optimizer(model, lr=1e-3).param_groups) > 1
