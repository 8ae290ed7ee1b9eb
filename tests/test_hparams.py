"""Base hyperparameters: ``apply(..., hparams=...)`` equals the same multipliers written by
hand, at base width and at 4x width (forward and 5 AdamW steps, float64, 1e-10); all 1 is
today's behaviour exactly; they are width-invariant; cards round-trip."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import muprewrite
from muprewrite import HParams, load_card
from muprewrite.errors import MuprewriteError, UsageError
from muprewrite.rules.hparams import Card, as_hparams

VOCAB, SEQ, HEADS, BASE = 11, 6, 2, 16
TUNED = HParams(output_multiplier=2.5, input_multiplier=0.6, attention_multiplier=1.7,
                hidden_init=1.4, lr_input=0.8, lr_hidden=1.9, lr_output=0.45, lr_vector=1.3)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)
        self.logit_scale: float | None = None  # by hand: the muP logit scale, else 1/sqrt(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in (q, k, v))
        scale = self.logit_scale if self.logit_scale is not None else 1 / math.sqrt(c // HEADS)
        att = (q @ k.transpose(-2, -1)) * scale
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """A char-GPT-like model; ``tied``: the readout is the token embedding."""

    def __init__(self, width: int, tied: bool = True) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, width)
        self.wpe = nn.Embedding(SEQ, width)
        self.blocks = nn.ModuleList([Block(width) for _ in range(2)])
        self.ln_f = nn.LayerNorm(width)
        self.head = None if tied else nn.Linear(width, VOCAB, bias=False)
        self.in_mult = self.out_mult = 1.0  # set by hand only

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        h = self.wte(idx) * self.in_mult + self.wpe(pos) * self.in_mult
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        if self.head is None:
            return F.linear(h * self.out_mult, self.wte.weight)
        return self.head(h * self.out_mult)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randint(0, VOCAB, (3, SEQ)),)


def _by_hand(model: nn.Module, width: int, hp: HParams, tied: bool, lr: float, wd: float
             ) -> tuple[TinyGPT, torch.optim.Optimizer]:
    """The muP model written by hand with the multipliers (mup's Table 8 form, d_head growing
    at a fixed head count), its values copied from ``model``, and its AdamW groups."""
    m = width / BASE
    d, d0 = width // HEADS, BASE // HEADS
    hand = TinyGPT(width, tied)
    hand.load_state_dict(model.state_dict())
    hand.in_mult = hp.input_multiplier
    hand.out_mult = hp.output_multiplier / m
    for block in hand.blocks:
        block.logit_scale = hp.attention_multiplier * math.sqrt(d0) / d
    hidden, inputs, vectors = [], [hand.wte.weight, hand.wpe.weight], []
    for name, p in hand.blocks.named_parameters():
        (hidden if name.endswith("weight") and p.dim() == 2 else vectors).append(p)
    vectors += list(hand.ln_f.parameters())
    groups = [{"params": hidden, "lr": lr * hp.lr_hidden / m, "weight_decay": wd * m},
              {"params": inputs, "lr": lr * hp.lr_input, "weight_decay": wd},
              {"params": vectors, "lr": lr * hp.lr_vector, "weight_decay": wd}]
    if not tied:
        groups.append({"params": [hand.head.weight], "lr": lr * hp.lr_output,
                       "weight_decay": wd})
    return hand, torch.optim.AdamW(groups, lr=lr)


def _rms(p: torch.Tensor) -> float:
    return float(p.detach().pow(2).mean().sqrt())


def _steps(model: nn.Module, opt: torch.optim.Optimizer, data: list) -> list[torch.Tensor]:
    out = []
    for idx, target in data:
        logits = model(idx)
        out.append(logits.detach().clone())
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out.append(model(data[0][0]).detach().clone())
    return out


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("width", [BASE, 4 * BASE], ids=["base-width", "4x"])
def test_apply_equals_multipliers_by_hand(width: int, tied: bool) -> None:
    torch.manual_seed(0)
    model, base = TinyGPT(width, tied), TinyGPT(BASE, tied)
    before = copy.deepcopy(model)
    model = muprewrite.apply(model, model.example_inputs(), base=base, hparams=TUNED)
    # the hidden init: hidden_init x the rule's m^-1/2 x the base's RMS (at base width the
    # model's own draw, scaled); zero-init stays zero
    ref = before if width == BASE else base
    for name in ("blocks.0.fc.weight", "blocks.1.qkv.weight"):
        scale = TUNED.hidden_init * (width / BASE) ** -0.5
        assert _rms(model.get_parameter(name)) == pytest.approx(
            scale * _rms(ref.get_parameter(name)), rel=1e-10)
    opt = muprewrite.optimizer(model, lr=3e-3, weight_decay=0.1)
    hand, hand_opt = _by_hand(model, width, TUNED, tied, lr=3e-3, wd=0.1)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randint(0, VOCAB, (3, SEQ), generator=gen),
             torch.randint(0, VOCAB, (3, SEQ), generator=gen)) for _ in range(5)]
    ours, theirs = _steps(model, opt, data), _steps(hand, hand_opt, data)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), (a - b).abs().max()


def test_a_changed_multiplier_changes_the_model() -> None:
    """The by-hand comparison can fail: one multiplier off by 10 % is seen."""
    torch.manual_seed(0)
    model = muprewrite.apply(TinyGPT(4 * BASE), TinyGPT(4 * BASE).example_inputs(),
                             base=TinyGPT(BASE), hparams=TUNED)
    for field in ("output_multiplier", "input_multiplier", "attention_multiplier"):
        wrong = HParams(**{**TUNED.__dict__, field: getattr(TUNED, field) * 1.1})
        hand, _ = _by_hand(model, 4 * BASE, wrong, True, lr=1e-3, wd=0.0)
        idx = model.example_inputs()[0]
        assert not torch.allclose(model(idx), hand(idx), rtol=1e-6), field


def test_default_is_today_exactly() -> None:
    """HParams() (and a card of ones) changes nothing against apply without hparams."""
    torch.manual_seed(0)
    a, b = TinyGPT(4 * BASE), TinyGPT(4 * BASE)
    b.load_state_dict(a.state_dict())
    idx = a.example_inputs()[0]
    torch.manual_seed(3)
    base = TinyGPT(BASE)
    a = muprewrite.apply(a, (idx,), base=base)
    b = muprewrite.apply(b, (idx,), base=base, hparams=HParams())
    assert torch.equal(a(idx), b(idx))
    ga = [(g["param_names"], g["lr"], g["weight_decay"]) for g in muprewrite.param_groups(a, lr=1e-3)]
    gb = [(g["param_names"], g["lr"], g["weight_decay"]) for g in muprewrite.param_groups(b, lr=1e-3)]
    assert ga == gb
    assert muprewrite.plan_of(a).hosts == muprewrite.plan_of(b).hosts


def test_width_invariant() -> None:
    """The same card at two widths: each factor is the rule's factor times the constant."""
    torch.manual_seed(0)
    plans = {}
    for width in (2 * BASE, 4 * BASE):
        for hp in (HParams(), TUNED):
            model = TinyGPT(width)
            plans[width, hp] = muprewrite.plan_of(muprewrite.apply(
                model, model.example_inputs(), base=TinyGPT(BASE), hparams=hp))
    for width in (2 * BASE, 4 * BASE):
        plain, tuned = plans[width, HParams()], plans[width, TUNED]
        assert tuned["blocks.0.fc.weight"].lr == pytest.approx(
            plain["blocks.0.fc.weight"].lr * TUNED.lr_hidden)
        assert tuned["wte.weight"].multiplier == pytest.approx(
            plain["wte.weight"].multiplier * TUNED.output_multiplier)
        assert tuned["wte.weight"].gather == pytest.approx(TUNED.input_multiplier)
        assert tuned["ln_f.weight"].lr == pytest.approx(TUNED.lr_vector)


