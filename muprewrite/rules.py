"""Parametrization rules: declarative TOML files in the top-level ``rules/`` folder.

A rule is an exponent table (the abc-parametrization itself): for each role, the exponents
of ``m_in`` and ``m_out`` that scale, relative to the base width, the init std, the forward
multiplier, the learning rate, Adam's eps and the weight decay. Kind overrides replace a
role's row for parameters of that kind. Nothing is evaluated. :func:`load_rule` resolves
the name (a file in ``rules/`` named like ``[a-z0-9][a-z0-9-]*``, or a path ending in
``.toml``: a custom rule file), refuses a file that is not regular or is over 1 MiB before
reading it, decodes UTF-8, parses with ``tomllib`` and validates every key. Anything wrong
raises a :class:`RuleError` naming the file and the key, with a ``fix``; nothing else.

Custom rule files work wherever a rule is accepted (``--rule path/to/my-rule.toml``,
``muprewrite rules show path/to/my-rule.toml``, ``load_rule(path)``). Format, as the shipped
files; unknown keys are refused at every level, strings hold no control characters:

- top level: ``id`` (the file name without ``.toml``; a shipped rule's id only for that very
  file), ``title`` (one line, <= 200 characters), ``status`` (stable, experimental),
  ``optimizer`` (adam, sgd, muon), ``attention`` (inverse, unchanged),
  ``weight_decay_convention`` (constant-lr-wd, sqrt-width-wd, constant-timescale, constant-wd,
  custom; checked against the exponents, see :func:`expected_weight_decay`), and optionally
  ``weight_decay_coupling`` (coupled: the optimizer decays by lr * weight_decay, as torch's
  AdamW, SGD and Muon do; independent: by weight_decay alone; default coupled) and
  ``vector_weight_decay`` (scaled, default; none: vector-like parameters, i.e. input weights
  and embeddings, readouts, biases and norm gains, get no weight decay);
- ``[muon]`` (``optimizer = "muon"`` only, and required there): ``adjust_lr_fn`` (original,
  match_rms_adamw: the torch.optim.Muon update scaling the rule is derived for), ``lr`` and
  ``weight_decay`` exponents for the hidden 2-D weights Muon steps;
- ``[doc]``: ``what``, ``when``, ``example``, ``known_problems`` (texts; line breaks and tabs
  allowed), ``references`` (a list of one-line strings);
- ``[depth]`` (depth rules only): ``alpha`` in [0, 1], the residual branch multiplier
  m_L^-alpha (x + m_L^-alpha F(x)); without it the rule is width-only and a base of another
  depth is refused;
- ``[role.<role>]`` (input, hidden, output, fixed) and ``[kind.<kind>]`` (weight, bias, norm,
  embedding, table): ``<quantity> = { m_in = x, m_out = y, m_depth = z }`` for quantity in
  init, multiplier, lr, eps, weight_decay; a missing exponent is 0 (factor 1). ``m_depth``
  (m_L = blocks / base blocks) applies to parameters inside residual branches only, and needs
  ``[depth]``.

Exponents are finite numbers with ``|x| <= 4`` (``MAX_EXPONENT``). The shipped rules use
``|x| <= 1``, muP variants in the literature stay within 2; 4 leaves room to experiment and
keeps every factor finite in float64: for m in [2**-20, 2**20] one factor lies in
[2**-160, 2**160], and a product of all ten exponents of a row (the rewrite combines fewer)
in [2**-800, 2**800], inside float64's normal range [2**-1022, 2**1024).

>>> rule = load_rule("mup")
>>> rule.scaling("hidden", "weight").lr.factor(m_in=4.0, m_out=4.0)
0.25
>>> try:
...     load_rule("../../etc/passwd")
... except RuleError as exc:
...     print(exc.message)
'../../etc/passwd' is neither a rule name ([a-z0-9][a-z0-9-]{0,63}) nor a path ending in .toml
"""

from __future__ import annotations

import os
import re
import reprlib
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import MuprewriteError

