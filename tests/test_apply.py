"""apply(): the mup package as oracle, absorption, identity at base width, init, and the
contract of the returned model (state_dict, deepcopy, other methods, shapes, compile)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from conftest import EXAMPLES, ExampleSpec
from mup_oracle import BASE_HEAD_DIM, MLP, OUT, Transformer
from torch import nn

import muprewrite
from muprewrite import MuprewriteError

BASE, WIDE = 2 * BASE_HEAD_DIM, 8 * BASE_HEAD_DIM  # width multiplier 4


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 20) -> list[float]:
    gen = torch.Generator().manual_seed(1)
    (x,) = model.example_inputs()
    inputs = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    target = torch.randn(*x.shape[:-1], OUT, generator=gen, dtype=x.dtype)
    losses = []
    for _ in range(steps):  # fit one batch: the loss must fall
        loss = (model(inputs) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("rule", ["mup", "mup-sgd"])
@pytest.mark.parametrize("cls", [MLP, Transformer], ids=["mlp", "transformer"])
def test_rule_reproduces_the_mup_package(cls: type[nn.Module], rule: str) -> None:
    """`mup` against MuAdamW, `mup-sgd` against MuSGD (with momentum), same start."""
    mup = pytest.importorskip("mup")
    torch.manual_seed(0)
    oracle = cls(WIDE, hand_mup=True).double()
    mup.set_base_shapes(oracle, cls(BASE, hand_mup=True))  # also rescales MuReadout's init
    model = cls(WIDE).double()
    model.load_state_dict(oracle.state_dict())
    muprewrite.apply(model, base=cls(BASE).double(), rule=rule, init=False)
    groups = muprewrite.param_groups(model, lr=3e-3, weight_decay=0.1)
    if rule == "mup":
        expected = _train(oracle, mup.MuAdamW(oracle.parameters(), lr=3e-3, weight_decay=0.1))
        got = _train(model, torch.optim.AdamW(groups))
    else:
        expected = _train(oracle, mup.MuSGD(oracle.parameters(), lr=3e-3, momentum=0.9,
                                            weight_decay=0.1))
        got = _train(model, torch.optim.SGD(groups, momentum=0.9))
    assert got == pytest.approx(expected, rel=1e-10, abs=0)
    assert expected[-1] < expected[0]  # it trained


@pytest.mark.parametrize("optimizer, weight_decay", [(torch.optim.Adam, 0.0),
                                                     (torch.optim.AdamW, 0.1)])
def test_absorbed_rule_follows_the_same_trajectory(optimizer: type, weight_decay: float) -> None:
    torch.manual_seed(0)
    start = Transformer(WIDE).double()
    base = Transformer(BASE).double()
    runs = {}
    for rule in ("mup", "mup-absorbed"):
        model = muprewrite.apply(copy.deepcopy(start), base=base, rule=rule)
        groups = muprewrite.param_groups(model, lr=3e-3, weight_decay=weight_decay, eps=1e-6)
        runs[rule] = _train(model, optimizer(groups))
    assert runs["mup-absorbed"] == pytest.approx(runs["mup"], rel=1e-9, abs=0)
    plan = muprewrite.plan_of(model)
    assert plan is not None and all(not h.uses for h in plan.hosts)  # no forward multiplier


def _inputs(model: nn.Module) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(3)
    return model.example_inputs()  # type: ignore[operator,no-any-return]


def test_identity_at_base_width_float64() -> None:
    torch.manual_seed(0)
    model = Transformer(BASE).double()
    twin = copy.deepcopy(model)
    muprewrite.apply(model, base=Transformer(BASE).double())
    (x,) = _inputs(model)
    torch.testing.assert_close(model(x), twin(x), rtol=1e-15, atol=0)
    ours = _train(model, torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-3,
                                                                   weight_decay=0.1)), steps=2)
    plain = _train(twin, torch.optim.AdamW(twin.parameters(), lr=1e-3, weight_decay=0.1), steps=2)
    assert ours == pytest.approx(plain, rel=1e-15, abs=0)


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda s: s.module)
def test_wide_examples_train(spec: ExampleSpec) -> None:
    """Every example, at twice the width under both heads conventions: the rewritten model
    runs forward and backward, and one AdamW step keeps it finite."""
    for wide in (spec.wide_heads, spec.wide_dhead):
        torch.manual_seed(0)
        model = muprewrite.apply(spec.build(wide, "cpu"), base=spec.build(spec.small, "cpu"))
        inputs = _inputs(model)
        opt = torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-3, weight_decay=0.1))
        model(*inputs).float().square().mean().backward()
        opt.step()
        assert torch.isfinite(model(*inputs)).all()


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda s: s.module)
def test_identity_at_base_width(spec: ExampleSpec) -> None:
    """Forward and the first AdamW step are exactly those of the original model."""
    torch.manual_seed(0)
    model = spec.build(spec.small, "cpu")
    twin, base = copy.deepcopy(model), copy.deepcopy(model)
    inputs = _inputs(model)
    muprewrite.apply(model, inputs, base=base)
    assert torch.equal(model(*inputs), twin(*inputs))
    ours = torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-3, weight_decay=0.1))
    plain = torch.optim.AdamW(twin.parameters(), lr=1e-3, weight_decay=0.1)
    for m, opt in ((model, ours), (twin, plain)):
        m(*inputs).float().square().mean().backward()
        opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name


class ConstantInit(nn.Module):
    """GPT-2 style init (std 0.02 whatever the width), a zero-init readout bias and a frozen
    parameter: the init factors can be read off directly."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp, self.hidden, self.out = nn.Linear(8, width), nn.Linear(width, width), nn.Linear(width, 3)
        self.frozen = nn.Parameter(torch.randn(width), requires_grad=False)
        for layer in (self.inp, self.hidden, self.out):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(torch.relu(self.inp(x)) + self.frozen)))


