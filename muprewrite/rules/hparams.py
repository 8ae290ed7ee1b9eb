"""Base hyperparameters: the width-invariant constants muP leaves to the user to tune.

A rule fixes how each factor *scales* with width (the exponents of m_in, m_out, m_L); it
says nothing of the constant in front. Tensor Programs V tunes those constants on the proxy
and carries them unchanged to the wide model: the output (readout) multiplier, the input
(embedding) multiplier, the attention logit multiplier, the init scale and per-layer-type
learning rates. :class:`HParams` names them; every one defaults to 1, which is exactly the
model as the rule alone would make it. They multiply the rule's factors, so they are the
same number at every width and depth:

- ``output_multiplier``: the forward multiplier of output weights (and of a tied
  embedding's readout use), on the weight's contribution (``W x``; a bias is not scaled);
- ``input_multiplier``: the same for input weights and embeddings (and a tied embedding's
  lookups);
- ``attention_multiplier``: the attention logits of every attention site the analysis found,
  whether or not its head size grows;
- ``hidden_init``: the init standard deviation of hidden weights (zero-init stays zero);
- ``lr_input``, ``lr_hidden``, ``lr_output``, ``lr_vector``: the learning rate of input
  weights and embeddings, hidden weights, output weights, and every other trainable
  parameter (biases, norm gains, learned tables: vector-like or fixed);
- ``branch_multiplier``: under a depth rule, each residual branch (times m_L^-alpha).

A *card* (``card.toml``) stores a tuned set with the rule, the base and the learning rate it
was tuned with, so that ``apply(..., hparams="card.toml")`` carries it to the target.

>>> HParams(output_multiplier=2.0).changed()
{'output_multiplier': 2.0}
>>> HParams().is_default()
True
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeAlias

from ..errors import MuprewriteError, UsageError

__all__ = ["HParams", "DEFAULT_HPARAMS", "HParamsLike", "Card", "load_card", "as_hparams",
           "from_option", "hparam_class", "param_class", "HPARAM_ROWS",
           "HPARAM_NAMES", "HPARAM_HELP", "MAX_CARD_BYTES"]

MAX_CARD_BYTES = 64 * 1024


@dataclass(frozen=True)
class HParams:
    """Width-invariant multipliers tuned on the proxy (all 1: the rule alone)."""

    output_multiplier: float = 1.0
    input_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    hidden_init: float = 1.0
    lr_input: float = 1.0
    lr_hidden: float = 1.0
    lr_output: float = 1.0
    lr_vector: float = 1.0
    branch_multiplier: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"base hyperparameter {f.name} must be a number, got "
                                 f"{type(value).__name__} {value!r}",
                                 fix=f"HParams({f.name}=2.0)")
            if not math.isfinite(value) or value <= 0:
                raise UsageError(f"base hyperparameter {f.name} must be a finite number > 0, "
                                 f"got {value!r}", fix=f"HParams({f.name}=0.5) (1 leaves it as "
                                 "the rule has it)")
            object.__setattr__(self, f.name, float(value))

    def changed(self) -> dict[str, float]:
        """The multipliers that differ from 1."""
        return {k: v for k, v in asdict(self).items() if v != 1.0}

    def is_default(self) -> bool:
        return not self.changed()

    def lr(self, cls: str) -> float:
        """The learning-rate multiplier of a parameter class (see :func:`hparam_class`)."""
        return {"input": self.lr_input, "hidden": self.lr_hidden, "output": self.lr_output,
                "vector": self.lr_vector}[cls]

    def __str__(self) -> str:
        changed = self.changed()
        return ", ".join(f"{k}={v:.6g}" for k, v in changed.items()) if changed else "all 1"


HPARAM_NAMES = tuple(f.name for f in fields(HParams))
# what each one multiplies (for `rules show`, `analyze --hparams` and the tuner's help)
HPARAM_HELP = {
    "output_multiplier": "forward multiplier of output weights (and a tied embedding's readout)",
    "input_multiplier": "forward multiplier of input weights and embeddings (tied: lookups)",
    "attention_multiplier": "attention logits, at every attention site",
    "hidden_init": "init standard deviation of hidden weights",
    "lr_input": "learning rate of input weights and embeddings (and fixed-size weights)",
    "lr_hidden": "learning rate of hidden weights",
    "lr_output": "learning rate of output weights",
    "lr_vector": "learning rate of biases, norm gains and tables",
    "branch_multiplier": "each residual branch, with m_L^-alpha (depth rules only)",
}
DEFAULT_HPARAMS = HParams()


def hparam_class(role: str, kind: str) -> str:
    """Which per-class learning-rate multiplier a parameter takes: "input" (input weights
    and embeddings, and weights with no width axis), "hidden", "output" (output weights), or
    "vector" (biases, norm gains, tables, whatever their role)."""
    if role == "hidden":
        return "hidden"
    if kind not in ("weight", "embedding"):
        return "vector"
    return "output" if role == "output" else "input"


# the one table of which base hyperparameters a parameter takes: its class (param_class) ->
# (quantity, hyperparameter) pairs; "multiplier" is the forward multiplier (of a tied
# embedding: at its readout uses), "lookup" a tied embedding's lookups
HPARAM_ROWS: dict[str, tuple[tuple[str, str], ...]] = {
    "hidden": (("init", "hidden_init"), ("lr", "lr_hidden")),
    "output": (("multiplier", "output_multiplier"), ("lr", "lr_output")),
    "input": (("multiplier", "input_multiplier"), ("lr", "lr_input")),
    "tied": (("multiplier", "output_multiplier"), ("lookup", "input_multiplier"),
             ("lr", "lr_input")),
    "fixed": (("lr", "lr_input"),),  # a weight with no width axis
    "vector": (("lr", "lr_vector"),),  # biases, norm gains, tables
}


def param_class(role: str, kind: str, tied: bool = False) -> str:
    """A trainable parameter's key in ``HPARAM_ROWS``."""
    if tied:
        return "tied"
    if kind in ("weight", "embedding") and role in ("input", "output"):
        return role
    lr = hparam_class(role, kind)
    return "fixed" if lr == "input" else lr


