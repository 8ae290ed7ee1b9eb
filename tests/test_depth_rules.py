"""Depth rules (CompleteP, depth-muP) against a pre-LN transformer written out by hand.

The reference applies the rule's table itself: every residual branch x m_L^-alpha, the
readout's input x 1/m, and the optimizer groups of the table (hidden matrices lr x
m^-1 m_L^(alpha-1), vectors inside branches lr x m_L^(alpha-1), eps x 1/m and x m_L^-alpha
inside branches, weight decay x m on hidden matrices only). ``apply`` with a base of width w and depth L on a model of width
2w and depth 4L must train to the same losses, in float64, for 20 AdamW steps; eps is set
large enough that a wrong eps factor shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import muprewrite
from muprewrite import UsageError
from muprewrite.rules import RuleError

VOCAB, SEQ, D_HEAD = 13, 6, 8
BASE_WIDTH, BASE_DEPTH = 16, 2
LR, WD, EPS = 1e-2, 0.1, 1e-3


class Attention(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = width // D_HEAD
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D_HEAD).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), Attention(width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.branch = 1.0  # the by-hand reference's residual multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.branch * self.attn(self.ln1(x))
        return x + self.branch * self.mlp(self.ln2(x))


class Net(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(0.02 * torch.randn(1, SEQ, width))
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, VOCAB)
        self.readout = 1.0  # the by-hand reference's output multiplier

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x) * self.readout)


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return (torch.randint(0, VOCAB, (4, SEQ), generator=g),
            torch.randint(0, VOCAB, (4, SEQ), generator=g))


def _by_hand_groups(net: Net, m: float, m_l: float, alpha: float) -> list[dict]:
    """The rule's table, written out per parameter of this architecture."""
    groups = []
    for name, p in net.named_parameters():
        if name.startswith("blocks."):
            if p.dim() == 2:  # hidden matrices inside the branches
                lr, eps, wd = LR / m * m_l ** (alpha - 1), EPS / m * m_l ** -alpha, WD * m
            else:  # biases and norm gains inside the branches
                lr, eps, wd = LR * m_l ** (alpha - 1), EPS / m * m_l ** -alpha, WD
            # weight decay: lambda * m_N for both alpha, no depth factor (CompleteP Table 1)
        elif name == "head.bias":
            lr, eps, wd = LR, EPS, WD
        else:  # embedding, position table, final norm, readout weight: width's 1/m only
            lr, eps, wd = LR, EPS / m, WD
        groups.append({"params": [p], "lr": lr, "eps": eps, "weight_decay": wd})
    return groups


def _losses(net: nn.Module, groups: list[dict], steps: int = 20) -> list[float]:
    idx, target = _data()
    opt = torch.optim.AdamW(groups)
    out = []
    for _ in range(steps):
        loss = F.cross_entropy(net(idx).flatten(0, 1), target.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(float(loss))
    return out


def _built(width: int, depth: int) -> tuple[Net, Net]:
    torch.manual_seed(0)
    base = Net(BASE_WIDTH, BASE_DEPTH)
    torch.manual_seed(1)
    return Net(width, depth), base


@pytest.mark.parametrize("rule, alpha", [("completep", 1.0), ("depth-mup", 0.5)])
def test_apply_equals_the_rule_written_by_hand(rule: str, alpha: float) -> None:
    m, m_l = 2, 4
    model, base = _built(BASE_WIDTH * m, BASE_DEPTH * m_l)
    muprewrite.apply(model, _data()[0], base=base, rule=rule)
    report = muprewrite.plan_of(model).report
    assert (report.depth, report.depth_base, report.depth_ratio) == (8, 2, 4.0)
    # init: hidden matrices at base RMS x m^-1/2 (the block they pair with in the base);
    # everything else at the base's RMS where it grows, as it was where it does not
    for name, p in model.named_parameters():
        partner = dict(base.named_parameters())[report.base_name(name)]
        if not partner.any():  # zero init (LayerNorm biases) stays zero
            assert not p.any(), name
            continue
        ratio = float(p.detach().square().mean().sqrt() / partner.detach().square().mean().sqrt())
        if name.startswith("blocks.") and p.dim() == 2:
            assert ratio == pytest.approx(m ** -0.5, rel=1e-12), name
        elif p.shape != partner.shape or name.startswith("blocks."):
            assert ratio == pytest.approx(1.0, rel=1e-12), name
    reference = Net(BASE_WIDTH * m, BASE_DEPTH * m_l)
    reference.load_state_dict(model.state_dict())
    reference.readout = 1 / m
    for block in reference.blocks:
        block.branch = m_l ** -alpha
    ours = _losses(model, muprewrite.param_groups(model, lr=LR, weight_decay=WD, eps=EPS))
    theirs = _losses(reference, _by_hand_groups(reference, m, m_l, alpha))
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=1e-10, atol=0)
    assert ours[-1] < ours[0]