@pytest.mark.parametrize("rule, hidden, output", [("mup", 0.5, 1.0), ("mup-absorbed", 0.5, 0.25),
                                                   ("sp", 1.0, 1.0)])
def test_init_follows_the_rule_relative_to_base(rule: str, hidden: float, output: float) -> None:
    torch.manual_seed(0)
    base, model = ConstantInit(256), ConstantInit(1024)  # m = 4
    frozen, x = model.frozen.clone(), torch.randn(2, 8)
    rng = torch.get_rng_state()
    muprewrite.apply(model, x, base=base, rule=rule)
    assert torch.equal(torch.get_rng_state(), rng)  # nothing re-drawn

    def rms(t: torch.Tensor) -> float:
        return float(t.square().mean().sqrt())

    assert rms(model.hidden.weight) == pytest.approx(hidden * rms(base.hidden.weight), rel=1e-6)
    assert rms(model.out.weight) == pytest.approx(output * rms(base.out.weight), rel=1e-6)
    assert rms(model.inp.weight) == pytest.approx(rms(base.inp.weight), rel=1e-6)
    assert not model.hidden.bias.any()  # zero init stays zero
    assert torch.equal(model.frozen, frozen)


def test_meta_base_is_refused_for_init_but_fine_without() -> None:
    with torch.device("meta"):
        base = ConstantInit(64)
    with pytest.raises(MuprewriteError, match="meta device"):
        muprewrite.apply(ConstantInit(128), torch.randn(2, 8), base=base)
    model = muprewrite.apply(ConstantInit(128), torch.randn(2, 8), base=base, init=False)
    assert muprewrite.plan_of(model) is not None


def _gpt(width: int, heads: int = 2) -> nn.Module:
    from examples.gpt import GPT

    torch.manual_seed(0)
    return GPT(n_embd=width, n_head=heads)


