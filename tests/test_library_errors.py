"""Hostile input through the library: a MuprewriteError with a fix (naming the user's line
where there is one), never a bare torch/Python traceback; frozen parameters keep their
function; data-dependent routing and spectral norm are analysed."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import guard_or_false

import muprewrite
from muprewrite import CaptureError, InputSpecError, MuprewriteError
from muprewrite.errors import UsageError
from muprewrite.rewrite import Plan


def _line_of(fn: Callable[..., Any], marker: str) -> str:
    """``file:line`` of the source line of ``fn`` carrying ``marker``."""
    lines, first = inspect.getsourcelines(fn)
    offset = next(i for i, text in enumerate(lines) if marker in text)
    return f"{inspect.getsourcefile(fn)}:{first + offset}"


def _mlp(width: int, device: str = "meta") -> nn.Module:
    with torch.device(device):
        return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, 3))


def _plan(model: nn.Module) -> Plan:
    plan = muprewrite.plan_of(model)
    assert plan is not None
    return plan


def _applied(width: int = 32) -> nn.Module:
    return muprewrite.apply(_mlp(width, "cpu"), torch.randn(2, 32), base=_mlp(16, "cpu"))


class Readout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)  # SHAPE


class MoE(nn.Module):
    """Tokens routed by topk of router logits; ``route`` picks how experts gather them."""

    def __init__(self, width: int = 32, experts: int = 4, route: str = "index_add") -> None:
        super().__init__()
        self.inp, self.router = nn.Linear(8, width), nn.Linear(width, experts)
        self.experts = nn.ModuleList(nn.Linear(width, width) for _ in range(experts))
        self.out, self.route = nn.Linear(width, 3), route

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)  # [tokens, width*]
        weights, idx = torch.topk(self.router(h).softmax(-1), 2, dim=-1)  # [tokens, 2]
        y = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            if self.route == "mask":
                mask = (idx == e).any(-1)
                y[mask] = y[mask] + expert(h[mask])  # [selected (data-dependent), width*]
                continue
            tok, slot = torch.where(idx == e)
            if self.route == "skip-empty-value" and not (idx == e).any():  # VALUE
                continue
            if self.route == "skip-empty-size" and tok.numel() == 0:  # SIZE
                continue
            if self.route == "guarded" and guard_or_false(tok.numel() == 0):
                continue
            y.index_add_(0, tok, expert(h[tok]) * weights[tok, slot, None])
        return self.out(y)


@pytest.mark.parametrize("call, error", [
    (lambda: muprewrite.analyze(_mlp(16), "x"), InputSpecError),
    (lambda: muprewrite.analyze(_mlp(16), 3), InputSpecError),
    (lambda: muprewrite.analyze(_mlp(16), [[1.0] * 32, [2.0] * 32]), InputSpecError),
    (lambda: muprewrite.analyze(_mlp(16), ([1.0] * 32,)), CaptureError),
    (lambda: muprewrite.analyze(_mlp(16), (None,)), CaptureError),
    (lambda: muprewrite.analyze(_mlp(16)), MuprewriteError),
    (lambda: muprewrite.analyze("model", torch.randn(2, 32)), UsageError),
    (lambda: muprewrite.analyze(_mlp(16), torch.randn(2, 32), base="base"), UsageError),
    (lambda: muprewrite.analyze(_mlp(16), torch.randn(2, 32), progress=True), UsageError),
    (lambda: muprewrite.apply(_mlp(32), torch.randn(2, 32), base=nn.Linear(32, 3)), UsageError),
    (lambda: muprewrite.apply(_mlp(32), torch.randn(2, 32), base=None), UsageError),
    (lambda: muprewrite.param_groups(_applied(), lr="1e-3"), UsageError),
    (lambda: muprewrite.param_groups(_mlp(32, "cpu"), "mup", lr=1e-3), UsageError),
    (lambda: muprewrite.rescale_init("model"), UsageError),
], ids=["str", "int", "list-of-lists", "list-of-floats", "none", "no-inputs", "model-str",
        "base-str", "progress-bool", "base-other-structure", "base-none", "lr-str", "report-str",
        "rescale-str"])
def test_hostile_arguments_raise_our_errors(call: Callable[[], Any], error: type) -> None:
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, MuprewriteError) and info.value.fix


def test_wrong_input_shape_names_the_line_and_the_inputs() -> None:
    with torch.device("meta"):
        model = Readout()
    with pytest.raises(CaptureError) as info:
        muprewrite.analyze(model, torch.randn(2, 16))
    assert _line_of(Readout.forward, "# SHAPE") in info.value.where
    assert "example inputs' shapes" in info.value.fix and "control flow" not in info.value.fix


def test_inputs_that_do_not_fit_base_say_so() -> None:
    with torch.device("meta"):
        model, base = nn.Linear(32, 3), nn.Linear(16, 3)
    with pytest.raises(CaptureError, match="^base: ") as info:
        muprewrite.analyze(model, torch.randn(2, 32), base=base)
    assert "fit base too" in info.value.fix


def test_arguments_that_do_not_fit_forward_are_refused_before_export() -> None:
    with pytest.raises(InputSpecError, match="too many positional arguments") as info:
        muprewrite.analyze(_mlp(16), (torch.randn(2, 32), torch.randn(2, 32)))
    assert "positional" in info.value.fix


@pytest.mark.parametrize("route, marker, advice", [
    ("skip-empty-value", "# VALUE", "tensor ops"),
    ("skip-empty-size", "# SIZE", "guard_or_false"),
])
def test_data_dependent_branch_is_one_error_at_the_users_line(route: str, marker: str,
                                                              advice: str) -> None:
    with torch.device("meta"):
        model = MoE(route=route)
    with pytest.raises(CaptureError) as info:
        muprewrite.analyze(model, torch.randn(16, 8))
    assert _line_of(MoE.forward, marker) in info.value.where
    assert advice in info.value.fix and "capture a small real" not in info.value.fix
    assert len(str(info.value).splitlines()) <= 3


EXPECTED_MOE = {"inp.weight": "input", "router.weight": "output", "router.bias": "fixed",
                "experts.0.weight": "hidden", "experts.3.bias": "input", "out.weight": "output"}


@pytest.mark.parametrize("route", ["index_add", "mask", "guarded"])
def test_moe_routing_is_analysed_on_meta(route: str) -> None:
    with torch.device("meta"):
        wide, base = MoE(64, route=route), MoE(32, route=route)
    report = muprewrite.analyze(wide, torch.randn(16, 8), base=base)
    assert {n: report[n].role for n in EXPECTED_MOE} == EXPECTED_MOE
    single = muprewrite.analyze(wide, torch.randn(16, 8))
    assert any(d.code == "routing-width" for d in single.diagnostics)


def test_moe_apply_runs() -> None:
    torch.manual_seed(0)
    model = muprewrite.apply(MoE(64), torch.randn(16, 8), base=MoE(32))
    assert _plan(model)["router.weight"].multiplier == 0.5
    assert model(torch.randn(5, 8)).shape == (5, 3)


@pytest.mark.parametrize("norm", [nn.utils.spectral_norm,
                                  nn.utils.parametrizations.spectral_norm])
def test_spectral_norm(norm: Callable[[nn.Module], nn.Module]) -> None:
    def build(width: int) -> nn.Module:
        model = _mlp(width, "cpu")
        model[2], model[4] = norm(model[2]), norm(model[4])  # a hidden layer and the readout
        return model

    report = muprewrite.analyze(build(32), torch.randn(4, 32), base=build(16))
    hidden, readout = (next(n for n in report.params if n.startswith(f"{i}.") and "bias" not in n)
                       for i in (2, 4))
    assert (report[hidden].role, report[readout].role) == ("hidden", "output")
    assert report[readout].fan_in == (1,) and report[readout].fan_out == (0,)
    model = muprewrite.apply(build(32), torch.randn(4, 32), base=build(16))
    assert model(torch.randn(2, 32)).shape == (2, 3)


class LoRA(nn.Module):
    def __init__(self, base: nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base = base
        self.a = nn.Linear(base.in_features, rank, bias=False)
        self.b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.b(self.a(x))


class Tuned(nn.Module):
    """A frozen base (tied embedding/readout or a Linear readout) with a LoRA adapter."""

    def __init__(self, width: int, tied: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, width)
        self.hid = LoRA(nn.Linear(width, width))
        self.out = nn.Linear(width, 10, bias=False)
        if tied:
            self.out.weight = self.emb.weight
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith(("hid.a.", "hid.b.")))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hid(self.emb(ids))))


@pytest.mark.parametrize("tied", [False, True], ids=["linear-readout", "tied-readout"])
def test_frozen_readout_keeps_its_function(tied: bool) -> None:
    torch.manual_seed(0)
    model = Tuned(32, tied).double()
    before = copy.deepcopy(model)
    ids = torch.randint(0, 10, (2, 5))
    muprewrite.apply(model, ids, base=Tuned(16, tied).double())
    h = torch.randn(4, 32, dtype=torch.float64)
    assert torch.equal(model.out(h), before.out(h))
    assert torch.equal(model(ids), before(ids))  # the adapter's B starts at zero
    plan, readout = _plan(model), "emb.weight" if tied else "out.weight"
    assert plan[readout].multiplier == 1.0 and not plan.hosts[1:]  # only the adapter's edit
    assert any(d.code == "frozen" and d.where == readout for d in plan.diagnostics)
    names = [n for g in muprewrite.param_groups(model, lr=1e-3) for n in g["param_names"]]
    assert names == ["hid.a.weight", "hid.b.weight"]
    model.out.weight.requires_grad_(True)
    with pytest.raises(UsageError, match="frozen when the model was analysed"):
        muprewrite.param_groups(model, lr=1e-3)


class Attention(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp, self.qkv = nn.Linear(8, width), nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.inp(x)).chunk(3, -1)  # [batch, tokens, width*] each, one head
        return self.out(F.scaled_dot_product_attention(q, k, v))


def test_frozen_query_key_keep_the_attention_scale() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    trained = muprewrite.apply(Attention(32).double(), x, base=Attention(16).double())
    assert [h for h in _plan(trained).hosts if h.attention]  # d_head grows
    model = Attention(32).double()
    model.inp.requires_grad_(False)
    model.qkv.requires_grad_(False)
    before = copy.deepcopy(model)
    muprewrite.apply(model, x, base=Attention(16).double())
    plan = _plan(model)
    assert not [h for h in plan.hosts if h.attention]
    assert any(d.code == "frozen-attention" for d in plan.diagnostics)
    model.out.weight.data.copy_(before.out.weight)  # the trainable readout's multiplier aside
    scale = plan["out.weight"].multiplier
    assert torch.allclose(model(x) - model.out.bias, (before(x) - before.out.bias) * scale)


def test_report_of_another_width_is_refused_with_the_first_mismatch() -> None:
    report = muprewrite.analyze(_mlp(64), torch.randn(2, 32), base=_mlp(16))
    with pytest.raises(UsageError, match=r"'0.weight' has shape \(32, 32\) but \(64, 32\)"):
        muprewrite.param_groups(_mlp(32, "cpu"), report, lr=1e-3)


def test_plausible_odd_models_work() -> None:
    class NoParams(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    class ReturnsNothing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> None:
            self.lin(x)

    assert len(muprewrite.analyze(NoParams(), torch.randn(2, 3))) == 0
    model = muprewrite.apply(NoParams(), torch.randn(2, 3), base=NoParams())
    with pytest.raises(UsageError, match="no trainable parameter"):
        muprewrite.param_groups(model, lr=1e-3)
    report = muprewrite.analyze(ReturnsNothing(), torch.randn(2, 4))
    assert any(d.code == "no-output" for d in report.diagnostics)


def test_zero_size_parameters_bf16_and_compiled_models_apply() -> None:
    class Empty(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.inp, self.out = nn.Linear(4, width), nn.Linear(width, 2)
            self.none = nn.Parameter(torch.zeros(0, width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.inp(x)) + self.none.sum()

    model = muprewrite.apply(Empty(32), torch.randn(2, 4), base=Empty(16))
    assert _plan(model)["out.weight"].multiplier == 0.5
    half = muprewrite.apply(_mlp(32, "cpu").bfloat16(), torch.randn(2, 32).bfloat16(),
                            base=_mlp(16, "cpu").bfloat16())
    assert half(torch.randn(2, 32).bfloat16()).dtype == torch.bfloat16
    compiled = muprewrite.apply(torch.compile(_mlp(32, "cpu")), torch.randn(2, 32),
                                base=_mlp(16, "cpu"))
    assert _plan(compiled)["4.weight"].multiplier == 0.5


def test_custom_rule_file_through_apply_and_param_groups(tmp_path: Path) -> None:
    """A rule given by path is not reloaded by name later (it is not in rules/)."""
    from muprewrite.rules import RULES_DIR

    text = (RULES_DIR / "mup.toml").read_text().replace('id = "mup"', 'id = "my-mup"')
    custom = tmp_path / "my-mup.toml"
    custom.write_text(text)
    wide = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    base = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    model = muprewrite.apply(wide, (torch.randn(2, 8),), base=base, rule=str(custom))
    by_path = muprewrite.param_groups(model, lr=1e-3, rule=str(custom))
    by_plan = muprewrite.param_groups(model, lr=1e-3)
    assert [g["lr"] for g in by_path] == [g["lr"] for g in by_plan]
    assert sorted(g["lr"] for g in by_plan) == [1e-3 / 2, 1e-3]  # hidden lr / m_in