@pytest.mark.parametrize("rule", ["completep", "depth-mup"])
def test_at_base_width_and_depth_nothing_changes(rule: str) -> None:
    model, base = _built(BASE_WIDTH, BASE_DEPTH)
    twin = Net(BASE_WIDTH, BASE_DEPTH)
    twin.load_state_dict(model.state_dict())
    muprewrite.apply(model, _data()[0], base=base, rule=rule)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 twin.state_dict().values()))
    plain = [{"params": list(twin.parameters()), "lr": LR, "weight_decay": WD, "eps": EPS}]
    assert _losses(model, muprewrite.param_groups(model, lr=LR, weight_decay=WD, eps=EPS)) == \
        _losses(twin, plain)


def test_a_width_only_rule_refuses_a_base_of_another_depth() -> None:
    model, base = _built(BASE_WIDTH * 2, BASE_DEPTH * 2)
    with pytest.raises(RuleError, match=r"base has 2 residual blocks and the model 4: rule "
                                        r"'mup' transfers across width only") as caught:
        muprewrite.apply(model, _data()[0], base=base)
    assert "completep" in caught.value.fix
    report = muprewrite.analyze(model, _data()[0], base=base)  # the analysis measures it
    assert report.depth_ratio == 2.0 and report["blocks.3.mlp.0.weight"].in_branch
    with pytest.raises(RuleError, match="transfers across width only"):
        muprewrite.param_groups(model, report, rule="mup", lr=LR)
    groups = muprewrite.param_groups(model, report, rule="completep", lr=LR, eps=EPS)
    assert {g["eps"] for g in groups} >= {EPS / 2 / 2}  # hidden: x 1/m x m_L^-1


def test_another_structure_is_still_refused() -> None:
    model, _ = _built(BASE_WIDTH * 2, BASE_DEPTH * 2)
    base = Net(BASE_WIDTH, BASE_DEPTH)
    base.head = nn.Linear(BASE_WIDTH, VOCAB, bias=False)
    with pytest.raises(UsageError, match="base is not Net at another width or depth"):
        muprewrite.apply(model, _data()[0], base=base, rule="completep")


def test_a_depth_dependent_init_is_reported_and_replaced() -> None:
    """GPT-2 style: the output projections' std shrinks with depth in the user's init."""
    model, base = _built(BASE_WIDTH, BASE_DEPTH * 4)
    for net, depth in ((model, BASE_DEPTH * 4), (base, BASE_DEPTH)):
        for block in net.blocks:
            nn.init.normal_(block.attn.proj.weight, std=0.02 / math.sqrt(2 * depth))
    report = muprewrite.analyze(model, _data()[0], base=base)
    assert any(d.code == "depth-init" and "attn.proj.weight" in d.message
               for d in report.diagnostics)
    muprewrite.apply(model, _data()[0], base=base, rule="completep")
    rms = float(model.blocks[5].attn.proj.weight.square().mean().sqrt())
    assert rms == pytest.approx(float(base.blocks[1].attn.proj.weight.square().mean().sqrt()),
                                rel=1e-12)


def test_a_base_of_the_same_width_keeps_the_roles() -> None:
    """A base of another depth at the model's width: no axis grows, yet the roles must be
    those a wider model gets, or the depth factors of hidden parameters (depth-muP's
    lr x m_L^-1/2 inside branches) silently fall away."""
    from mup_oracle import Transformer

    torch.manual_seed(0)
    model = muprewrite.apply(Transformer(16, depth=8).double(),
                             base=Transformer(16, depth=2).double(), rule="depth-mup")
    groups = muprewrite.param_groups(model, lr=1.0)
    by_name = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert by_name["blocks.0.qkv.weight"] == pytest.approx(0.5)  # m_L = 4: 4^-1/2
    assert by_name["embed.weight"] == 1.0 and by_name["out.weight"] == 1.0
    report = muprewrite.plan_of(model).report  # type: ignore[union-attr]
    assert "base-same-width" in {d.code for d in report.diagnostics}
