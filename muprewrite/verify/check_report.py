"""What ``muprewrite check`` found: the first divergence, what was compared, what no run
reached; and the two comparisons every stage of the check uses (``rel``, ``tensors``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MuprewriteError
from ..rules.hparams import HParams

__all__ = ["CheckError", "Divergence", "SourceCheck", "RTOL", "RTOL_FLOAT32", "rel", "tensors"]

RTOL = 1e-9  # float64: the emitted code and apply do the same arithmetic in another order
# a model that computes in float32 whatever the default dtype (a hard-coded torch.float32 or
# .float() that check cannot cast away) is compared at float32's precision: a missing factor
# moves the output by its own size (a factor sqrt(2) or more), far above this
RTOL_FLOAT32 = 1e-4


class CheckError(MuprewriteError):
    """The emitted file cannot be checked (not emitted, original missing, bad specs)."""


@dataclass(frozen=True)
class Divergence:
    """The first place where the emitted model and its expectation part."""

    width: str  # the --model spec (or the base call)
    what: str  # "structure", "parameter", "output", "gradient", "training", "header"
    where: str  # file:line or parameter/module name
    mode: str  # "train" / "eval" / "-"
    inputs: int  # index of the input set, -1 when not applicable
    error: float  # relative size of the difference
    detail: str = ""

    def line(self) -> str:
        mode = f", {self.mode} mode" if self.mode != "-" else ""
        inputs = f", input set {self.inputs}" if self.inputs >= 0 else ""
        return (f"{self.what} diverges at {self.where} ({self.width}{mode}{inputs}): relative "
                f"error {self.error:.3g}" + (f"; {self.detail}" if self.detail else ""))


@dataclass
class SourceCheck:
    """What was compared, and the first divergence (None: the file passed)."""

    file: Path
    original: Path
    rule: str
    compared: list[str] = field(default_factory=list)  # one line per passed comparison
    divergence: Divergence | None = None
    hparams: HParams | None = None  # the file's base hyperparameters (None: it has none)
    notes: list[str] = field(default_factory=list)  # what was not checked, and why
    unexercised: list[str] = field(default_factory=list)  # edits no run reached, with guards

    @property
    def passed(self) -> bool:
        return self.divergence is None


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (inf for other shapes)."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return float("inf")
    scale = max(float(b.abs().max()) if b.numel() else 0.0, 1e-30)
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


def tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of an output (nested tuples, lists, dicts), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    return []
