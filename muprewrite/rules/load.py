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
import stat
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .checks import check_depth, check_unique, check_weight_decay
from .rule import (
    KINDS,
    MAX_EXPONENT,
    MAX_RULE_BYTES,
    NAME_PATTERN,
    QUANTITIES,
    ROLES,
    RULES_DIR,
    SHORT,
    Exponents,
    MuonRow,
    Rule,
    RuleError,
    Scaling,
    error_at,
    shown,
)

__all__ = ["load_rule", "available_rules"]

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



def available_rules(directory: Path = RULES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_rule(name: str | Path, directory: Path = RULES_DIR) -> Rule:
    """Load ``rules/<name>.toml`` (or a path to a .toml file) and validate every key."""
    path = _resolve(name, directory)
    rule = _parse(_toml(_read_bytes(path, name, directory), shown(path)), path)
    check_unique(rule, directory)
    return rule


def _others(directory: Path) -> str:
    names = [n for n in available_rules(directory) if NAME_PATTERN.fullmatch(n)]
    return f"one of: {', '.join(names)}, or a path to a rule file ending in .toml"


def _resolve(name: str | Path, directory: Path) -> Path:
    """A rule name from ``directory`` (matching NAME_PATTERN), or a path ending in .toml."""
    if isinstance(name, Path) or str(name).endswith(".toml"):
        path = Path(name)
        if path.suffix != ".toml" or not NAME_PATTERN.fullmatch(path.stem):
            raise RuleError(f"{shown(path)}: a rule file is named <id>.toml, with the id "
                            f"matching {NAME_PATTERN.pattern}", where=shown(path),
                            fix=f"rename it, e.g. to {shown(path.with_name('my-rule.toml'))} "
                                'with id = "my-rule"')
        return path
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RuleError(f"{SHORT.repr(name)} is neither a rule name ({NAME_PATTERN.pattern}) "
                        "nor a path ending in .toml", where="rule name",
                        fix=_others(directory))
    return directory / f"{name}.toml"


def _read_bytes(path: Path, name: str | Path, directory: Path) -> bytes:
    """The file's bytes; a non-regular or huge file is refused before it is read."""
    where = shown(path)
    try:
        info = os.stat(path)
        _check_file(info.st_mode, info.st_size, where)
        # O_NONBLOCK: a file swapped for a FIFO after the stat cannot block the open
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:
            info = os.fstat(fh.fileno())
            _check_file(info.st_mode, info.st_size, where)
            raw = fh.read(MAX_RULE_BYTES + 1)
    except FileNotFoundError:
        raise RuleError(f"no rule {SHORT.repr(str(name))}", where=where,
                        fix=_others(directory)) from None
    except (OSError, ValueError) as exc:
        raise RuleError(f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}",
                        where=where, fix="pass the path of a readable rule file") from None
    _check_file(stat.S_IFREG, len(raw), where)  # it may have grown since the stat
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


def _fail(path: Path, key: str, expected: str, got: Any, fix: str) -> RuleError:
    return error_at(path, key, f"expected {expected}, got {type(got).__name__} "
                             f"{SHORT.repr(got)}", fix)


def _known(path: Path, prefix: str, table: dict[str, Any], what: str,
           allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise error_at(path, prefix + key, f"unknown key: expected {what} in {list(allowed)}",
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
        raise error_at(path, key, f"{len(value)} characters, over {limit}", "shorten it")
    bad = _BAD_CHAR[multiline].search(value)
    if bad:
        raise error_at(path, key, f"control character {bad.group()!r} at offset {bad.start()}",
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
    check_weight_decay(rule)
    check_depth(rule)
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
            raise error_at(path, "muon", f"a [muon] section needs optimizer = \"muon\", not "
                         f"{optimizer!r}", 'remove [muon], or set optimizer = "muon"')
        return None
    if table is None:
        raise error_at(path, "muon", "optimizer \"muon\" needs a [muon] section", f"add {example}")
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
