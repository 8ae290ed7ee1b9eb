"""apply() on the analyzer's library test set (slow): at base width nothing changes; at twice
the width (d_head grows) the forward equals a reference that applies muP by hand — every
SDPA logit x sqrt(d_base)/d_head relative to 1/sqrt(d_head), every ground-truth output
layer's input x 1/2 — and one AdamW step on param_groups runs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from ground_truth import ground_truth_roles
from test_roles_more_models import _aura, _aura_inputs, _flux, _flux_inputs
from torch import nn
from zoo_library import library_zoo_fixed_heads

import muprewrite
from muprewrite.capture.input_sets import normalize_inputs

Builder = Callable[[int], nn.Module]
CASES: list[tuple[str, Builder, Callable[[nn.Module], Any]]] = [
    (z.name, z.build, z.example_inputs) for z in library_zoo_fixed_heads()]
CASES.append(("diffusers.FluxTransformer2DModel", lambda s: _flux(s, True), _flux_inputs))
CASES.append(("diffusers.AuraFlowTransformer2DModel", lambda s: _aura(128 * s), _aura_inputs))


def _out(model: nn.Module, inputs: Any) -> torch.Tensor:
    args, kwargs = normalize_inputs(inputs)
    out = model(*args, **kwargs)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return getattr(out, "logits", out)  # type: ignore[no-any-return]


def _built(build: Builder, scale: int) -> nn.Module:
    torch.manual_seed(scale)
    model = build(scale).eval()
    for p in model.parameters():  # adaLN-zero and zero-init readouts would hide the readout
        if p.requires_grad and not p.any():
            nn.init.normal_(p, std=0.02)
    return model


@pytest.mark.slow
@pytest.mark.parametrize(("name", "build", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_apply_library_model(name: str, build: Builder, inputs: Callable, monkeypatch) -> None:  # type: ignore[no-untyped-def, type-arg]
    base = _built(build, 1)
    torch.manual_seed(0)
    batch = inputs(base)
    same = muprewrite.apply(copy.deepcopy(base), batch, base=base)
    assert torch.equal(_out(same, batch), _out(base, batch))  # identity at base width

    wide = _built(build, 2)
    reference = copy.deepcopy(wide)
    model = muprewrite.apply(wide, batch, base=base, init=False)
    got = _out(model, batch)
    plan = muprewrite.plan_of(model)
    assert plan is not None and len(plan.report.attention) > 0
    grows = [s for s in plan.report.attention if s.d_head_grows]
    assert sum(len(h.attention) for h in plan.hosts) == len(grows)
    assert grows or "AuraFlow" in name  # AuraFlow widens by heads; the others by d_head

    sdpa = F.scaled_dot_product_attention

    def by_hand(*args, **kwargs):  # type: ignore[no-untyped-def]
        q = args[0] if args else kwargs["query"]
        scale = kwargs.pop("scale", None) or q.shape[-1] ** -0.5
        return sdpa(*args, **kwargs, scale=scale * (q.shape[-1] / 16) ** -0.5)

    monkeypatch.setattr(F, "scaled_dot_product_attention", by_hand)
    modules = dict(reference.named_modules())
    readouts = [modules[p[: -len(".weight")]] for p, role in ground_truth_roles(reference, base).items()
                if role == "output" and p.endswith(".weight")]
    if getattr(reference.config, "tie_word_embeddings", False):  # transformers: tied lm_head
        readouts.append(reference.get_output_embeddings())
    for module in readouts:
        module.register_forward_pre_hook(lambda mod, args: (args[0] / 2, *args[1:]))
    torch.testing.assert_close(got, _out(reference, batch), rtol=1e-4, atol=1e-5)

    opt = torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-3, weight_decay=0.1))
    model.train()
    _out(model, batch).float().square().mean().backward()
    opt.step()
    assert torch.isfinite(_out(model, batch)).all()
