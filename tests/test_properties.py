"""Property tests: on random architectures, roles equal the two-width ground truth.

Profiles (registered in conftest.py): ``ci`` (default, used by make test) and ``thorough``
(HYPOTHESIS_PROFILE=thorough, 500 examples per property; ``make test-thorough``).
"""

from __future__ import annotations

import pytest
import torch
from ground_truth import ground_truth_roles
from hypothesis import given
from random_arch import FREE_FANS, NetSpec, RandomNet
from strategies import net_specs, widths

from muprewrite import analyze

pytestmark = pytest.mark.properties


def _pair(spec: NetSpec, sizes: tuple[int, int]) -> tuple[RandomNet, RandomNet]:
    with torch.device("meta"):
        return RandomNet(spec, sizes[0]), RandomNet(spec, sizes[1])


def _diff(report, truth):  # type: ignore[no-untyped-def]
    return {n: (report[n].role, t) for n, t in truth.items() if report[n].role != t}


@given(spec=net_specs(), sizes=widths)
def test_single_capture_roles_equal_ground_truth(spec: NetSpec, sizes: tuple[int, int]) -> None:
    wide, base = _pair(spec, sizes)
    report = analyze(wide, heads=spec.heads)  # type: ignore[arg-type]
    assert _diff(report, ground_truth_roles(wide, base, FREE_FANS)) == {}


@given(spec=net_specs(), sizes=widths)
def test_base_capture_roles_equal_ground_truth(spec: NetSpec, sizes: tuple[int, int]) -> None:
    wide, base = _pair(spec, sizes)
    report = analyze(wide, base=base)
    assert _diff(report, ground_truth_roles(wide, base, FREE_FANS)) == {}
