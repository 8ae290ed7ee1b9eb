"""A base may differ from the model only along axes that grow with width: check it.

muP's factors are ratios of a parameter's width axes to its base partner's, and the diff of
the two captures calls every axis whose size differs a width axis. A base that also differs
along an axis the data bounds (a padded vocabulary, another number of classes, data
channels or patch size) would make that axis "grow": a readout becomes hidden, a tied
embedding loses its tie. Such a base is refused, naming the parameter, the axis and both
sizes.

An axis is bounded by the data when the single-capture solver finds it finite from a model
input, an embedding table's rows or a kernel extent, or from a model output
(``dims.solve.bounded``). A model output that changes by a ratio that some unbounded axis
also changes by is a backbone's hidden state (it grows with the width): not refused. Axes
taken as finite only by the heads convention, by a constant or for lack of evidence are the
base's to settle (d_head when it grows; an FF width rounded up to a multiple of 256).

>>> import torch
>>> from muprewrite import analyze
>>> def mlp(width, classes):
...     return torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU(),
...                                torch.nn.Linear(width, classes))
>>> analyze(mlp(64, 10), torch.randn(2, 8), base=mlp(32, 12))
Traceback (most recent call last):
...
muprewrite.errors.UsageError: base differs from the model along an axis that does not grow with width: 2.weight axis 0 is 10 in the model, 12 in base (model output ...
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from torch import nn

from ..dims import Axis, AxisGraph, Dims, Strength
from ..dims.solve import bounded
from ..errors import UsageError, first_few

__all__ = ["check_base_axes"]


def check_base_axes(model: nn.Module, axes: AxisGraph, dims: Dims,
                    sizes: Mapping[Axis, int]) -> None:
    """Raise :class:`UsageError` if a parameter or buffer axis bounded by the data has
    another size in the base (``sizes``: each axis's size in the base capture)."""
    firm = bounded(axes, dims)
    changed = {axis: (dims.sizes[axis], size) for axis, size in sizes.items()
               if axis in dims.classes and size != dims.sizes[axis]
               and size > 0 and dims.sizes[axis] > 0}
    ratios = {Fraction(here, there) for axis, (here, there) in changed.items()
              if axis not in firm}
    problems: dict[tuple[str, int], str] = {}
    for axis, (here, there) in changed.items():
        if axis not in axes.state or axis not in firm:
            continue
        strength, why = firm[axis]
        if strength == Strength.OUTPUT and Fraction(here, there) in ratios:
            continue  # a backbone's output: it grows with the width
        owner = axes.state[axis]
        problems.setdefault((owner, axis[1]), f"{owner} axis {axis[1]} is {here} in the model, "
                                              f"{there} in base ({why})")
    if problems:
        order = {name: i for i, (name, _) in enumerate(model.named_parameters())}
        listed = [problems[k] for k in sorted(problems, key=lambda k: (order.get(k[0], len(order)),
                                                                       k))]
        raise UsageError(
            "base differs from the model along an axis that does not grow with width: "
            f"{first_few(listed)}; the diff would take it for a width axis and get its "
            "weights' roles wrong",
            fix="build the base with the model's vocab_size/num_classes (every size the data "
                "fixes: vocabulary, classes, channels, patch size), changing only the width")