@dataclass(frozen=True)
class Card:
    """A tuned set: the base hyperparameters, the learning rate (and weight decay) at base
    width, the rule and base they were tuned under, and what the tuning saw and cost."""

    hparams: HParams
    lr: float | None = None
    weight_decay: float | None = None
    rule: str | None = None
    base: str | None = None  # the base spec, e.g. "GPT(n_embd=64)"
    extra: Mapping[str, Any] = field(default_factory=dict)  # [proxy], [ledger], ...
    path: Path | None = None

    def to_toml(self) -> str:
        """The card as TOML text (strings escaped by the TOML rules; numbers as repr)."""
        lines = ["# muprewrite card: base hyperparameters tuned on a proxy.",
                 "# Read it with muprewrite.apply(..., hparams=\"card.toml\").", ""]
        for key in ("rule", "base"):
            value = getattr(self, key)
            if value is not None:
                lines.append(f"{key} = {_toml_string(value)}")
        for key in ("lr", "weight_decay"):
            value = getattr(self, key)
            if value is not None:
                lines.append(f"{key} = {_toml_number(value)}")
        lines += ["", "[hparams]"]
        lines += [f"{k} = {_toml_number(v)}" for k, v in asdict(self.hparams).items()]
        for table, values in self.extra.items():
            lines += ["", f"[{_toml_key(table)}]"]
            for key, value in values.items():
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    if key.replace("_", "").replace("-", "").isalnum() and key.isascii():
        return key
    return _toml_string(key)


def _toml_string(value: str) -> str:
    out = ['"']
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable() and c not in "\u2028\u2029":
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return "".join(out) + '"'


def _toml_number(value: float | int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"a card holds finite numbers, got {value!r}",
                         fix="report the trial's value as a finite float")
    return repr(value) if isinstance(value, int) else repr(float(value))


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_number(value)


