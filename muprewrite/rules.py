"""Parametrization rules: declarative TOML files in the top-level ``rules/`` folder.

A rule is an exponent table (the abc-parametrization itself): for each role, the
exponents of ``m_in`` and ``m_out`` that scale, relative to the base width, the init std,
the forward multiplier, the learning rate, Adam's eps and the weight decay. Kind overrides
(``[kind.bias]`` ...) replace a role's row for parameters of that kind. Nothing is
evaluated: files are read with ``tomllib`` and every key is validated.

>>> rule = load_rule("mup")
>>> rule.scaling("hidden", "weight").lr.factor(m_in=4.0, m_out=4.0)
0.25
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import MuprewriteError

__all__ = ["RuleError", "Exponents", "Scaling", "Rule", "load_rule", "available_rules",
           "RULES_DIR", "ROLES", "QUANTITIES", "KINDS"]

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
ROLES = ("input", "hidden", "output", "fixed")
KINDS = ("weight", "bias", "norm", "embedding", "table")
QUANTITIES = ("init", "multiplier", "lr", "eps", "weight_decay")
_CHOICES = {
    "status": ("stable", "experimental"),
    "optimizer": ("adam", "sgd"),
    "attention": ("inverse", "unchanged"),
    "weight_decay_convention": ("constant-lr-wd", "constant-wd", "custom"),
}
_DOC_KEYS = {"what": str, "when": str, "example": str, "known_problems": str, "references": list}


class RuleError(MuprewriteError):
    """A rule file is missing, malformed, or inconsistent."""


@dataclass(frozen=True)
class Exponents:
    """``factor = m_in ** m_in_exp * m_out ** m_out_exp``."""

    m_in: float = 0.0
    m_out: float = 0.0

    def factor(self, m_in: float, m_out: float) -> float:
        return float(m_in ** self.m_in * m_out ** self.m_out)

    def __str__(self) -> str:
        parts = [f"{name}^{exp:g}" for name, exp in (("m_in", self.m_in), ("m_out", self.m_out))
                 if exp]
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


def available_rules(directory: Path = RULES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_rule(name: str | Path, directory: Path = RULES_DIR) -> Rule:
    """Load ``rules/<name>.toml`` (or a path to a .toml file) and validate every key."""
    path = Path(name) if str(name).endswith(".toml") else directory / f"{name}.toml"
    if not path.is_file():
        raise RuleError(f"no rule {str(name)!r}", where=str(path),
                        fix=f"one of: {', '.join(available_rules(directory))}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{path}: not valid TOML: {exc}") from exc
    return _parse(data, path)


def _fail(path: Path, key: str, expected: str, got: Any) -> RuleError:
    return RuleError(f"{path}: key {key!r}: expected {expected}, got "
                     f"{type(got).__name__} {got!r}")


def _parse(data: dict[str, Any], path: Path) -> Rule:
    known = {"id", "title", "doc", "role", "kind", *_CHOICES}
    for key in data:
        if key not in known:
            raise _fail(path, key, f"one of {sorted(known)}", key)
    for key in ("id", "title"):
        if not isinstance(data.get(key), str):
            raise _fail(path, key, "a string", data.get(key))
    if data["id"] != path.stem:
        raise _fail(path, "id", f"the file's stem {path.stem!r}", data["id"])
    for key, choices in _CHOICES.items():
        if data.get(key) not in choices:
            raise _fail(path, key, f"one of {list(choices)}", data.get(key))
    roles = _rows(data.get("role", {}), ROLES, "role", path)
    kinds = _rows(data.get("kind", {}), KINDS, "kind", path)
    rule = Rule(data["id"], data["title"], data["status"], data["optimizer"], data["attention"],
                data["weight_decay_convention"], MappingProxyType(roles), MappingProxyType(kinds),
                MappingProxyType(_doc(data.get("doc"), path)), path)
    _check_weight_decay(rule)
    return rule


def _rows(table: Any, names: tuple[str, ...], prefix: str, path: Path) -> dict[str, Scaling]:
    if not isinstance(table, dict):
        raise _fail(path, prefix, "a table", table)
    rows = {}
    for name, row in table.items():
        if name not in names:
            raise _fail(path, f"{prefix}.{name}", f"a {prefix} in {list(names)}", name)
        if not isinstance(row, dict):
            raise _fail(path, f"{prefix}.{name}", "a table", row)
        values = {}
        for quantity, exps in row.items():
            key = f"{prefix}.{name}.{quantity}"
            if quantity not in QUANTITIES:
                raise _fail(path, key, f"a quantity in {list(QUANTITIES)}", quantity)
            if not isinstance(exps, dict) or set(exps) - {"m_in", "m_out"}:
                raise _fail(path, key, "a table {m_in = number, m_out = number}", exps)
            for axis, value in exps.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise _fail(path, f"{key}.{axis}", "a number", value)
            values[quantity] = Exponents(float(exps.get("m_in", 0)), float(exps.get("m_out", 0)))
        rows[name] = Scaling(**values)
    return rows


def _doc(doc: Any, path: Path) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _fail(path, "doc", "a table with what/when/example/known_problems/references", doc)
    for key, kind in _DOC_KEYS.items():
        if not isinstance(doc.get(key), kind):
            raise _fail(path, f"doc.{key}", f"a {kind.__name__}", doc.get(key))
    if not all(isinstance(r, str) for r in doc["references"]):
        raise _fail(path, "doc.references", "a list of strings", doc["references"])
    return {key: doc[key] for key in _DOC_KEYS}


def _check_weight_decay(rule: Rule) -> None:
    """The declared convention must hold for every row (it is a claim, so check it)."""
    for prefix, rows in (("role", rule.roles), ("kind", rule.kinds)):
        for name, row in rows.items():
            key = f"{prefix}.{name}.weight_decay"
            if rule.weight_decay_convention == "constant-lr-wd" and (
                    row.weight_decay.m_in != -row.lr.m_in or row.weight_decay.m_out != -row.lr.m_out):
                raise RuleError(f"{rule.path}: key {key!r}: weight_decay_convention "
                                "'constant-lr-wd' needs weight_decay exponents = -(lr exponents) "
                                f"(lr is {row.lr}, weight_decay is {row.weight_decay})")
            if rule.weight_decay_convention == "constant-wd" and row.weight_decay != Exponents():
                raise RuleError(f"{rule.path}: key {key!r}: weight_decay_convention "
                                f"'constant-wd' needs no weight_decay exponents, got {row.weight_decay}")