def test_card_round_trip(tmp_path) -> None:
    card = Card(TUNED, lr=0.003, weight_decay=0.1, rule="mup", base='TinyGPT(width=16) # "x"\n',
                extra={"proxy": {"steps": 100, "trials": 64}, "ledger": {"cost": 0.031}})
    path = tmp_path / "card.toml"
    path.write_text(card.to_toml())
    back = load_card(path)
    assert back.hparams == TUNED and back.lr == 0.003 and back.base == card.base
    assert back.extra == {"proxy": {"steps": 100, "trials": 64}, "ledger": {"cost": 0.031}}
    assert as_hparams(str(path), "mup") == TUNED
    with pytest.raises(MuprewriteError, match="tuned under rule 'mup'"):
        as_hparams(path, "mup-sgd")


@pytest.mark.parametrize("bad", [{"output_multiplier": 0.0}, {"lr_hidden": float("nan")},
                                 {"nope": 1.0}, {"hidden_init": "2"}])
def test_bad_values_refused(bad: dict) -> None:
    with pytest.raises(UsageError):
        as_hparams(bad)


def test_param_groups_refuses_other_hparams() -> None:
    model = TinyGPT(2 * BASE)
    model = muprewrite.apply(model, model.example_inputs(), base=TinyGPT(BASE), hparams=TUNED)
    muprewrite.param_groups(model, lr=1e-3, hparams=TUNED)  # the same: fine
    with pytest.raises(MuprewriteError, match="rewritten with base hyperparameters"):
        muprewrite.param_groups(model, lr=1e-3, hparams=HParams(lr_hidden=2.0))