def test_attention_and_readout_scaling_against_a_manual_reference(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """d_head 32 -> 64 (heads fixed): logits x sqrt(32)/64 relative to 1/sqrt(d); the tied
    readout x 1/2. The reference applies both by hand, without muprewrite's machinery."""
    import torch.nn.functional as F

    model, base = _gpt(128), _gpt(64)
    reference = copy.deepcopy(model)
    (idx,) = _inputs(model)
    muprewrite.apply(model, (idx,), base=base, init=False)
    got = model(idx)
    sdpa = F.scaled_dot_product_attention

    def base_scaled(q, k, v, **kw):  # type: ignore[no-untyped-def]
        return sdpa(q, k, v, **kw, scale=32 ** 0.5 / q.shape[-1])

    monkeypatch.setattr(F, "scaled_dot_product_attention", base_scaled)
    reference.lm_head.register_forward_pre_hook(lambda mod, args: (args[0] / 2,))
    assert reference.lm_head.weight is reference.transformer.wte.weight  # tied
    expected = reference(idx)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    assert not torch.allclose(reference(idx), expected, rtol=1e-3)  # the scaling mattered


def test_returned_model_contract() -> None:
    model, base = _gpt(128), _gpt(64)
    keys = list(model.state_dict())
    (idx,) = _inputs(model)
    muprewrite.apply(model, (idx,), base=base)
    assert list(model.state_dict()) == keys and isinstance(model, type(base))
    # checkpoints load both ways
    plain = _gpt(128)
    plain.load_state_dict(model.state_dict())
    model.load_state_dict(plain.state_dict())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    model.load_state_dict(torch.load(buffer))
    # other batch sizes and sequence lengths; train/eval
    out = model(idx)
    assert model(idx[:1, :5]).shape == (1, 5, out.shape[-1])
    torch.testing.assert_close(model(idx[:1, :5]), out[:1, :5])  # causal: a prefix is a prefix
    model.eval()
    assert not model.training and not model.transformer.h[0].attn.training
    # deepcopy (EMA): same function, own parameters, own edits
    ema = copy.deepcopy(model)
    torch.testing.assert_close(ema(idx), out)
    with torch.no_grad():
        ema.lm_head.weight.mul_(2)  # tied: also the embedding
    assert torch.equal(model(idx), out)
    assert not torch.allclose(ema(idx), out)  # the copy's edits use the copy's parameters
    # applying twice is refused
    with pytest.raises(MuprewriteError, match="already rewritten"):
        muprewrite.apply(model, (idx,), base=base)
    with pytest.raises(MuprewriteError, match="already rewritten"):
        muprewrite.apply(ema, (idx,), base=base)


def test_other_resolutions() -> None:
    from examples.cnn import CNN

    model = muprewrite.apply(CNN(width=32), base=CNN(width=16))
    (x,) = _inputs(model)
    assert model(torch.randn(3, x.shape[1], 2 * x.shape[2], 2 * x.shape[3])).shape[0] == 3


def test_other_methods_see_the_rewrite() -> None:
    from examples.dit import DiT

    torch.manual_seed(0)
    model, base = DiT(hidden_size=128, num_heads=2), DiT(hidden_size=64, num_heads=2)
    for p in model.parameters():  # DiT zero-inits its output; make the readout matter
        nn.init.normal_(p, std=0.02) if p.requires_grad else None
    x, t, y = _inputs(model)
    muprewrite.apply(model, (x, t, y), base=base, init=False)
    x, t, y = torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y])  # another batch size
    out = model(x, t, y)
    guided = model.forward_with_cfg(x, t, y, cfg_scale=1.0)
    c = model.in_channels
    torch.testing.assert_close(guided[:, :c], torch.cat([out[:2, :c], out[:2, :c]]))


def test_param_groups_errors() -> None:
    model = ConstantInit(128)
    with pytest.raises(MuprewriteError, match="not rewritten"):
        muprewrite.param_groups(model, lr=1e-3)
    muprewrite.apply(model, torch.randn(2, 8), base=ConstantInit(64))
    with pytest.raises(MuprewriteError, match="rewritten with rule 'mup'"):
        muprewrite.param_groups(model, rule="mup-sgd", lr=1e-3)


