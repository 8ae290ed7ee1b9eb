"""Weight-decay presets: each rule's convention and coupling are checked claims, and
param_groups applies them (sqrt(m) on hidden matrices, none on vector-like parameters,
independent decay handed to torch's AdamW as wd / lr)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from fitting import fit
from mup_oracle import BASE_HEAD_DIM, OUT, Transformer

import muprewrite
from muprewrite.rules import RuleError, load_rule

BASE, WIDE = 2 * BASE_HEAD_DIM, 8 * BASE_HEAD_DIM  # m = 4


def _groups(rule: str, **kw: float) -> dict[str, dict]:
    torch.manual_seed(0)
    model = muprewrite.apply(Transformer(WIDE).double(), base=Transformer(BASE).double(),
                             rule=rule)
    groups = muprewrite.param_groups(model, **{"lr": 1e-2, "weight_decay": 0.1, **kw})
    return {n: g for g in groups for n in g["param_names"]}


def test_sqrt_preset_scales_hidden_decay_by_sqrt_m_and_frees_vectors() -> None:
    by_name = _groups("mup-wd-sqrt")
    report = muprewrite.analyze(Transformer(WIDE), base=Transformer(BASE))
    for name, group in by_name.items():
        info = report[name]
        if info.role == "hidden" and info.kind == "weight":
            assert group["weight_decay"] == pytest.approx(0.1 * math.sqrt(4)), name
            assert group["lr"] == pytest.approx(1e-2 / 4), name
        else:  # embeddings, readout, biases, norm gains: lr as at base, no decay
            assert group["weight_decay"] == 0.0, name
    mup = _groups("mup")
    assert mup["blocks.0.qkv.weight"]["weight_decay"] == pytest.approx(0.4)
    assert mup["norm.weight"]["weight_decay"] == pytest.approx(0.1)


def test_constant_preset_leaves_weight_decay_alone() -> None:
    assert {g["weight_decay"] for g in _groups("mup-wd-constant").values()} == {0.1}


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int = 20) -> list[float]:
    gen = torch.Generator().manual_seed(1)
    (x,) = model.example_inputs()
    inputs = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    target = torch.randn(*x.shape[:-1], OUT, generator=gen, dtype=x.dtype)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return fit(model, inputs, target, opt, steps, sched)


def test_independent_decay_trains_as_mup_with_the_converted_value() -> None:
    """Independent weight decay wd_i per step = lr * wd_mup: the same trajectory as `mup`,
    under a cosine schedule (the decay follows the schedule), 20 AdamW steps in float64."""
    torch.manual_seed(0)
    start, base = Transformer(WIDE).double(), Transformer(BASE).double()
    lr, wd = 1e-2, 0.5
    runs = {}
    for rule, decay in (("mup", wd), ("mup-wd-independent", lr * wd)):
        model = muprewrite.apply(copy.deepcopy(start), base=base, rule=rule)
        runs[rule] = _train(model, muprewrite.optimizer(model, lr=lr, weight_decay=decay))
    assert runs["mup-wd-independent"] == pytest.approx(runs["mup"], rel=1e-10, abs=0)
    # and the conversion matters: the same number read as a coupled coefficient differs
    model = muprewrite.apply(copy.deepcopy(start), base=base, rule="mup")
    coupled = _train(model, muprewrite.optimizer(model, lr=lr, weight_decay=lr * wd))
    assert coupled != pytest.approx(runs["mup"], rel=1e-6, abs=0)


def _rule(tmp_path: Path, body: str, name: str = "my-rule") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'id = "{name}"\ntitle = "t"\nstatus = "experimental"\n'
                    'attention = "inverse"\n' + body +
                    '\n[doc]\nwhat = "w"\nwhen = "w"\nexample = "e"\nknown_problems = "k"\n'
                    'references = ["r"]\n')
    return path


@pytest.mark.parametrize("body, message", [
    # the claim is checked against the exponents, for each coupling
    ('optimizer = "adam"\nweight_decay_convention = "sqrt-width-wd"\n'
     '[role.hidden]\nlr = { m_in = -1 }\nweight_decay = { m_in = 1 }\n',
     "needs weight_decay = m_in\\^0.5"),
    ('optimizer = "adam"\nweight_decay_convention = "constant-lr-wd"\n'
     'weight_decay_coupling = "independent"\n'
     '[role.hidden]\nlr = { m_in = -1 }\nweight_decay = { m_in = 1 }\n',
     "independent weight decay needs weight_decay = 1"),
    ('optimizer = "adam"\nweight_decay_convention = "constant-lr-wd"\n'
     'weight_decay_coupling = "sometimes"\n', "weight_decay_coupling"),
    ('optimizer = "adam"\nweight_decay_convention = "constant-lr-wd"\n'
     'vector_weight_decay = "half"\n', "vector_weight_decay"),
    # [muon] belongs to Muon rules, and they need it
    ('optimizer = "adam"\nweight_decay_convention = "custom"\n[muon]\n'
     'adjust_lr_fn = "original"\n', "needs optimizer"),
    ('optimizer = "muon"\nweight_decay_convention = "custom"\n', "needs a \\[muon\\] section"),
    ('optimizer = "muon"\nweight_decay_convention = "custom"\n[muon]\n'
     'adjust_lr_fn = "moonlight"\n', "adjust_lr_fn"),
    ('optimizer = "muon"\nweight_decay_convention = "constant-lr-wd"\n[muon]\n'
     'adjust_lr_fn = "match_rms_adamw"\nlr = { m_in = -0.5 }\n', "muon.weight_decay"),
    ('optimizer = "muon"\nweight_decay_convention = "custom"\n[muon]\n'
     'adjust_lr_fn = "original"\nlr = { m_depth = -1 }\n', "m_depth exponents need"),
])
def test_rule_files_are_checked(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        load_rule(_rule(tmp_path, body))


def test_every_shipped_rule_states_its_coupling() -> None:
    from muprewrite.rules import RULES_DIR, available_rules

    for name in available_rules():
        text = (RULES_DIR / f"{name}.toml").read_text()
        assert "weight_decay_coupling = " in text, name
        rule = load_rule(name)
        assert rule.weight_decay_coupling in ("coupled", "independent")
        assert (rule.muon is not None) == (rule.optimizer == "muon"), name


@pytest.mark.parametrize("rule", ["completep", "depth-mup"])
def test_depth_rules_scale_weight_decay_with_width_only(rule: str) -> None:
    """CompleteP's Table 1 (and its reference code) give AdamW's weight decay lambda * m_N on
    hidden matrices for both alpha, with no depth factor: the learning rate's m_L^(alpha-1)
    is not compensated in the decay (depth-mup put m_L^1/2 on it)."""
    m, m_l = 4, 4
    torch.manual_seed(0)
    model = muprewrite.apply(Transformer(WIDE, depth=8).double(),
                             base=Transformer(BASE, depth=2).double(), rule=rule)
    report = muprewrite.plan_of(model).report
    assert (report.depth_ratio, report["blocks.0.qkv.weight"].in_branch) == (m_l, True)
    groups = muprewrite.param_groups(model, lr=1e-2, weight_decay=0.1)
    for group in groups:
        for name in group["param_names"]:
            info = report[name]
            hidden = info.role == "hidden" and info.kind == "weight"
            assert group["weight_decay"] == pytest.approx(0.1 * (m if hidden else 1)), name
            if hidden and info.in_branch and rule == "depth-mup":  # lr: 1/m * m_L^-1/2
                assert group["lr"] == pytest.approx(1e-2 / m / math.sqrt(m_l)), name