__all__ = ["RuleError", "Exponents", "Scaling", "Rule", "load_rule", "available_rules",
           "RULES_DIR", "ROLES", "QUANTITIES", "KINDS", "MAX_EXPONENT", "MAX_RULE_BYTES",
           "NAME_PATTERN"]

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
ROLES = ("input", "hidden", "output", "fixed")
KINDS = ("weight", "bias", "norm", "embedding", "table")
QUANTITIES = ("init", "multiplier", "lr", "eps", "weight_decay")
MAX_EXPONENT = 4
MAX_RULE_BYTES = 1 << 20
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_CHOICES = {
    "status": ("stable", "experimental"),
    "optimizer": ("adam", "sgd", "muon"),
    "attention": ("inverse", "unchanged"),
    "weight_decay_convention": ("constant-lr-wd", "sqrt-width-wd", "constant-timescale",
                                "constant-wd", "custom"),
}
# optional top-level choices: the first is the default
_OPTIONAL = {
    "weight_decay_coupling": ("coupled", "independent"),
    "vector_weight_decay": ("scaled", "none"),
}
MUON_ADJUST = ("original", "match_rms_adamw")
_TOP_KEYS = ("id", "title", *_CHOICES, *_OPTIONAL, "doc", "depth", "muon", "role", "kind")
_AXES = ("m_in", "m_out", "m_depth")
MAX_ALPHA = 1.0
_DOC_KEYS = ("what", "when", "example", "known_problems", "references")
_CONTROL = r"\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_BAD_CHAR = {True: re.compile(f"[{_CONTROL}]"), False: re.compile(f"[{_CONTROL}\t\n]")}
_SHORT = reprlib.Repr()  # bounded reprs of hostile values in messages
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 2, 60, 60, 4, 4


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


