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


def test_roles_that_differ_between_widths_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The base width takes its roles from one capture; under a Muon rule a sweep refuses to
    compare widths whose roles differ (the base would step them with another optimizer);
    under another rule every factor is 1 at the base, whatever the role."""
    from types import SimpleNamespace

    from muprewrite import MuprewriteError
    from muprewrite.verify import coordcheck

    def plans_of(optimizer: str):
        return iter([SimpleNamespace(report=[SimpleNamespace(name="fc.weight", role=role)],
                                     optimizer=optimizer)
                     for role in ("input", "input", "hidden")])

    plans = plans_of("adam")
    monkeypatch.setattr(coordcheck, "plan_of", lambda model: next(plans))
    check = coordcheck.RoleCheck()
    for width in (32, 64, 128):
        check.check(width, None)  # type: ignore[arg-type]
    plans = plans_of("muon")
    monkeypatch.setattr(coordcheck, "plan_of", lambda model: next(plans))
    check = coordcheck.RoleCheck()
    check.check(32, None)  # type: ignore[arg-type]
    check.check(64, None)  # type: ignore[arg-type]
    with pytest.raises(MuprewriteError, match=r"fc.weight \(input at width 32, hidden at 128\)"):
        check.check(128, None)  # type: ignore[arg-type]
