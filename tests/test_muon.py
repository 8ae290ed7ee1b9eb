"""Muon under muP: `mup-muon` / `mup-muon-rms` against a by-hand reference (the mup package's
model and MuAdamW, torch.optim.Muon on the hidden matrices at the derived learning rates),
and `muprewrite.optimizer`'s contract: schedulers, state_dict, refusals."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from fitting import fit
from mup_oracle import BASE_HEAD_DIM, OUT, Transformer
from torch import nn

import muprewrite
from muprewrite import MuprewriteError, UsageError
from muprewrite.training.schedules import check_schedule

pytestmark = pytest.mark.skipif(not hasattr(torch.optim, "Muon"),
                                reason="torch.optim.Muon needs torch >= 2.9")

BASE, WIDE = 2 * BASE_HEAD_DIM, 8 * BASE_HEAD_DIM  # width multiplier 4
LR, ADAM_LR, WD, ADAM_WD = 0.02, 3e-3, 0.05, 0.1


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 20,
           scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> list[float]:
    gen = torch.Generator().manual_seed(1)
    (x,) = model.example_inputs()
    inputs = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    target = torch.randn(*x.shape[:-1], OUT, generator=gen, dtype=x.dtype)
    return fit(model, inputs, target, opt, steps, scheduler)


def _by_hand(width: int, adjust_lr_fn: str, muon_lr_exp: float) -> tuple[nn.Module, list]:
    """The reference: the mup package's model (MuReadout, 1/d attention), its matrices with
    two infinite dimensions on torch.optim.Muon at LR x m^muon_lr_exp (weight decay x
    m^-muon_lr_exp, so lr * wd stays), everything else on MuAdamW."""
    mup = pytest.importorskip("mup")
    torch.manual_seed(0)
    model = Transformer(width, hand_mup=True).double()
    mup.set_base_shapes(model, Transformer(BASE, hand_mup=True))
    m = width / BASE
    hidden = [p for p in model.parameters() if p.infshape.ninf() == 2]
    rest = [p for p in model.parameters() if p.infshape.ninf() != 2]
    muon = torch.optim.Muon(hidden, lr=LR * m ** muon_lr_exp, weight_decay=WD * m ** -muon_lr_exp,
                            adjust_lr_fn=adjust_lr_fn)
    adamw = mup.MuAdamW(rest, lr=ADAM_LR, weight_decay=ADAM_WD)
    return model, [muon, adamw]


class _Both(torch.optim.Optimizer):
    """Steps two optimizers (the reference keeps them apart, as a user would)."""

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self.parts = parts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none)

    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for part in self.parts:
            part.step()


@pytest.mark.parametrize("rule, adjust, exp", [("mup-muon", "original", 0.0),
                                               ("mup-muon-rms", "match_rms_adamw", -0.5)])
def test_tool_optimizer_equals_the_by_hand_reference(rule: str, adjust: str, exp: float) -> None:
    """20 steps in float64 to 1e-10, at width multiplier 4 (d_head grows)."""
    reference, parts = _by_hand(WIDE, adjust, exp)
    model = Transformer(WIDE).double()
    model.load_state_dict(reference.state_dict())
    expected = _train(reference, _Both(parts))
    muprewrite.apply(model, base=Transformer(BASE).double(), rule=rule, init=False)
    opt = muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR, weight_decay=WD,
                               adam_weight_decay=ADAM_WD)
    got = _train(model, opt)
    assert got == pytest.approx(expected, rel=1e-10, abs=0)
    assert expected[-1] < expected[0]  # it trained
    muon = {n for g in opt.param_groups if g["optimizer"] == "muon" for n in g["param_names"]}
    assert muon == {n for n, p in model.named_parameters() if p.ndim == 2
                    and muprewrite.plan_of(model).report[n].role == "hidden"}  # type: ignore[union-attr]


def test_a_wrong_muon_learning_rate_fails_the_reference() -> None:
    """The comparison can fail: the rms rule's m^-1/2 against a reference without it."""
    reference, parts = _by_hand(WIDE, "match_rms_adamw", 0.0)
    model = Transformer(WIDE).double()
    model.load_state_dict(reference.state_dict())
    expected = _train(reference, _Both(parts))
    muprewrite.apply(model, base=Transformer(BASE).double(), rule="mup-muon-rms", init=False)
    got = _train(model, muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR, weight_decay=WD,
                                             adam_weight_decay=ADAM_WD))
    assert got != pytest.approx(expected, rel=1e-6, abs=0)


def _wide() -> nn.Module:
    torch.manual_seed(0)
    return muprewrite.apply(Transformer(WIDE).double(), base=Transformer(BASE).double(),
                            rule="mup-muon")


def test_schedulers_scale_every_group_alike() -> None:
    model = _wide()
    opt = muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    start = [g["lr"] for g in opt.param_groups]
    _train(model, opt, steps=4, scheduler=sched)
    factor = opt.param_groups[0]["lr"] / start[0]
    assert 0 < factor < 1
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([s * factor for s in start])
    check_schedule(opt, sched, steps=5)  # raises if a ratio is lost