def test_branch_multiplier_needs_a_depth_rule() -> None:
    model = TinyGPT(2 * BASE)
    with pytest.raises(MuprewriteError, match="depth rules"):
        muprewrite.apply(model, model.example_inputs(), base=TinyGPT(BASE),
                         hparams=HParams(branch_multiplier=0.5))


@pytest.mark.parametrize("depth", [2, 8], ids=["base-depth", "4x-depth"])
def test_branch_multiplier_equals_by_hand(depth: int) -> None:
    """Under completep (alpha 1) every residual branch is x branch_multiplier x m_L^-1, at the
    base's depth too; the by-hand reference trains to the same losses (float64, 1e-10)."""
    from test_depth_rules import (
        BASE_DEPTH,
        BASE_WIDTH,
        EPS,
        LR,
        WD,
        Net,
        _by_hand_groups,
        _data,
        _losses,
    )

    torch.manual_seed(0)
    base = Net(BASE_WIDTH, BASE_DEPTH)
    torch.manual_seed(1)
    model = Net(2 * BASE_WIDTH, depth)
    hp = HParams(branch_multiplier=0.7)
    muprewrite.apply(model, _data()[0], base=base, rule="completep", hparams=hp)
    reference = Net(2 * BASE_WIDTH, depth)
    reference.load_state_dict(model.state_dict())
    reference.readout = 1 / 2
    m_l = depth / BASE_DEPTH
    for block in reference.blocks:
        block.branch = 0.7 * m_l ** -1.0
    ours = _losses(model, muprewrite.param_groups(model, lr=LR, weight_decay=WD, eps=EPS))
    theirs = _losses(reference, _by_hand_groups(reference, 2, m_l, 1.0))
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=1e-10, atol=0)


def test_cli_shows_hparams_and_their_reach(tmp_path) -> None:
    from click.testing import CliRunner

    from muprewrite.cli.main import cli

    card = tmp_path / "card.toml"
    card.write_text(Card(HParams(output_multiplier=2.5, lr_vector=3.0), lr=1e-3,
                         rule="mup").to_toml())
    shown = CliRunner().invoke(cli, ["rules", "show", "mup", "--hparams", str(card)])
    assert shown.exit_code == 0, shown.output
    assert re.search(r"output_multiplier\s+2\.5\s", shown.output)
    gpt = ["analyze", "examples/gpt.py", "--model",
           "GPT(n_embd=64, n_head=2, n_layer=1, vocab_size=17, block_size=8)", "--base",
           "GPT(n_embd=32, n_head=2, n_layer=1, vocab_size=17, block_size=8)"]
    out = CliRunner().invoke(cli, [*gpt, "--hparams", "output_multiplier=2,hidden_init=0.5"])
    assert out.exit_code == 0, out.output
    assert "output_multiplier: 1 parameter(s): transformer.wte.weight" in out.output
    assert re.search(r"hidden_init: 4 parameter\(s\)", out.output)
    bad = CliRunner().invoke(cli, [*gpt, "--hparams", "output_mult=2"])
    assert bad.exit_code == 1 and "is not name=value" in bad.output
