"""What a parametrization rule is: its exponent rows and its error (``load.py`` reads the
files into these, ``checks.py`` checks what a rule claims)."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MuprewriteError

__all__ = ["RuleError", "Exponents", "Scaling", "MuonRow", "Rule", "RULES_DIR", "ROLES",
           "QUANTITIES", "KINDS", "MAX_EXPONENT", "MAX_RULE_BYTES", "NAME_PATTERN", "error_at",
           "shown", "SHORT"]

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
ROLES = ("input", "hidden", "output", "fixed")
KINDS = ("weight", "bias", "norm", "embedding", "table")
QUANTITIES = ("init", "multiplier", "lr", "eps", "weight_decay")
MAX_EXPONENT = 4
MAX_RULE_BYTES = 1 << 20
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
SHORT = reprlib.Repr()  # bounded reprs of hostile values in messages
SHORT.maxlevel, SHORT.maxstring, SHORT.maxother, SHORT.maxlist, SHORT.maxdict = 2, 60, 60, 4, 4


class RuleError(MuprewriteError):
    """A rule file is missing, malformed, or inconsistent."""


@dataclass(frozen=True)
class Exponents:
    """``factor = m_in ** m_in_exp * m_out ** m_out_exp * m_depth ** m_depth_exp``.

    ``m_depth`` (m_L = blocks / base blocks) applies only to parameters inside residual
    branches; for every other parameter it is 1."""

    m_in: float = 0.0
    m_out: float = 0.0
    m_depth: float = 0.0

    def factor(self, m_in: float, m_out: float, m_depth: float = 1.0) -> float:
        return float(m_in ** self.m_in * m_out ** self.m_out * m_depth ** self.m_depth)

    def __str__(self) -> str:
        parts = [f"{name}^{exp:g}" for name, exp in (("m_in", self.m_in), ("m_out", self.m_out),
                                                      ("m_L", self.m_depth)) if exp]
        return " ".join(parts) or "1"


@dataclass(frozen=True)
class Scaling:
    """One row of the table: how each quantity scales for a role (or kind)."""

    init: Exponents = field(default_factory=Exponents)
    multiplier: Exponents = field(default_factory=Exponents)
    lr: Exponents = field(default_factory=Exponents)
    eps: Exponents = field(default_factory=Exponents)
    weight_decay: Exponents = field(default_factory=Exponents)


@dataclass(frozen=True)
class MuonRow:
    """``[muon]``: how ``torch.optim.Muon`` steps the hidden 2-D weights under a Muon rule.

    ``adjust_lr_fn`` is the update scaling the exponents were derived for (Muon's own
    ``adjust_lr_fn``); ``lr`` and ``weight_decay`` replace the hidden row's for those
    matrices (init and multiplier stay the hidden row's)."""

    adjust_lr_fn: str
    lr: Exponents
    weight_decay: Exponents


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    status: str
    optimizer: str
    attention: str
    weight_decay_convention: str
    roles: Mapping[str, Scaling]
    kinds: Mapping[str, Scaling]
    doc: Mapping[str, Any]
    path: Path
    depth_alpha: float | None = None  # residual branch multiplier m_L^-alpha; None: width only
    weight_decay_coupling: str = "coupled"  # per-step decay lr*wd (torch AdamW, Muon) or wd
    vector_weight_decay: str = "scaled"  # "none": biases and norm gains get no weight decay
    muon: MuonRow | None = None  # optimizer "muon": the hidden matrices Muon steps

    @property
    def has_depth(self) -> bool:
        return self.depth_alpha is not None

    def branch_multiplier(self, m_depth: float) -> float:
        """The factor on every residual branch, x + m_L^-alpha * F(x)."""
        return 1.0 if self.depth_alpha is None else float(m_depth ** -self.depth_alpha)

    def steps_with_muon(self, role: str, kind: str, ndim: int) -> bool:
        """Whether Muon steps this parameter: a hidden 2-D weight under a Muon rule (conv
        kernels, embeddings, readouts, biases and norm gains stay on AdamW)."""
        return self.muon is not None and role == "hidden" and kind == "weight" and ndim == 2

    def scaling(self, role: str, kind: str) -> Scaling:
        """The row for a parameter: its kind's override if the rule has one, else its role's."""
        if kind in self.kinds and role != "fixed":
            return self.kinds[kind]
        return self.roles.get(role, Scaling())

    def attention_scale(self, d_head: int, d_head_base: int, d_head_grows: bool) -> float:
        """Factor on the attention logits relative to the model's own 1/sqrt(d_head)."""
        if self.attention == "unchanged" or not d_head_grows:
            return 1.0
        return float((d_head / d_head_base) ** -0.5)  # sqrt(d_base)/d_head over 1/sqrt(d_head)



def shown(path: Path | str) -> str:
    return str(path) if str(path).isprintable() else ascii(str(path))



def error_at(path: Path, key: str, problem: str, fix: str) -> RuleError:
    return RuleError(f"{shown(path)}: key {SHORT.repr(key)}: {problem}",
                     where=f"{shown(path)}: {SHORT.repr(key)}", fix=fix)
