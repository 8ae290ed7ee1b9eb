"""Example inputs, one set per path of the forward.

A forward often takes several paths: with and without ``targets`` (training vs
generation), a flag, a conditioning input that is sometimes absent. A capture sees only the
path its inputs run, so pass one input set per path and every path is captured, together,
in one graph: roles, readout multipliers and attention factors are the union of what the
paths need.

>>> import torch
>>> from muprewrite import InputSets
>>> sets = InputSets(torch.zeros(2, 8), ((torch.zeros(2, 8),), {"targets": torch.zeros(2)}))
>>> len(sets), [sorted(kwargs) for _args, kwargs in input_sets(sets)]
(2, [[], ['targets']])

A model's ``example_inputs()`` may return an ``InputSets`` too; on the command line, repeat
``--inputs``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputSpecError

__all__ = ["InputSets", "input_sets", "first_set", "normalize_inputs"]

InputSet = tuple[tuple[Any, ...], dict[str, Any]]


class InputSets(tuple):
    """Several example input sets: ``InputSets(set_1, set_2, ...)``.

    Each set is what a single one would be: a tensor, a tuple of positional arguments, or
    ``((args...), {kwargs})``.
    """

    def __new__(cls, *sets: Any) -> InputSets:
        if not sets:
            raise InputSpecError("InputSets() holds no input set",
                                 fix="InputSets(inputs_for_path_1, inputs_for_path_2, ...)")
        for i, one in enumerate(sets):
            if isinstance(one, InputSets):
                raise InputSpecError(f"InputSets: set {i} is itself an InputSets",
                                     fix="list every set once: InputSets(a, b, c)")
        return super().__new__(cls, sets)

    def __repr__(self) -> str:
        return f"InputSets({len(self)} sets)"


def normalize_inputs(example_inputs: Any) -> InputSet:
    """Accept ``tensor``, ``(args...)``, or ``((args...), {kwargs})``; return (args, kwargs)."""
    if isinstance(example_inputs, InputSets):
        raise InputSpecError("several input sets where one is expected",
                             fix="pass a single set here, or call input_sets() for all")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if (
        isinstance(example_inputs, tuple)
        and len(example_inputs) == 2
        and isinstance(example_inputs[0], (tuple, list))
        and isinstance(example_inputs[1], dict)
    ):
        return tuple(example_inputs[0]), dict(example_inputs[1])
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise InputSpecError(
        f"example inputs must be tensors; got {type(example_inputs).__name__}",
        fix="pass a tensor, a tuple of positional arguments (x, t, ...), or "
            "((args...), {kwargs}); with the CLI, --inputs \"float(2, 3, 32, 32)\"; for "
            "several paths, muprewrite.InputSets(set_1, set_2)")


def input_sets(example_inputs: Any) -> list[InputSet]:
    """Every set as (args, kwargs): one for a single set, several for an ``InputSets``."""
    if isinstance(example_inputs, InputSets):
        return [normalize_inputs(one) for one in example_inputs]
    return [normalize_inputs(example_inputs)]


def first_set(example_inputs: Any) -> InputSet:
    """The first set (what a run that takes one batch, such as a coord check, trains on)."""
    return input_sets(example_inputs)[0]
