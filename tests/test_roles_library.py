"""diffusers and transformers models at tiny configs agree with the two-width ground truth."""

from __future__ import annotations

import pytest
import torch
from ground_truth import ground_truth_roles
from zoo_library import ZooModel, library_zoo, library_zoo_fixed_heads

from muprewrite import analyze

CASES = [(z, "grow") for z in library_zoo()] + [(z, "fixed") for z in library_zoo_fixed_heads()]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "base"])
@pytest.mark.parametrize(("zoo", "heads"), CASES, ids=[f"{z.name}-{h}" for z, h in CASES])
def test_library_model_roles(zoo: ZooModel, heads: str, mode: str) -> None:
    with torch.device("meta"):
        wide, small = zoo.build(2), zoo.build(1)
    truth = ground_truth_roles(wide, small)
    report = analyze(wide, zoo.example_inputs(wide), heads=heads,  # type: ignore[arg-type]
                     base=small if mode == "base" else None)
    assert {n: (report[n].role, t) for n, t in truth.items() if report[n].role != t} == {}


def test_zoo_is_complete() -> None:
    names = {z.name for z in library_zoo()}
    assert names == {"diffusers.DiTTransformer2DModel", "diffusers.PixArtTransformer2DModel",
                     "diffusers.SD3Transformer2DModel", "transformers.GPT2LMHeadModel",
                     "transformers.LlamaForCausalLM"}


def test_gpt2_tied_embedding_and_conv1d_orientation() -> None:
    zoo = next(z for z in library_zoo() if z.name.endswith("GPT2LMHeadModel"))
    with torch.device("meta"):
        model = zoo.build(2)
    report = analyze(model, zoo.example_inputs(model))
    wte = report["transformer.wte.weight"]
    assert wte.tied and wte.role == "input" and wte.kind == "embedding"
    assert {u.op for u in wte.uses} == {"embedding", "linear"}
    c_fc = report["transformer.h.0.mlp.c_fc.weight"]  # Conv1D stores [fan_in, fan_out]
    assert (c_fc.fan_in, c_fc.fan_out, c_fc.role) == ((0,), (1,), "hidden")
