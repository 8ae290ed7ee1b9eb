"""Depth counts calls of residual blocks, per residual stream (issue 20).

By hand: each model's ``forward(..., s)`` adds every residual branch as ``x + s * f(x)``. With
the model's parameters copied into a fresh instance, ``apply``'s output must equal that
forward with s = m_L^-alpha, m_L = block calls / the base's block calls of the branch's own
stream, to 1e-10 in float64 (model and base at one width, so that only depth differs):

- one block object applied 8 times against 2 (ALBERT): m_L = 4 (not a hook per listed path);
- ``ModuleList([blk] * 8)`` against 2: m_L = 4, each call scaled once;
- 7 distinct blocks then the first again, against 1 + 1: m_L = 8 / 2 (not 7 / 1);
- an encoder of 8 blocks against 2 beside a decoder of 2 against 2: encoder branches x 4^-1,
  decoder branches x 1 (not one global m_L = 10 / 4 for both).

The emitted source counts blocks by module name and has one m_L: it refuses each of these.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from depth_stacks import FirstAgain, RepeatedList, Seq2Seq, SharedBlock, TiedMLP

import muprewrite
from muprewrite import MuprewriteError, UsageError
from muprewrite.emit import emit
from muprewrite.emit.errors import EmitError
from muprewrite.rewrite.attached import plan_of
from muprewrite.verify.source_check import float64

STACKS = Path(__file__).with_name("depth_stacks.py")
WIDTH = 16

# class, (model blocks, base blocks), (model block calls, base block calls)
CALLED = {
    "shared-block": (SharedBlock, (8, 2), (8, 2)),
    "repeated-list": (RepeatedList, (8, 2), (8, 2)),
    "first-again": (FirstAgain, (7, 1), (8, 2)),
}


def _applied(build: Callable[[], torch.nn.Module], base: torch.nn.Module, rule: str,
             inputs: tuple) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model in muP, a fresh instance holding the same parameters)."""
    torch.manual_seed(0)
    model = build()
    muprewrite.apply(model, inputs, base=base, rule=rule)
    by_hand = build()
    by_hand.load_state_dict(model.state_dict())
    return model, by_hand


@pytest.mark.parametrize("case, rule, alpha", [
    *((case, "completep", 1.0) for case in sorted(CALLED)), ("shared-block", "depth-mup", 0.5)])
def test_each_block_call_takes_the_branch_multiplier_once(case: str, rule: str,
                                                          alpha: float) -> None:
    cls, (depth, depth_base), (calls, base_calls) = CALLED[case]
    with float64():
        torch.manual_seed(1)
        base = cls(WIDTH, depth_base)
        inputs = base.example_inputs()
        model, by_hand = _applied(lambda: cls(WIDTH, depth), base, rule, inputs)
        with torch.no_grad():
            got = model(*inputs)
            want = by_hand(*inputs, s=(calls / base_calls) ** -alpha)
            assert not torch.allclose(got, by_hand(*inputs))  # the multiplier matters here
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    plan = plan_of(model)
    assert plan is not None
    assert (plan.report.depth, plan.report.depth_base) == (calls, base_calls)


@pytest.fixture(scope="module")
def seq2seq() -> tuple[torch.nn.Module, torch.nn.Module, tuple]:
    with float64():
        torch.manual_seed(1)
        base = Seq2Seq(WIDTH, n_enc=2, n_dec=2)
        inputs = base.example_inputs()
        model, by_hand = _applied(lambda: Seq2Seq(WIDTH, n_enc=8, n_dec=2), base, "completep",
                                  inputs)
    return model, by_hand, inputs


def test_streams_that_deepen_differently_get_their_own_m_l(seq2seq: tuple) -> None:
    model, by_hand, inputs = seq2seq
    with float64(), torch.no_grad():
        got = model(*inputs)
        want = by_hand(*inputs, s_enc=(8 / 2) ** -1.0, s_dec=1.0)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    plan = plan_of(model)
    assert plan is not None  # the table shows the m_L in force, not one global 10 / 4
    assert "base 4 blocks, m_L per residual stream = 4, 1" in plan.report.table()


def test_optimizer_factors_follow_the_stream_of_each_parameter(seq2seq: tuple) -> None:
    """completep: Adam's eps x m_L^-1 inside branches, with the m_L of the parameter's own
    stream (the width is the base's: every width factor is 1)."""
    plan = plan_of(seq2seq[0])
    assert plan is not None
    assert plan["encoder.5.mlp.0.weight"].eps == pytest.approx(1 / 4, rel=1e-12)
    assert plan["encoder.0.attn.qkv.weight"].eps == pytest.approx(1 / 4, rel=1e-12)
    assert plan["decoder.1.cross.qkv.weight"].eps == pytest.approx(1.0, rel=1e-12)
    assert plan["decoder.0.mlp.2.weight"].eps == pytest.approx(1.0, rel=1e-12)


def test_a_weight_on_two_streams_of_different_m_l_is_refused() -> None:
    """Decoder blocks reusing an encoder block's MLP: that weight sits in branches of m_L 4
    and 1, so no depth factor fits it (one global m_L was silently used); refused, named.
    Deepened alike (8 and 8 against 2 and 2) it has one m_L and is accepted."""
    with float64():
        base = TiedMLP(WIDTH, n_enc=2, n_dec=2)
        inputs = base.example_inputs()
        with pytest.raises(UsageError, match=r"'encoder\.0\.mlp\.0\.weight' lies inside "
                                             r"residual branches of streams .*m_L = 1, 4"):
            muprewrite.apply(TiedMLP(WIDTH, n_enc=8, n_dec=2), inputs, base=base,
                             rule="completep")
        muprewrite.apply(TiedMLP(WIDTH, n_enc=8, n_dec=8), inputs, base=base, rule="completep")


@pytest.mark.parametrize("model, base, match", [
    ("SharedBlock(dim=32, n_layers=8)", "SharedBlock(dim=16, n_layers=2)",
     "8 residual block calls, but has 1 module"),
    ("FirstAgain(dim=32, n_layers=7)", "FirstAgain(dim=16, n_layers=1)",
     "8 residual block calls, but has 7 module"),
    ("Seq2Seq(dim=32, n_enc=8, n_dec=2)", "Seq2Seq(dim=16, n_enc=2, n_dec=2)",
     "2 residual streams"),
])
def test_emission_refuses_what_one_module_count_cannot_measure(model: str, base: str,
                                                              match: str) -> None:
    with pytest.raises(EmitError, match=match) as info:
        emit(STACKS, model, base, rule="completep")
    assert isinstance(info.value, MuprewriteError) and "depth_stacks.py:" in str(info.value)