def load_card(path: str | os.PathLike[str]) -> Card:
    """Read a card written by ``muprewrite tune -o card.toml`` (or by hand)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise UsageError(f"cannot read the card {p}: {exc.strerror}",
                         fix="pass the card written by muprewrite tune -o card.toml") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"the card {p} is not a regular file", fix="pass a .toml file")
    if st.st_size > MAX_CARD_BYTES:
        raise UsageError(f"the card {p} is {st.st_size} bytes; a card is at most "
                         f"{MAX_CARD_BYTES}", fix="pass the card written by muprewrite tune")
    try:
        data = tomllib.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"the card {p} is not valid TOML: {exc}",
                         fix="pass the card written by muprewrite tune") from None
    return card_from_dict(data, p)


def card_from_dict(data: Mapping[str, Any], path: Path | None = None) -> Card:
    where = str(path) if path is not None else "the card"
    table = data.get("hparams", {})
    if not isinstance(table, Mapping):
        raise UsageError(f"{where}: [hparams] must be a table", fix="[hparams] then name = value")
    unknown = sorted(set(table) - set(HPARAM_NAMES))
    if unknown:
        raise UsageError(f"{where}: unknown base hyperparameter(s) {', '.join(unknown)}",
                         fix=f"use only {', '.join(HPARAM_NAMES)}")
    hparams = HParams(**table)
    values: dict[str, Any] = {}
    for key in ("lr", "weight_decay"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or value < 0):
            raise UsageError(f"{where}: {key} must be a finite number >= 0, got {value!r}",
                             fix=f"{key} = 0.001")
        values[key] = None if value is None else float(value)
    for key in ("rule", "base"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}: {key} must be a string", fix=f'{key} = "..."')
        values[key] = value
    extra = {k: v for k, v in data.items()
             if k not in ("hparams", "lr", "weight_decay", "rule", "base") and isinstance(v, Mapping)}
    return Card(hparams, extra=extra, path=path, **values)


HParamsLike: TypeAlias = HParams | Card | Mapping[str, Any] | str | os.PathLike[str] | None


def as_hparams(value: HParamsLike, rule: str | None = None) -> HParams:
    """``hparams=`` as the API takes it: an HParams, a Card, a mapping of names to values, or
    a card's path. A card tuned under another rule than ``rule`` is refused."""
    if value is None:
        return HParams()
    if isinstance(value, HParams):
        return value
    if isinstance(value, str | os.PathLike):
        value = load_card(value)
    if isinstance(value, Card):
        if rule is not None and value.rule is not None and value.rule != rule:
            raise MuprewriteError(f"the card {value.path or ''} was tuned under rule "
                                  f"{value.rule!r}, not {rule!r}: its multipliers do not carry "
                                  "over to another rule",
                                  fix=f"pass rule={value.rule!r}, or tune again under {rule!r}")
        return value.hparams
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(HPARAM_NAMES))
        if unknown:
            raise UsageError(f"unknown base hyperparameter(s) {', '.join(map(str, unknown))}",
                             fix=f"use only {', '.join(HPARAM_NAMES)}")
        return HParams(**value)
    raise UsageError(f"hparams must be an HParams, a card path or a mapping, got "
                     f"{type(value).__name__}", fix="hparams=muprewrite.HParams(output_multiplier=2)")


def with_changes(hparams: HParams, **changes: float) -> HParams:
    return replace(hparams, **changes)


def from_option(text: str) -> HParams:
    """The CLI's ``--hparams``: a card's path, or ``name=value`` pairs separated by commas
    (numbers parsed with ``float``, never evaluated).

    >>> from_option("output_multiplier=2, lr_hidden=0.5").changed()
    {'output_multiplier': 2.0, 'lr_hidden': 0.5}
    """
    if text.endswith(".toml") or "=" not in text:
        return load_card(text).hparams
    values: dict[str, float] = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in HPARAM_NAMES:
            raise UsageError(f"--hparams: {part.strip()!r} is not name=value with a base "
                             "hyperparameter's name", fix=f"use {', '.join(HPARAM_NAMES)}, "
                             "e.g. --hparams output_multiplier=2,lr_hidden=0.5, or a card.toml")
        try:
            values[name] = float(value)
        except ValueError:
            raise UsageError(f"--hparams: {value.strip()!r} is not a number",
                             fix=f"--hparams {name}=2.0") from None
    return HParams(**values)
