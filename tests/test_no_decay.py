"""The no-decay policy of ``param_groups`` / ``muprewrite.optimizer``: ``no_decay="vectors"``
takes weight decay off every parameter with fewer than 2 dimensions (biases, norm gains:
nanoGPT's convention), leaves every other group as the rule made it, and combines with a
rule's own ``vector_weight_decay``; the default (None) is the rule's weight decay.
(The emitted mup_param_groups against these: tests/test_emit_optimizers.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import muprewrite
from muprewrite import MuprewriteError


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(8, width), nn.LayerNorm(width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))


def _decay(groups: list[dict]) -> dict[str, tuple[float, float]]:
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}


@pytest.mark.parametrize("rule", ["mup", "mup-wd-sqrt", "mup-sgd"])
def test_vectors_policy_zeroes_decay_on_ndim_below_two_only(rule: str) -> None:
    torch.manual_seed(0)
    model = muprewrite.apply(_mlp(64), torch.randn(2, 8), base=_mlp(16), rule=rule)
    rule_only = _decay(muprewrite.param_groups(model, lr=1e-2, weight_decay=0.1))
    policy = _decay(muprewrite.param_groups(model, lr=1e-2, weight_decay=0.1, no_decay="vectors"))
    built = _decay(muprewrite.optimizer(model, lr=1e-2, weight_decay=0.1,
                                        no_decay="vectors").param_groups)
    assert built == policy
    shapes = {n: p.dim() for n, p in model.named_parameters()}
    for name, (lr, wd) in policy.items():
        assert lr == rule_only[name][0], name
        assert wd == (0.0 if shapes[name] < 2 else rule_only[name][1]), name
    # the hidden matrix keeps its decay (mup: x m = 4, lr*wd kept; mup-wd-sqrt: x sqrt(m) = 2;
    # mup-sgd: its lr takes no width factor, nor does its decay)
    assert policy["3.weight"][1] == pytest.approx(0.1 * {"mup-wd-sqrt": 2, "mup-sgd": 1}.get(rule, 4))
    # the default is the rule's: mup decays biases and norm gains too
    assert (rule_only["1.weight"][1] > 0) == (rule != "mup-wd-sqrt")


def test_policy_with_a_report_and_refusals() -> None:
    model = _mlp(64)
    report = muprewrite.analyze(model, torch.randn(2, 8), base=_mlp(16))
    groups = _decay(muprewrite.param_groups(model, report, lr=1e-3, weight_decay=0.1,
                                            no_decay="vectors"))
    assert groups["0.bias"][1] == 0.0 and groups["0.weight"][1] == pytest.approx(0.1)
    for bad in ("bias", "Vectors", True):
        with pytest.raises(MuprewriteError, match="is not a policy"):
            muprewrite.param_groups(model, report, lr=1e-3, no_decay=bad)  # type: ignore[arg-type]
