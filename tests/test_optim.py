"""param_groups: the mup package's MuAdamW as oracle, eps under absorption, SGD, schedulers,
identity at base width, and clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import EXAMPLES
from torch import nn

from muprewrite import MuprewriteError, analyze, param_groups


def _mlp(width: int, readout: type[nn.Module] = nn.Linear, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         readout(width, 10)).to(dtype)


def _by_name(groups: list[dict]) -> dict[str, dict]:
    return {n: g for g in groups for n in g["param_names"]}


def test_groups_equal_mup_adamw() -> None:
    mup = pytest.importorskip("mup")
    oracle = _mlp(256, mup.MuReadout)
    mup.set_base_shapes(oracle, _mlp(64, mup.MuReadout))
    opt = mup.MuAdamW(oracle.parameters(), lr=3e-3, weight_decay=0.1)
    names = {id(p): n for n, p in oracle.named_parameters()}
    expected = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    model = _mlp(256)
    groups = _by_name(param_groups(model, analyze(model, torch.randn(2, 16), base=_mlp(64)),
                                   rule="mup", lr=3e-3, weight_decay=0.1))
    assert set(groups) == set(expected)
    for name, (lr, wd) in expected.items():
        assert (groups[name]["lr"], groups[name]["weight_decay"]) == (pytest.approx(lr), pytest.approx(wd))


def test_absorbed_rule_scales_eps_and_sgd_rule_has_none() -> None:
    model = _mlp(256)
    report = analyze(model, torch.randn(2, 16), base=_mlp(64))
    absorbed = _by_name(param_groups(model, report, rule="mup-absorbed", lr=1e-3, eps=1e-8))
    assert absorbed["4.weight"]["eps"] == pytest.approx(4e-8)  # output: eps / k, k = 1/m_in
    assert absorbed["4.weight"]["lr"] == pytest.approx(2.5e-4) and absorbed["0.weight"]["eps"] == 1e-8
    sgd_groups = param_groups(model, report, rule="mup-sgd", lr=0.1)
    assert all("eps" not in g for g in sgd_groups)
    torch.optim.SGD(sgd_groups, lr=0.1, momentum=0.9)  # accepted as is
    assert _by_name(sgd_groups)["0.bias"]["lr"] == pytest.approx(0.4)


def test_schedulers_keep_the_ratios() -> None:
    model = _mlp(256)
    report = analyze(model, torch.randn(2, 16), base=_mlp(64))
    opt = torch.optim.AdamW(param_groups(model, report, lr=1e-3))
    before = [g["lr"] for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr / 2 for lr in before])


def test_identity_at_base_width_first_adamw_step() -> None:
    model = _mlp(64, dtype=torch.float64)
    twin = copy.deepcopy(model)
    report = analyze(model, torch.randn(2, 16, dtype=torch.float64), base=_mlp(64))
    x = torch.randn(8, 16, dtype=torch.float64)
    ours = torch.optim.AdamW(param_groups(model, report, lr=1e-2, weight_decay=0.1))
    plain = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.1)
    for m, opt in ((model, ours), (twin, plain)):
        m(x).square().mean().backward()
        opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name


def test_frozen_parameters_left_out_and_errors_are_clear() -> None:
    dit = next(e for e in EXAMPLES if e.module == "dit")
    wide, small = dit.build(dit.wide_heads), dit.build(dit.small)
    groups = param_groups(wide, analyze(wide, base=small), lr=1e-4)
    names = [n for g in groups for n in g["param_names"]]
    assert "pos_embed" not in names and len(names) == len(set(names))
    assert len(names) == sum(p.requires_grad for p in wide.parameters())
    with pytest.raises(MuprewriteError, match="base="):
        param_groups(wide, analyze(wide), lr=1e-4)
    with pytest.raises(MuprewriteError, match="not in the report"):
        param_groups(_mlp(64), analyze(wide, base=small), lr=1e-4)
