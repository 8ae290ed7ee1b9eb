"""The Report value: immutable, JSON-serialisable, readable, and right about attention."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import EXAMPLES
from torch import nn

from muprewrite import analyze

DIT = next(e for e in EXAMPLES if e.module == "dit")
GPT = next(e for e in EXAMPLES if e.module == "gpt")


@pytest.fixture(scope="module")
def dit_report():  # type: ignore[no-untyped-def]
    return analyze(DIT.build(DIT.wide_heads))


def test_report_is_immutable(dit_report) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError):
        dit_report.params["x"] = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        dit_report["blocks.0.attn.qkv.weight"].role = "input"


def test_json_round_trip(dit_report) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(dit_report.to_json())
    assert {n: p["role"] for n, p in data["params"].items()} == dit_report.roles()
    assert data["mode"] == "single" and data["heads"] == "grow" and data["assumptions"]
    assert len(data["attention"]) == len(dit_report.attention) == 2


def test_table_lists_every_parameter_and_site(dit_report) -> None:  # type: ignore[no-untyped-def]
    table = dit_report.table(collapse=False)
    for name in dit_report.params:
        assert name in table
    assert "attention sites:" in table and "heads convention 'grow'" in table
    short = dit_report.table()
    assert "blocks.{0-1}.attn.qkv.weight" in short and "blocks.0.attn.qkv.weight" not in short
    assert "blocks.{0-1}.attn (sdpa)" in short and "pos_embed" in short


def test_source_points_at_the_users_line(dit_report) -> None:  # type: ignore[no-untyped-def]
    qkv = dit_report["blocks.0.attn.qkv.weight"]
    file, line = qkv.source.rsplit(":", 1)
    assert file.endswith("examples/dit.py")
    assert "self.qkv(" in Path(file).read_text().splitlines()[int(line) - 1]
    assert qkv.consumers and all(u.module == "blocks.0.attn.qkv" for u in qkv.uses)


def test_kinds_and_zero_init_layers(dit_report) -> None:  # type: ignore[no-untyped-def]
    assert dit_report["y_embedder.embedding_table.weight"].kind == "embedding"
    assert dit_report["blocks.0.attn.qkv.bias"].kind == "bias"
    assert dit_report["pos_embed"].trainable is False
    assert dit_report["blocks.0.adaLN_modulation.1.weight"].role == "hidden"
    assert dit_report["final_layer.linear.weight"].role == "output"
    assert dit_report["t_embedder.mlp.0.weight"].role == "input"  # 256-wide sinusoid in


def test_attention_d_head_by_convention_and_by_measurement() -> None:
    wide = DIT.build(DIT.wide_dhead)  # 2 heads, d_head 128 (grows from 64)
    grow, fixed = analyze(wide, heads="grow"), analyze(wide, heads="fixed")
    assert all(not a.d_head_grows and a.heads_grow for a in grow.attention)
    assert all(a.d_head_grows and not a.heads_grow for a in fixed.attention)
    measured = analyze(wide, base=DIT.build(DIT.small), heads="grow")  # base overrides it
    assert [(a.d_head, a.d_head_base, a.d_head_grows) for a in measured.attention] == [(128, 64, True)] * 2


def test_tied_embedding_in_gpt_example() -> None:
    report = analyze(GPT.build(GPT.wide_heads))
    wte = report["transformer.wte.weight"]
    assert wte.tied and wte.role == "input" and wte.kind == "embedding"
    assert {u.slot for u in wte.uses} == {"embedding", "weight"}
    assert "lm_head.weight" not in report.params  # one entry per tensor, as named_parameters()


class ExplicitAttention(nn.Module):
    """softmax(q k^T * scale) v written out, with parameters used as ``x @ W``."""

    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.w_in = nn.Parameter(torch.randn(6, d))
        self.w_qkv = nn.Parameter(torch.randn(d, 3 * d))
        self.w_out = nn.Parameter(torch.randn(d, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.w_in
        B, N, D = h.shape
        q, k, v = (h @ self.w_qkv).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * (1.0 / (D // self.heads) ** 0.5)
        out = F.softmax(att, dim=-1) @ v
        out = out.transpose(1, 2).reshape(B, N, D)
        return torch.einsum("bnd,do->bno", out, self.w_out)


def test_explicit_softmax_attention_and_matmul_parameters() -> None:
    with torch.device("meta"):
        model = ExplicitAttention(64)
    report = analyze(model, torch.randn(2, 7, 6, device="meta"), heads="fixed")
    assert report.roles() == {"w_in": "input", "w_qkv": "hidden", "w_out": "output"}
    assert (report["w_in"].fan_in, report["w_in"].fan_out) == ((0,), (1,))
    assert (report["w_out"].fan_in, report["w_out"].fan_out) == ((0,), (1,))
    [site] = report.attention
    assert site.kind == "softmax" and site.d_head_grows and site.heads == 2
    assert site.scale == pytest.approx(1 / 32 ** 0.5) and site.scale_node is not None


def test_analysis_allocates_and_changes_nothing() -> None:
    model = DIT.build(DIT.small)
    analyze(model)
    assert all(p.device.type == "meta" for p in model.parameters())
    cpu = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in cpu.state_dict().items()}
    analyze(cpu, torch.randn(3, 4))
    assert all(torch.equal(before[k], v) for k, v in cpu.state_dict().items())


def test_progress_reports_each_stage() -> None:
    stages: list[str] = []
    analyze(DIT.build(DIT.wide_heads), base=DIT.build(DIT.small), progress=stages.append)
    assert [s.split()[0] for s in stages] == ["capturing", "building", "capturing", "classifying"]
