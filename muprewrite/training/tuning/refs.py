"""Builders and functions named on the command line, picklable for worker processes.

``SpecBuilder(path, spec)`` builds ``spec`` (a constructor call in the grammar of
:mod:`muprewrite.spec`, parsed, never evaluated) from the model file ``path``;
``FunctionRef(path, name)`` is the function ``name`` of the file ``path`` (``--train
train.py:train_trial``). Both pickle as their text, and a worker process imports the file
itself (once per process), contained as :func:`muprewrite.spec.load_module` contains it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from ...errors import ModelSpecError
from ...spec import build_model, load_module

__all__ = ["SpecBuilder", "FunctionRef", "module_of"]

_MODULES: dict[str, ModuleType] = {}  # this process's imports of the user's files


def module_of(path: str | Path) -> ModuleType:
    """The user's file imported (once per process)."""
    key = os.path.realpath(path)
    if key not in _MODULES:
        _MODULES[key] = load_module(path)
    return _MODULES[key]


@dataclass(frozen=True)
class SpecBuilder:
    """Build the model ``spec`` from the file ``path`` (on ``device``)."""

    path: str
    spec: str
    option: str = "--model"
    device: str = "cpu"

    def __call__(self) -> nn.Module:
        return build_model(module_of(self.path), self.spec, self.option, device=self.device)

    def describe(self) -> str:
        return self.spec


@dataclass(frozen=True)
class FunctionRef:
    """The function ``name`` defined in (or imported into) the file ``path``."""

    path: str
    name: str
    option: str = "--train"

    @classmethod
    def parse(cls, text: str, default_file: str, option: str = "--train") -> FunctionRef:
        """``file.py:function``, or ``function`` (from ``default_file``)."""
        file, _, name = text.rpartition(":") if ":" in text else ("", "", text)
        file = file or default_file
        if not name.isidentifier() or not file.endswith(".py"):
            raise ModelSpecError(f"{option} {text!r} is not file.py:function",
                                 fix=f"{option} train.py:train_trial (a function that takes a "
                                     "TrialRun and returns the final validation loss)")
        return cls(file, name, option)

    def resolve(self) -> Any:
        fn = vars(module_of(self.path)).get(self.name)
        if not callable(fn):
            raise ModelSpecError(f"{self.option}: {self.path} defines no function "
                                 f"{self.name!r}", fix=f"def {self.name}(run): ... in "
                                                       f"{Path(self.path).name}")
        return fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def describe(self) -> str:
        return f"{self.path}:{self.name}"