def available_rules(directory: Path = RULES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_rule(name: str | Path, directory: Path = RULES_DIR) -> Rule:
    """Load ``rules/<name>.toml`` (or a path to a .toml file) and validate every key."""
    path = _resolve(name, directory)
    rule = _parse(_toml(_read_bytes(path, name, directory), _shown(path)), path)
    _check_unique(rule, directory)
    return rule


def _shown(path: Path | str) -> str:
    return str(path) if str(path).isprintable() else ascii(str(path))


def _others(directory: Path) -> str:
    names = [n for n in available_rules(directory) if NAME_PATTERN.fullmatch(n)]
    return f"one of: {', '.join(names)}, or a path to a rule file ending in .toml"


def _resolve(name: str | Path, directory: Path) -> Path:
    """A rule name from ``directory`` (matching NAME_PATTERN), or a path ending in .toml."""
    if isinstance(name, Path) or str(name).endswith(".toml"):
        path = Path(name)
        if path.suffix != ".toml" or not NAME_PATTERN.fullmatch(path.stem):
            raise RuleError(f"{_shown(path)}: a rule file is named <id>.toml, with the id "
                            f"matching {NAME_PATTERN.pattern}", where=_shown(path),
                            fix=f"rename it, e.g. to {_shown(path.with_name('my-rule.toml'))} "
                                'with id = "my-rule"')
        return path
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RuleError(f"{_SHORT.repr(name)} is neither a rule name ({NAME_PATTERN.pattern}) "
                        "nor a path ending in .toml", where="rule name",
                        fix=_others(directory))
    return directory / f"{name}.toml"


def _read_bytes(path: Path, name: str | Path, directory: Path) -> bytes:
    """The file's bytes; a non-regular or huge file is refused before it is read."""
    shown = _shown(path)
    try:
        info = os.stat(path)
        _check_file(info.st_mode, info.st_size, shown)
        # O_NONBLOCK: a file swapped for a FIFO after the stat cannot block the open
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:
            info = os.fstat(fh.fileno())
            _check_file(info.st_mode, info.st_size, shown)
            raw = fh.read(MAX_RULE_BYTES + 1)
    except FileNotFoundError:
        raise RuleError(f"no rule {_SHORT.repr(str(name))}", where=shown,
                        fix=_others(directory)) from None
    except (OSError, ValueError) as exc:
        raise RuleError(f"cannot read {shown}: {getattr(exc, 'strerror', None) or exc}",
                        where=shown, fix="pass the path of a readable rule file") from None
    _check_file(stat.S_IFREG, len(raw), shown)  # it may have grown since the stat
    return raw


def _check_file(mode: int, size: int, shown: str) -> None:
    if not stat.S_ISREG(mode):
        raise RuleError(f"{shown} is not a regular file", where=shown,
                        fix="pass the path of a rule file (a .toml text file)")
    if size > MAX_RULE_BYTES:
        raise RuleError(f"{shown} is over {MAX_RULE_BYTES} bytes, too large for a rule file",
                        where=shown, fix="a rule file is a short table (the shipped ones are "
                                         "under 2 KiB): check that the path names one")


def _toml(raw: bytes, shown: str) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RuleError(f"{shown}: not UTF-8: byte {exc.start} (line {line}) is "
                        f"{raw[exc.start:exc.start + 1]!r}", where=f"{shown}:{line}",
                        fix="save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{shown}: not valid TOML: {exc}", where=shown,
                        fix="correct the TOML syntax at the line and column given") from None
    except RecursionError:
        raise RuleError(f"{shown}: not valid TOML: arrays or tables nested too deeply",
                        where=shown, fix="a rule file nests two levels deep at most, as in "
                                         "[role.hidden] lr = { m_in = -1 }") from None


def _error(path: Path, key: str, problem: str, fix: str) -> RuleError:
    return RuleError(f"{_shown(path)}: key {_SHORT.repr(key)}: {problem}",
                     where=f"{_shown(path)}: {_SHORT.repr(key)}", fix=fix)


def _fail(path: Path, key: str, expected: str, got: Any, fix: str) -> RuleError:
    return _error(path, key, f"expected {expected}, got {type(got).__name__} "
                             f"{_SHORT.repr(got)}", fix)


def _known(path: Path, prefix: str, table: dict[str, Any], what: str,
           allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise _error(path, prefix + key, f"unknown key: expected {what} in {list(allowed)}",
                         f"remove it or correct its spelling ({', '.join(allowed)})")


def _table(path: Path, key: str, value: Any, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, key, "a table", value, f"write it as a table, e.g. {example}")
    return value


def _text(path: Path, key: str, value: Any, multiline: bool, limit: int = MAX_RULE_BYTES) -> str:
    if not isinstance(value, str) or (not multiline and not value.strip()):
        raise _fail(path, key, "a string" if multiline else "a non-empty one-line string",
                    value, f'write {key} = "..."')
    if len(value) > limit:
        raise _error(path, key, f"{len(value)} characters, over {limit}", "shorten it")
    bad = _BAD_CHAR[multiline].search(value)
    if bad:
        raise _error(path, key, f"control character {bad.group()!r} at offset {bad.start()}",
                     "remove it" + ("" if multiline else "; this text is one line"))
    return value


def _parse(data: dict[str, Any], path: Path) -> Rule:
    _known(path, "", data, "a top-level key", _TOP_KEYS)
    if data.get("id") != path.stem:
        raise _fail(path, "id", f"the file's stem {path.stem!r}", data.get("id"),
                    f'set id = "{path.stem}"' + (f", or rename the file to {data['id']}.toml"
                                                 if isinstance(data.get("id"), str)
                                                 and NAME_PATTERN.fullmatch(data["id"]) else ""))
    title = _text(path, "title", data.get("title"), multiline=False, limit=200)
    for key, choices in _CHOICES.items():
        if data.get(key) not in choices:
            raise _fail(path, key, f"one of {list(choices)}", data.get(key),
                        f'write {key} = "{choices[0]}" (or: {", ".join(choices[1:])})')
    optional = {}
    for key, choices in _OPTIONAL.items():
        optional[key] = data.get(key, choices[0])
        if optional[key] not in choices:
            raise _fail(path, key, f"one of {list(choices)}", optional[key],
                        f'write {key} = "{choices[0]}" (or: {", ".join(choices[1:])})')
    roles = _rows(data.get("role", {}), ROLES, "role", path)
    kinds = _rows(data.get("kind", {}), KINDS, "kind", path)
    rule = Rule(data["id"], title, data["status"], data["optimizer"], data["attention"],
                data["weight_decay_convention"], MappingProxyType(roles), MappingProxyType(kinds),
                MappingProxyType(_doc(data.get("doc"), path)), path,
                _depth(data.get("depth"), path), **optional,
                muon=_muon(data.get("muon"), data["optimizer"], path))
    _check_weight_decay(rule)
    _check_depth(rule)
    return rule


def _depth(table: Any, path: Path) -> float | None:
    """``[depth] alpha = x``: the residual branch multiplier m_L^-alpha (0 <= alpha <= 1)."""
    if table is None:
        return None
    table = _table(path, "depth", table, "[depth] alpha = 1")
    _known(path, "depth.", table, "a depth key", ("alpha",))
    alpha = table.get("alpha")
    fix = "write alpha = 1 (CompleteP) or alpha = 0.5 (depth-muP)"
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise _fail(path, "depth.alpha", "a number", alpha, fix)
    if not 0 <= alpha <= MAX_ALPHA:
        raise _fail(path, "depth.alpha", f"a number from 0 to {MAX_ALPHA:g}", alpha, fix)
    return float(alpha)


def _muon(table: Any, optimizer: str, path: Path) -> MuonRow | None:
    """``[muon]``: required under ``optimizer = "muon"``, refused under any other."""
    example = '[muon] adjust_lr_fn = "original", lr = {}, weight_decay = {}'
    if optimizer != "muon":
        if table is not None:
            raise _error(path, "muon", f"a [muon] section needs optimizer = \"muon\", not "
                         f"{optimizer!r}", 'remove [muon], or set optimizer = "muon"')
        return None
    if table is None:
        raise _error(path, "muon", "optimizer \"muon\" needs a [muon] section", f"add {example}")
    table = _table(path, "muon", table, example)
    _known(path, "muon.", table, "a muon key", ("adjust_lr_fn", "lr", "weight_decay"))
    if table.get("adjust_lr_fn") not in MUON_ADJUST:
        raise _fail(path, "muon.adjust_lr_fn", f"one of {list(MUON_ADJUST)}",
                    table.get("adjust_lr_fn"), 'write adjust_lr_fn = "original" (Muon\'s '
                    'default, also adjust_lr_fn=None) or "match_rms_adamw"')
    rows = {}
    for quantity in ("lr", "weight_decay"):
        rows[quantity] = _exponents(path, f"muon.{quantity}", table.get(quantity, {}))
    return MuonRow(table["adjust_lr_fn"], rows["lr"], rows["weight_decay"])


def _check_depth(rule: Rule) -> None:
    """m_depth exponents mean nothing without a residual multiplier: a base of another depth
    is only matched under a rule with a [depth] section. With one, two kinds of them would
    never be applied, so they are refused rather than shown by ``rules show`` and dropped:
    on a forward ``multiplier`` (the residual branch multiplier m_L^-alpha is depth's forward
    factor) and on ``[role.output]`` (the readout reads the stream after the last block;
    m_L is 1 outside residual branches)."""
    for prefix, table in (("role", rule.roles), ("kind", rule.kinds)):
        for name, scaling in table.items():
            if scaling.multiplier.m_depth:
                raise _error(rule.path, f"{prefix}.{name}.multiplier.m_depth",
                             "forward multipliers take no depth factor (apply and the emitted "
                             "source never apply it); depth scales the forward pass through "
                             "the residual branch multiplier m_L^-alpha",
                             "remove m_depth from the multiplier, and set [depth] alpha (or "
                             "the branch_multiplier base hyperparameter) instead")
    output = rule.roles.get("output")
    for quantity in QUANTITIES if output is not None else ():
        if getattr(output, quantity).m_depth:
            raise _error(rule.path, f"role.output.{quantity}.m_depth",
                         "output parameters (the readout) lie outside the residual branches, "
                         "where m_L is 1: this exponent would never be applied",
                         "remove it; m_depth exponents act on parameters inside residual "
                         "branches (role input / hidden / fixed, kind bias / norm)")
    if rule.has_depth:
        return
    muon = {"muon": rule.muon} if rule.muon is not None else {}
    for prefix, rows in (("role", rule.roles), ("kind", rule.kinds), ("", muon)):
        for name, row in rows.items():
            for quantity in (("lr", "weight_decay") if prefix == "" else QUANTITIES):
                if getattr(row, quantity).m_depth:
                    raise _error(rule.path, f"{prefix}.{name}.{quantity}.m_depth".lstrip("."),
                                 "m_depth exponents need a [depth] section",
                                 "add [depth] alpha = ... (the residual branch multiplier "
                                 "m_L^-alpha), or remove m_depth")


def _rows(table: Any, names: tuple[str, ...], prefix: str, path: Path) -> dict[str, Scaling]:
    rows, table = {}, _table(path, prefix, table, f"[{prefix}.{names[1]}]")
    _known(path, f"{prefix}.", table, f"a {prefix}", names)
    for name, row in table.items():
        values, row = {}, _table(path, f"{prefix}.{name}", row, "lr = { m_in = -1 }")
        _known(path, f"{prefix}.{name}.", row, "a quantity", QUANTITIES)
        for quantity, exps in row.items():
            key = f"{prefix}.{name}.{quantity}"
            values[quantity] = _exponents(path, key, exps)
        rows[name] = Scaling(**values)
    return rows


def _exponents(path: Path, key: str, table: Any) -> Exponents:
    """``{ m_in = x, m_out = y, m_depth = z }`` at ``key``; a missing axis is 0."""
    table = _table(path, key, table, "{m_in = number, m_out = number}")
    _known(path, f"{key}.", table, "an axis", _AXES)
    return Exponents(*(_exponent(path, f"{key}.{axis}", table.get(axis, 0)) for axis in _AXES))


def _exponent(path: Path, key: str, value: Any) -> float:
    fix = f"write a number from -{MAX_EXPONENT} to {MAX_EXPONENT}, e.g. {key.split('.')[-1]} = -0.5"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, key, "a number", value, fix)
    if not -MAX_EXPONENT <= value <= MAX_EXPONENT:  # also refuses nan and inf
        raise _fail(path, key, f"a finite exponent with |x| <= {MAX_EXPONENT}", value, fix)
    return float(value)


def _doc(doc: Any, path: Path) -> dict[str, Any]:
    doc = _table(path, "doc", doc, "[doc] with what/when/example/known_problems/references")
    _known(path, "doc.", doc, "a doc key", _DOC_KEYS)
    for key in _DOC_KEYS[:-1]:
        _text(path, f"doc.{key}", doc.get(key), multiline=True)
    references = doc.get("references")
    if not isinstance(references, list):
        raise _fail(path, "doc.references", "a list of strings", references,
                    'write doc.references = ["Author, Title, year"]')
    for i, ref in enumerate(references):
        _text(path, f"doc.references[{i}]", ref, multiline=False)
    return {key: doc[key] for key in _DOC_KEYS}


def _rows_with_lr(rule: Rule) -> list[tuple[str, Exponents, Exponents]]:
    """(key, lr, weight_decay) of every row, the [muon] row included."""
    rows = [(f"{prefix}.{name}.weight_decay", row.lr, row.weight_decay)
            for prefix, table in (("role", rule.roles), ("kind", rule.kinds))
            for name, row in table.items()]
    if rule.muon is not None:
        rows.append(("muon.weight_decay", rule.muon.lr, rule.muon.weight_decay))
    return rows


def _scaled(exps: Exponents, by: float) -> Exponents:
    return Exponents(exps.m_in * by + 0.0, exps.m_out * by + 0.0, exps.m_depth * by + 0.0)


def expected_weight_decay(rule: Rule, lr: Exponents) -> Exponents | None:
    """The weight-decay exponents the rule's convention and coupling imply for a row with
    these lr exponents (None: "custom", anything goes).

    The per-step decay of a parameter is lr*wd (coupled: torch's AdamW and Muon) or wd
    (independent). "constant-lr-wd" and "constant-timescale" keep the per-step decay, and so
    the EMA timescale 1/(lr*wd), as at base; "sqrt-width-wd" lets the per-step decay follow
    the square root of lr's factor (where lr ~ 1/m: coupled wd ~ sqrt(m)); "constant-wd"
    keeps wd itself."""
    convention = rule.weight_decay_convention
    if convention == "custom":
        return None
    if convention == "constant-wd":
        return Exponents()
    decay = Exponents() if convention in ("constant-lr-wd", "constant-timescale") else _scaled(lr, 0.5)
    if rule.weight_decay_coupling == "independent":
        return decay
    return Exponents(decay.m_in - lr.m_in + 0.0, decay.m_out - lr.m_out + 0.0,
                     decay.m_depth - lr.m_depth + 0.0)


def _check_weight_decay(rule: Rule) -> None:
    """The declared convention must hold for every row (it is a claim, so check it)."""
    for key, lr, wd in _rows_with_lr(rule):
        want = expected_weight_decay(rule, lr)
        if want is not None and wd != want:
            depth = f", m_depth = {want.m_depth:g}" if want.m_depth else ""
            raise _error(rule.path, key, f"weight_decay_convention "
                         f"{rule.weight_decay_convention!r} with {rule.weight_decay_coupling} "
                         f"weight decay needs weight_decay = {want} (lr is {lr}, weight_decay "
                         f"is {wd})",
                         f"set weight_decay = {{ m_in = {want.m_in:g}, m_out = {want.m_out:g}"
                         f"{depth} }}, or weight_decay_convention = \"custom\"")


def _check_unique(rule: Rule, directory: Path) -> None:
    """A custom file may not take a shipped rule's id: emitted files record only the id."""
    shipped = directory / f"{rule.id}.toml"
    try:
        clash = shipped.is_file() and not os.path.samefile(rule.path, shipped)
    except OSError:
        clash = False
    if clash:
        raise _error(rule.path, "id", f"{rule.id!r} is the id of the shipped rule {shipped}",
                     f'rename the file and its id, e.g. {rule.id}-custom.toml with id = '
                     f'"{rule.id}-custom"')