def test_state_dict_round_trip_continues_identically() -> None:
    model = _wide()
    opt = muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR, weight_decay=WD)
    _train(model, opt, steps=3)
    saved_model, buffer = copy.deepcopy(model.state_dict()), io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    expected = _train(model, opt, steps=3)

    fresh = _wide()
    fresh.load_state_dict(saved_model)
    opt2 = muprewrite.optimizer(fresh, lr=LR, adam_lr=ADAM_LR, weight_decay=WD)
    buffer.seek(0)
    opt2.load_state_dict(torch.load(buffer))
    assert any("momentum_buffer" in s for s in opt2.state.values())  # Muon's state came back
    assert any("exp_avg" in s for s in opt2.state.values())  # and AdamW's
    assert _train(fresh, opt2, steps=3) == expected


def test_refusals_name_the_fix() -> None:
    model = _wide()
    with pytest.raises(UsageError, match="adam_lr"):
        muprewrite.optimizer(model, lr=LR)
    with pytest.raises(UsageError, match="adam_lr"):
        muprewrite.param_groups(model, lr=LR)
    with pytest.raises(UsageError, match="match_rms_adamw"):
        muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR, adjust_lr_fn="match_rms_adamw")
    adam = muprewrite.apply(Transformer(WIDE).double(), base=Transformer(BASE).double())
    with pytest.raises(UsageError, match="Muon rules"):
        muprewrite.param_groups(adam, lr=LR, adam_lr=ADAM_LR)


def test_adam_and_sgd_rules_build_their_own_optimizers() -> None:
    adam = muprewrite.apply(Transformer(WIDE).double(), base=Transformer(BASE).double())
    assert isinstance(muprewrite.optimizer(adam, lr=1e-3), torch.optim.AdamW)
    sgd = muprewrite.apply(Transformer(WIDE).double(), base=Transformer(BASE).double(),
                           rule="mup-sgd")
    opt = muprewrite.optimizer(sgd, lr=1e-2, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


def test_conv_kernels_stay_on_adamw() -> None:
    def net(w: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, w, 3), nn.ReLU(), nn.Conv2d(w, w, 3), nn.ReLU(),
                             nn.Flatten(), nn.Linear(w * 4, 2))

    model = muprewrite.apply(net(32), torch.randn(2, 3, 6, 6), base=net(16), rule="mup-muon")
    opt = muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR)
    muon = [n for g in opt.param_groups if g["optimizer"] == "muon" for n in g["param_names"]]
    assert muon == []  # the hidden conv kernel (4-D) is AdamW's, at mup's lr
    hidden = next(g for g in opt.param_groups if "2.weight" in g["param_names"])
    assert hidden["lr"] == pytest.approx(ADAM_LR / 2) and math.isclose(hidden["lr_factor"], 0.5)


def test_muon_needs_whole_matrices() -> None:
    """A DTensor sharded on a dimension (FSDP2) is refused before Muon sees it."""
    dist = pytest.importorskip("torch.distributed")
    from torch.distributed.tensor import DTensor, Shard, init_device_mesh

    if dist.is_initialized():
        pytest.skip("a process group is already up")
    import os
    import tempfile

    with tempfile.NamedTemporaryFile() as store:
        dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0,
                                world_size=1)
        try:
            mesh = init_device_mesh("cpu", (1,))
            model = _wide()
            name, param = next((n, p) for n, p in model.named_parameters() if "qkv.weight" in n)
            sharded = nn.Parameter(DTensor.from_local(param.detach(), mesh, [Shard(0)]))
            owner, attr = name.rsplit(".", 1)
            setattr(model.get_submodule(owner), attr, sharded)
            with pytest.raises(UsageError, match="(?s)sharded.*DDP"):
                muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR)
        finally:
            dist.destroy_process_group()
            os.environ.pop("MASTER_ADDR", None)


def test_needs_torch_with_muon(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _wide()
    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(MuprewriteError, match="PyTorch >= 2.9"):
        muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR)


def test_coord_check_is_flat_under_mup_muon_and_not_under_sp_muon() -> None:
    """Activations after 3 Muon + Adam steps: width-independent under mup-muon; under
    sp-muon (the same optimizers at the same LRs, no muP) the readout grows with width."""
    from muprewrite.verify import coord_check

    checks = {rule: coord_check(Transformer, [32, 64, 128], inputs=lambda m: m.example_inputs(),
                                rule=rule, lr=LR, adam_lr=ADAM_LR, steps=3, seeds=1)
              for rule in ("mup-muon", "sp-muon")}
    assert checks["mup-muon"].flagged() == []
    assert "out" in dict(checks["sp-muon"].flagged())


def test_deepcopy_and_pickle_keep_both_parts() -> None:
    import pickle

    model = _wide()
    opt = muprewrite.optimizer(model, lr=LR, adam_lr=ADAM_LR)
    _train(model, opt, steps=2)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert [g["lr"] for g in clone.param_groups] == [g["lr"] for g in opt.param_groups]
        assert len(clone.state) == len(opt.state)
        clone.step()  # both parts are there (their grads are the copies')
