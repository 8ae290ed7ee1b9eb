"""``--inputs``: example inputs written as tensor specs, in the spec grammar.

::

    --inputs "float(2, 4, 32, 32), int(2, high=1000), int(2, high=10)"
    --inputs "x=float(2, 4, 32, 32), t=int(2, high=1000), scale=0.5"   # keyword arguments

``float(*shape)`` is a random normal tensor, ``int(*shape, high=N)`` random integers in
[0, N) (N >= 1, default 2), ``bool(*shape)`` all-true; ``half``/``bfloat16``/``double``/
``long`` work alike. Sizes are integers >= 1; a tensor holds at most 2**40 elements on the
meta device and 2**28 elsewhere. Plain literals pass through, also inside lists, tuples and
dicts. The grammar is :mod:`.grammar`'s: nothing is evaluated.

>>> args, kwargs = parse_inputs("float(2, 3), n=int(4, high=10), s=0.5")
>>> [tuple(a.shape) for a in args], sorted(kwargs)
([(2, 3)], ['n', 's'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..capture.input_sets import InputSets
from ..errors import InputSpecError, ModelSpecError
from .grammar import Call, parse_arguments

__all__ = ["parse_inputs", "inputs_for", "DTYPES"]

DTYPES = {"float": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16,
          "double": torch.float64, "int": torch.int64, "long": torch.int64, "bool": torch.bool}
_FIX = 'e.g. --inputs "float(2, 4, 32, 32), int(2, high=1000), y=int(2, high=10)"'
_MAX_NUMEL = {"meta": 2**40, "other": 2**28}


def parse_inputs(text: str, device: torch.device | str = "meta") -> tuple[tuple, dict]:
    """Tensor specs (see the module docstring) -> (args, kwargs) on ``device``."""
    try:
        args, kwargs = parse_arguments(text, "--inputs")
    except ModelSpecError as exc:
        raise InputSpecError(exc.message, fix=_FIX) from None
    return (tuple(_value(a, device) for a in args),
            {k: _value(v, device) for k, v in kwargs})


def inputs_for(model: torch.nn.Module, texts: Sequence[str] | str | None,
               device: torch.device | str = "meta") -> Any:
    """What ``--inputs`` (repeatable) gives ``analyze``/``apply``: None for none (the model's
    ``example_inputs()`` then, which must exist), one set, or an ``InputSets`` of several."""
    texts = [texts] if isinstance(texts, str) else list(texts or ())
    if not texts:
        if not callable(getattr(model, "example_inputs", None)):
            raise InputSpecError(f"{type(model).__name__} has no example_inputs() method",
                                 fix=f"pass --inputs, {_FIX} (repeat --inputs for each path "
                                     "of the forward: with and without targets, a flag)")
        return None
    sets = [parse_inputs(text, device=device) for text in texts]
    return sets[0] if len(sets) == 1 else InputSets(*sets)


def _value(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, Call):
        return _tensor(value, device)
    if isinstance(value, (list, tuple)):
        return type(value)(_value(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _value(v, device) for k, v in value.items()}
    return value


def _tensor(call: Call, device: torch.device | str) -> torch.Tensor:
    spec = f"{call.name}({', '.join(map(repr, call.args))})"
    if len(call.callee) != 1 or call.name not in DTYPES:
        raise InputSpecError(f"--inputs: {call.name}(...) is not a tensor spec",
                             fix=f"one of {', '.join(DTYPES)}; {_FIX}")
    shape = list(call.args)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise InputSpecError(f"--inputs: {spec}: sizes must be integers >= 1", fix=_FIX)
    dtype = DTYPES[call.name]
    options = dict(call.kwargs)
    allowed = {"high"} if dtype == torch.int64 else set()
    if set(options) - allowed:
        bad = sorted(set(options) - allowed)[0]
        raise InputSpecError(f"--inputs: {spec}: unknown option {bad!r}",
                             fix="int/long take high=N (values in [0, N)); other specs take "
                                 "sizes only")
    high = options.get("high", 2)
    if isinstance(high, bool) or not isinstance(high, int) or high < 1:
        raise InputSpecError(f"--inputs: {spec}: high must be an integer >= 1, got {high!r}",
                             fix="int(2, high=1000) draws integers in [0, 1000)")
    limit = _MAX_NUMEL["meta" if str(device) == "meta" else "other"]
    if math.prod(shape) > limit:
        raise InputSpecError(f"--inputs: {spec} has {math.prod(shape):,} elements (at most "
                             f"{limit:,} on {device})", fix="use a small batch and size: the "
                                                            "analysis needs shapes, not data")
    if dtype == torch.int64:
        return torch.randint(0, high, shape, device=device)
    if dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool, device=device)
    return torch.randn(shape, dtype=dtype, device=device)
