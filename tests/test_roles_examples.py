"""Roles of every parameter of the examples' models equal the two-width ground truth."""

from __future__ import annotations

import pytest
from conftest import ExampleSpec
from ground_truth import ground_truth_roles

from muprewrite import analyze


def _mismatches(report, truth):  # type: ignore[no-untyped-def]
    return {n: (report[n].role, want) for n, want in truth.items() if report[n].role != want}


@pytest.mark.parametrize("heads", ["grow", "fixed"])
def test_single_capture_matches_ground_truth(example: ExampleSpec, heads: str) -> None:
    wide = example.build(example.wide_heads if heads == "grow" else example.wide_dhead)
    small = example.build(example.small)
    truth = ground_truth_roles(wide, small)
    report = analyze(wide, heads=heads)  # type: ignore[arg-type]
    assert set(report.params) == set(truth)
    assert _mismatches(report, truth) == {}


@pytest.mark.parametrize("heads", ["grow", "fixed"])
def test_base_capture_matches_ground_truth(example: ExampleSpec, heads: str) -> None:
    wide = example.build(example.wide_heads if heads == "grow" else example.wide_dhead)
    small = example.build(example.small)
    truth = ground_truth_roles(wide, small)
    report = analyze(wide, base=small)
    assert report.mode == "base"
    assert _mismatches(report, truth) == {}


def test_base_gives_width_multipliers(example: ExampleSpec) -> None:
    wide, small = example.build(example.wide_heads), example.build(example.small)
    report = analyze(wide, base=small)
    for p in report:
        if p.role == "hidden":
            assert p.m_in == pytest.approx(2.0) and p.m_out == pytest.approx(2.0), p.name
        if p.role == "output":
            assert (p.m_in, p.m_out) == (pytest.approx(2.0), 1.0), p.name
        if p.role == "fixed":
            assert (p.m_in, p.m_out) == (1.0, 1.0), p.name
