"""Shared fixtures: the examples' models, built at two widths on the meta device."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# Property-test profiles: "ci" keeps the suite short; "thorough" (make test-thorough) is the
# release check, at least 500 examples per property.
for _name, _n in (("ci", 20), ("thorough", 500)):
    settings.register_profile(_name, max_examples=_n, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# `make test` runs two pytest-xdist workers on CI's two cores: one torch thread each, so that
# the workers do not fight over the cores (torch would start one thread per core in each)
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@dataclass(frozen=True)
class ExampleSpec:
    module: str
    cls: str
    small: dict[str, Any]
    wide_heads: dict[str, Any]  # heads grow, d_head fixed
    wide_dhead: dict[str, Any]  # heads fixed, d_head grows

    def build(self, kwargs: dict[str, Any], device: str = "meta") -> torch.nn.Module:
        model_cls = getattr(importlib.import_module(f"examples.{self.module}"), self.cls)
        with torch.device(device):
            return model_cls(**kwargs)


EXAMPLES = [
    ExampleSpec("dit", "DiT", dict(hidden_size=128, num_heads=2),
                dict(hidden_size=256, num_heads=4), dict(hidden_size=256, num_heads=2)),
    ExampleSpec("uvit", "UViT", dict(embed_dim=128, num_heads=2),
                dict(embed_dim=256, num_heads=4), dict(embed_dim=256, num_heads=2)),
    ExampleSpec("pixart", "PixArtAlpha", dict(hidden_size=128, num_heads=2),
                dict(hidden_size=256, num_heads=4), dict(hidden_size=256, num_heads=2)),
    ExampleSpec("mmdit", "MMDiT", dict(hidden_size=128, num_heads=2),
                dict(hidden_size=256, num_heads=4), dict(hidden_size=256, num_heads=2)),
    ExampleSpec("gpt", "GPT", dict(n_embd=64, n_head=2),
                dict(n_embd=128, n_head=4), dict(n_embd=128, n_head=2)),
    ExampleSpec("mlp", "MLP", dict(width=64), dict(width=128), dict(width=128)),
    ExampleSpec("cnn", "CNN", dict(width=16), dict(width=32), dict(width=32)),
]


@pytest.fixture(params=EXAMPLES, ids=lambda s: s.module)
def example(request: pytest.FixtureRequest) -> ExampleSpec:
    return request.param