def test_no_new_graph_breaks() -> None:
    import torch._dynamo as dynamo

    for build in (lambda w: _gpt(w), lambda w: Transformer(w)):
        model = build(128)
        inputs = _inputs(model)
        before = dynamo.explain(model)(*inputs)
        muprewrite.apply(model, inputs, base=build(64))
        dynamo.reset()
        after = dynamo.explain(model)(*inputs)
        assert (after.graph_count, after.graph_break_count) == (before.graph_count,
                                                                before.graph_break_count)


def test_branch_multipliers_add_no_graph_break_and_keep_keys() -> None:
    """CompleteP's residual branch multipliers are forward hooks: no new graph break, the
    same state_dict keys."""
    import torch._dynamo as dynamo

    from examples.dit import DiT

    model = DiT(hidden_size=64, num_heads=2, depth=4)
    inputs = _inputs(model)
    keys = list(model.state_dict())
    before = dynamo.explain(model)(*inputs)
    muprewrite.apply(model, inputs, base=DiT(hidden_size=32, num_heads=2, depth=2),
                     rule="completep")
    assert len(muprewrite.plan_of(model).branches) == 8 and list(model.state_dict()) == keys
    dynamo.reset()
    after = dynamo.explain(model)(*inputs)
    assert (after.graph_count, after.graph_break_count) == (before.graph_count,
                                                            before.graph_break_count)


@pytest.mark.slow
def test_compile_true_matches_eager() -> None:
    torch.manual_seed(0)
    model = muprewrite.apply(Transformer(WIDE), base=Transformer(BASE))
    torch.manual_seed(0)
    compiled = muprewrite.apply(Transformer(WIDE), base=Transformer(BASE), compile=True)
    (x,) = _inputs(model)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
    assert muprewrite.plan_of(compiled) is not None
    assert len(muprewrite.param_groups(compiled, lr=1e-3)) == len(
        muprewrite.param_groups(model, lr=1e-3))


def test_trap_models() -> None:
    """The analyzer's trap models: unused/frozen parameters and buffers, a width-tied sinusoid,
    an FF width that looks fixed, a backbone with no readout. apply leaves unused and frozen
    parameters alone and the rewritten models train."""
    from test_traps import RoundedFF, WidthTiedSinusoid, _inputs

    torch.manual_seed(0)
    model, base = WidthTiedSinusoid(128, 4), WidthTiedSinusoid(64, 2)
    unused, frozen = model.unused.weight.clone(), model.frozen.clone()
    inputs = _inputs(model)
    with pytest.warns(UserWarning, match=r"used by no captured op .* unused\.weight, unused\.bias"):
        muprewrite.apply(model, inputs, base=base)
    assert torch.equal(model.unused.weight, unused) and torch.equal(model.frozen, frozen)
    models = [(model, inputs)]
    rounded = muprewrite.apply(RoundedFF(256), torch.randn(2, 4), base=RoundedFF(128))
    models.append((rounded, (torch.randn(2, 4),)))
    transformers = pytest.importorskip("transformers")

    def vit(scale: int) -> nn.Module:
        config = transformers.ViTConfig(hidden_size=32 * scale, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64 * scale,
                                        image_size=16, patch_size=4, num_channels=3)
        return transformers.ViTModel(config, add_pooling_layer=False)

    images = torch.randn(2, 3, 16, 16)
    backbone = muprewrite.apply(vit(2), images, base=vit(1))
    plan = muprewrite.plan_of(backbone)
    assert plan is not None and not any(h.uses for h in plan.hosts)  # no readout to scale
    models.append((backbone, (images,)))
    for m, batch in models:
        opt = torch.optim.AdamW(muprewrite.param_groups(m, lr=1e-3))
        out = m(*batch)
        out = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", out)
        out.square().mean().backward()
        opt.step()
