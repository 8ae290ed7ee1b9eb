"""Coordinate check (slow): activation RMS of every module after 3 Adam steps, widths 64 to
1024 (the models and settings of benchmarks/coord_check.py). Under `mup` every module stays
within a factor 2; under `sp` the output grows."""

from __future__ import annotations

import pytest

from benchmarks.coord_check import LR, MODELS, WIDTHS
from muprewrite.verify import coord_check


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_coordinates_stay_flat_under_mup_and_logits_grow_under_sp(name: str) -> None:
    if name.startswith("diffusers"):
        pytest.importorskip("diffusers")
    build, inputs = MODELS[name]
    mup = coord_check(build, WIDTHS, inputs=inputs, rule="mup", lr=LR)
    module, spread = mup.worst(1)[0]
    assert spread < 2.0, f"{name}: {module} varies by {spread:.2f}x: {mup.rms[module]}"
    sp = coord_check(build, WIDTHS, inputs=inputs, rule="sp", lr=LR)
    assert sp.growth("") > 3.0, f"{name}: sp output grew only {sp.growth(''):.2f}x"
