"""Several example input sets: every path of the forward captured, in one graph.

The model, written here in the style of a text-conditioned DiT / PixArt-α with a generation
shortcut, takes three paths: plain (self-attention, ``head``), with a ``context`` (a
cross-attention block whose parameters no other path uses) and ``generate=True`` (a second
readout, ``gen_head``, on the last position). One input set sees one path: the others'
parameters stay without factors and ``apply`` warns. Given every set, ``apply`` and the emitted
file equal a by-hand muP reference (attention scale sqrt(d_base)/d_head, readout input x 1/m) on
every path, in train and eval mode, in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import muprewrite
from muprewrite import InputSets, InputSpecError, MuprewriteError
from muprewrite.cli.main import cli
from muprewrite.emit import emit
from muprewrite.spec import load_module
from muprewrite.verify.source_check import check_emitted

SOURCE = '''import torch
import torch.nn.functional as F
from torch import nn

IN, CTX, SEQ, OUT = 6, 3, 5, 4


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_dim=None):
        super().__init__()
        self.heads, self.mup_scale = heads, None  # mup_scale: the by-hand reference's
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context=None):
        B, N, C = x.shape
        src = x if context is None else context
        q = self.q(x).view(B, N, self.heads, C // self.heads).transpose(1, 2)
        k, v = (t.view(B, src.shape[1], self.heads, C // self.heads).transpose(1, 2)
                for t in self.kv(src).chunk(2, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, scale=self.mup_scale)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Net(nn.Module):
    def __init__(self, width=16, heads=2):
        super().__init__()
        self.embed = nn.Linear(IN, width)
        self.attn = Attention(width, heads)
        self.norm = nn.LayerNorm(width)
        self.cross = Attention(width, heads, kv_dim=CTX)
        self.fc = nn.Linear(width, width)
        self.head = nn.Linear(width, OUT)
        self.gen_head = nn.Linear(width, OUT)

    def forward(self, x, context=None, generate=False):
        h = self.embed(x)
        h = h + self.attn(self.norm(h))
        if context is not None:
            h = h + self.cross(h, context)
        h = h + F.gelu(self.fc(h))
        if generate:
            return self.gen_head(h[:, -1])
        return self.head(h)

    def example_inputs(self):
        x = torch.randn(2, SEQ, IN, device=self.embed.weight.device)
        return x


class EveryPath(Net):
    def example_inputs(self):
        from muprewrite import InputSets

        x = super().example_inputs()
        c = torch.randn(2, 3, CTX, device=x.device)
        return InputSets(x, ((x,), {"context": c}), ((x,), {"generate": True}))
'''

BASE_WIDTH, BASE_HEADS = 16, 2
X_SPEC, CTX_SPEC = "float(2, 5, 6)", "context=float(2, 3, 3)"
CLI_SETS = (X_SPEC, f"{X_SPEC}, {CTX_SPEC}", f"{X_SPEC}, generate=True")
UNCAPTURED = ("cross.q.weight", "gen_head.weight")


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    path = tmp_path_factory.mktemp("two_paths") / "net.py"
    path.write_text(SOURCE)
    return load_module(path)


@pytest.fixture
def f64() -> Any:
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def _inputs(user: ModuleType) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(5)
    return torch.randn(3, user.SEQ, user.IN), torch.randn(3, 2, user.CTX)


def _every_set(x: torch.Tensor, c: torch.Tensor) -> InputSets:
    return InputSets(x, ((x,), {"context": c}), ((x,), {"generate": True}))


def _paths(x: torch.Tensor, c: torch.Tensor) -> dict[str, Callable[[torch.nn.Module], Any]]:
    return {"plain": lambda net: net(x), "context": lambda net: net(x, context=c),
            "generate": lambda net: net(x, generate=True)}


def _by_hand(net: torch.nn.Module, m: int, grow: str) -> torch.nn.Module:
    """Attention scale sqrt(d_base)/d_head where d_head grows; every readout's input x 1/m."""
    d_head = net.embed.out_features // net.attn.heads
    scale = math.sqrt(BASE_WIDTH // BASE_HEADS) / d_head if grow == "d_head" else d_head ** -0.5
    for attn in (net.attn, net.cross):
        attn.mup_scale = scale
    for head in (net.head, net.gen_head):
        head.register_forward_pre_hook(lambda mod, args: (args[0] / m,))
    return net


def _sizes(m: int, grow: str) -> tuple[int, int]:
    return BASE_WIDTH * m, BASE_HEADS * (m if grow == "heads" else 1)


@pytest.mark.usefixtures("f64")
@pytest.mark.parametrize("m, grow", [(2, "d_head"), (4, "d_head"), (2, "heads")])
def test_every_set_makes_every_path_mup(user: ModuleType, m: int, grow: str) -> None:
    torch.manual_seed(0)
    base = user.Net(BASE_WIDTH, BASE_HEADS)
    model = user.Net(*_sizes(m, grow))
    reference = user.Net(*_sizes(m, grow))
    reference.load_state_dict(model.state_dict())
    _by_hand(reference, m, grow)
    x, c = _inputs(user)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no parameter is left without a factor
        muprewrite.apply(model, _every_set(x, c), base=base, init=False)
    plan = muprewrite.plan_of(model)
    assert plan["gen_head.weight"].multiplier == pytest.approx(1 / m)
    assert plan["cross.q.weight"].lr == pytest.approx(1 / m)  # a hidden matrix under Adam
    for mode in (True, False):
        model.train(mode)
        reference.train(mode)
        for path, run in _paths(x, c).items():
            torch.testing.assert_close(run(model), run(reference), rtol=0, atol=1e-10,
                                       msg=lambda text, p=path: f"{p}: {text}")


def test_one_set_leaves_the_other_paths_named(user: ModuleType) -> None:
    """The gap a single set leaves is said, naming what got no factor."""
    model, base = user.Net(64, 2), user.Net(16, 2)
    with pytest.warns(UserWarning, match="used by no captured op") as caught:
        muprewrite.apply(model, model.example_inputs(), base=base)
    text = str(caught[0].message)
    assert all(name in text for name in UNCAPTURED)


def test_example_inputs_may_give_every_set(user: ModuleType) -> None:
    with torch.device("meta"):
        model, base = user.EveryPath(64, 2), user.EveryPath(16, 2)
    report = muprewrite.analyze(model, base=base)
    assert report["gen_head.weight"].role == "output"
    assert report["cross.kv.weight"].role == "input"  # the context is not width-sized
    assert report["cross.q.weight"].role == "hidden"
    assert {s.module for s in report.attention} == {"attn", "cross"}  # attn on all three paths


def test_the_capture_restores_forward(user: ModuleType) -> None:
    model = user.EveryPath(16, 2)
    own = model.forward
    model.__dict__["forward"] = own  # a user's instance-level forward stays theirs
    muprewrite.analyze(model)
    assert model.__dict__["forward"] is own
    del model.__dict__["forward"]
    muprewrite.analyze(model)
    assert "forward" not in model.__dict__


def test_a_bad_set_is_named(user: ModuleType) -> None:
    model = user.Net(16, 2)
    x = torch.randn(2, user.SEQ, user.IN)
    with pytest.raises(InputSpecError, match=r"\(set 1\) do not fit Net.forward"):
        muprewrite.analyze(model, InputSets(x, ((x,), {"targets": x})))
    with pytest.raises(MuprewriteError, match=r"^input set 1: could not capture") as caught:
        muprewrite.analyze(model, InputSets(x, ((x,), {"context": torch.randn(2, 3, 7)})))
    assert "net.py" in caught.value.where  # the user's line that failed
    with pytest.raises(InputSpecError, match="holds no input set"):
        InputSets()
    with pytest.raises(InputSpecError, match="is itself an InputSets"):
        InputSets(x, InputSets(x))


def test_cli_repeated_inputs_capture_every_path(tmp_path: Path) -> None:
    path = tmp_path / "net.py"
    path.write_text(SOURCE)
    runner = CliRunner()
    one = runner.invoke(cli, ["analyze", str(path), "--model", "Net(64, 2)", "--base", "Net(16, 2)",
                              "--inputs", X_SPEC, "--all"])
    every = runner.invoke(cli, ["analyze", str(path), "--model", "Net(64, 2)", "--base",
                                "Net(16, 2)", "--all", *(a for s in CLI_SETS for a in ("--inputs", s))])
    assert one.exit_code == 0 and every.exit_code == 0, (one.output, every.output)
    row = next(line for line in every.output.splitlines() if line.split()[:1] == ["gen_head.weight"])
    assert "output" in row
    row = next(line for line in one.output.splitlines() if line.split()[:1] == ["gen_head.weight"])
    assert "output" not in row


@pytest.mark.parametrize("model_spec", ["Net(64, 2)", "Net(64, 8)"])
def test_emission_from_every_set_checks_out(tmp_path: Path, model_spec: str) -> None:
    """Every set given: no WARNING, and the emitted file equals apply on every path, at 2x and
    4x, train and eval, with 5 AdamW steps (``muprewrite check``)."""
    path = tmp_path / "net.py"
    path.write_text(SOURCE)
    emission = emit(path, model_spec, "Net(16, 2)", inputs_expr=CLI_SETS)
    # at Net(64, 8) the head size is the base's (8) and no attribute of this Net holds it:
    # the attention takes the runtime head size factor anyway (1 here), so no warning either
    assert not [c for c in emission.changes if c.startswith("WARNING")], emission.changes
    out = tmp_path / "net_mup.py"
    out.write_bytes(emission.data)
    wider = model_spec.replace("64", "128").replace("8)", "16)")
    result = check_emitted(out, [model_spec, wider], inputs=CLI_SETS, original=path)
    assert result.passed, result.divergence


def test_check_fails_an_emission_from_one_set(tmp_path: Path) -> None:
    """Emitted from the plain set only, the cross-attention keeps its init and gen_head its
    multiplier of 1; checked on every set, the file fails at the first of them (the defect the
    WARNING line names)."""
    path = tmp_path / "net.py"
    path.write_text(SOURCE)
    emission = emit(path, "Net(64, 2)", "Net(16, 2)", inputs_expr=CLI_SETS[:1])
    assert any(c.startswith("WARNING") and "gen_head.weight" in c for c in emission.changes)
    out = tmp_path / "net_mup.py"
    out.write_bytes(emission.data)
    result = check_emitted(out, ["Net(64, 2)"], inputs=CLI_SETS, original=path)
    assert result.divergence is not None, result.compared
    assert result.divergence.where.startswith(("cross.", "gen_head.")), result.divergence
