"""Hostile rule files: every bad input ends in a RuleError that names the file and the key and
carries a fix, never another exception; a fuzz test checks that over random documents.

The fuzz test follows the project's hypothesis profiles (conftest.py: ``ci`` by default,
``thorough`` with HYPOTHESIS_PROFILE=thorough), with a 1 s deadline per load.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from muprewrite import rules
from muprewrite.cli.main import cli
from muprewrite.rules import (
    KINDS,
    MAX_EXPONENT,
    MAX_RULE_BYTES,
    QUANTITIES,
    ROLES,
    RULES_DIR,
    Exponents,
    Rule,
    RuleError,
    load_rule,
)

MUP = (RULES_DIR / "mup.toml").read_text()
CUSTOM = MUP.replace('id = "mup"', 'id = "custom"')


def _refused(path: Path | str, *needles: str) -> RuleError:
    with pytest.raises(RuleError) as info:
        load_rule(path)
    error, text = info.value, str(info.value)
    assert error.fix and error.where, text
    for needle in (str(path), *needles):
        assert needle in text, (needle, text)
    return error


def _write(tmp_path: Path, text: str | bytes, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# ---- each bad case names file and key, with a fix -----------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan", "1e308", "-1e999", "4.5",
                                   "99999999999999999999999999", "true", '"-1"', "[1]"])
def test_bad_exponent_is_refused(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, CUSTOM.replace("lr = { m_in = -1 }", f"lr = {{ m_in = {value} }}"))
    _refused(path, "'role.hidden.lr.m_in'", "expected")


@pytest.mark.parametrize(("edit", "key"), [
    (lambda s: s.replace("[doc]", "[doc]\nwhat_else = 'x'"), "'doc.what_else'"),
    (lambda s: s.replace("[doc]", "colour = 'red'\n[doc]"), "'colour'"),
    (lambda s: s.replace("lr = { m_in = -1 }", "lr = { m_in = -1, m_inn = 2 }"),
     "'role.hidden.lr.m_inn'"),
    (lambda s: s.replace("lr = { m_in = -1 }", "lr = { m_in = -1 }\nlr2 = { m_in = -1 }"),
     "'role.hidden.lr2'"),
    (lambda s: s + "\n[kind.gain]\nlr = { m_in = 1 }\n", "'kind.gain'"),
    (lambda s: s.replace("lr = { m_in = -1 }", "lr = { m_in = { m_in = -1 } }"),
     "'role.hidden.lr.m_in'"),
    (lambda s: s.replace("[role.output]", "[role]\noutput = 3\n[kind.bias]"), "'role.output'"),
    (lambda s: s.split("[role.hidden]")[0].replace("[doc]", "role = 1\n[doc]"), "'role'"),
    (lambda s: s.replace("[role.hidden]", "[role.hidden]\nkind = []"), "'role.hidden.kind'"),
    (lambda s: s.replace('references = [', 'references = [3, '), "'doc.references[0]'"),
    (lambda s: s.replace('title = "muP', 'title = "\\u001b[2JmuP'), "'title'"),
    (lambda s: s.replace('title = "muP', 'title = "line\\nbreak'), "'title'"),
    (lambda s: s.replace('title = "muP', 'title = "' + "x" * 300), "'title'"),
    (lambda s: s.replace('when = "', 'when = "\\u202e'), "'doc.when'"),
    (lambda s: s.replace('status = "stable"', 'status = nan'), "'status'"),
    (lambda s: s.replace('id = "custom"', 'id = 7'), "'id'"),
])
def test_unknown_or_malformed_key_is_refused(tmp_path: Path, edit, key: str) -> None:  # type: ignore[no-untyped-def]
    _refused(_write(tmp_path, edit(CUSTOM)), key)


def test_id_must_be_the_file_stem(tmp_path: Path) -> None:
    error = _refused(_write(tmp_path, CUSTOM, "mine.toml"), "'id'", "stem 'mine'")
    assert 'id = "mine"' in error.fix and "custom.toml" in error.fix


def test_shipped_id_is_taken_by_the_shipped_file_only(tmp_path: Path) -> None:
    error = _refused(_write(tmp_path, MUP, "mup.toml"), "'id'", "shipped")
    assert "mup-custom" in error.fix
    assert load_rule(RULES_DIR / "mup.toml").id == "mup"  # the shipped file by its path


def test_non_utf8_is_refused_with_the_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, CUSTOM.encode().replace(b"Every factor", b"Every \xff\xfe factor"))
    error = _refused(path, "not UTF-8", "line")
    assert "UTF-8" in error.fix


@pytest.mark.parametrize("text", ['title = "', 'id = "a"\nid = "a"', "a = " + "[" * 5000,
                                  "a = " + "{b=" * 3000 + "1" + "}" * 3000, "\0"])
def test_invalid_toml_is_refused(tmp_path: Path, text: str) -> None:
    _refused(_write(tmp_path, text), "not valid TOML")


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = _write(tmp_path, CUSTOM + "#" * MAX_RULE_BYTES)
    _refused(path, "too large")


def test_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    _refused(tmp_path / "dir.toml", "not a regular file")
    if hasattr(os, "mkfifo"):  # opening a FIFO would block: it must be refused first
        os.mkfifo(tmp_path / "fifo.toml")
        _refused(tmp_path / "fifo.toml", "not a regular file")


@pytest.mark.parametrize("name", ["../../etc/passwd", "../rules/mup", "Mup", "", "mup\n",
                                  "a b", "-x", "mup.TOML", "x" * 100, "\x1b[2J"])
def test_rule_name_must_match_the_safe_pattern(name: str) -> None:
    with pytest.raises(RuleError) as info:
        load_rule(name)
    assert "neither a rule name" in info.value.message and "one of: completep, depth-mup, mup," in info.value.fix


@pytest.mark.parametrize("name", ["My Rule.toml", ".toml", "UPPER.toml", "a/b\x00c.toml"])
def test_rule_file_name_must_be_a_valid_id(name: str) -> None:
    with pytest.raises(RuleError) as info:
        load_rule(name)
    assert "<id>.toml" in info.value.message and "my-rule" in info.value.fix


def test_missing_or_unreadable_path(tmp_path: Path) -> None:
    _refused(tmp_path / "nope.toml", "no rule")
    _refused(tmp_path / "file" / "x.toml", "no rule")
    _write(tmp_path, "", "file")
    _refused(tmp_path / "file" / "x.toml", "cannot read")


def test_valid_custom_rule_loads_and_shows(tmp_path: Path) -> None:
    path = _write(tmp_path, CUSTOM.replace("lr = { m_in = -1 }\nweight_decay = { m_in = 1 }",
                                           "lr = { m_in = -4 }\nweight_decay = { m_in = 4 }"))
    rule = load_rule(path)
    assert rule.id == "custom" and rule.scaling("hidden", "weight").lr == Exponents(-4.0, 0.0)
    shown = CliRunner().invoke(cli, ["rules", "show", str(path)])
    assert shown.exit_code == 0 and "role hidden  m_in^-0.5" in shown.output, shown.output


def test_rules_list_survives_invalid_files(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "RULES_DIR", tmp_path)
    empty = CliRunner().invoke(cli, ["rules", "list"])
    assert empty.exit_code == 1 and "no rule files" in empty.output
    _write(tmp_path, MUP, "mup.toml")
    _write(tmp_path, MUP.replace("[doc]", "[doc]\nx = 1"), "broken.toml")
    _write(tmp_path, b"\xff\xfe", "latin.toml")
    _write(tmp_path, MUP, "Bad Name.toml")
    (tmp_path / "dir.toml").mkdir()
    listed = CliRunner().invoke(cli, ["rules", "list"])
    assert listed.exit_code == 0 and listed.exception is None, listed.output
    lines = {line.split()[0]: line for line in listed.output.splitlines()}
    assert "stable" in lines["mup"]
    for name in ("broken", "latin", "Bad", "dir"):
        assert "invalid" in lines[name] and "fix:" in lines[name], listed.output


# ---- factors at the extremes of the bound ---------------------------------------------------

WIDTH_MULTIPLIERS = (2.0 ** -20, 1 / 64, 1.0, 3.0, 2.0 ** 20)


def _assert_finite(rule: Rule) -> None:
    for row in [*(rule.scaling(role, "-") for role in ROLES), *rule.kinds.values()]:
        for quantity in QUANTITIES:
            exps = getattr(row, quantity)
            for m_in in WIDTH_MULTIPLIERS[1:]:
                for m_out in WIDTH_MULTIPLIERS[1:]:
                    value = exps.factor(m_in, m_out)
                    assert math.isfinite(value) and value > 0, (quantity, exps, m_in, m_out)


@pytest.mark.parametrize("m_in", WIDTH_MULTIPLIERS)
@pytest.mark.parametrize("m_out", WIDTH_MULTIPLIERS)
def test_factor_is_finite_at_the_bound(m_in: float, m_out: float) -> None:
    for e_in in (-MAX_EXPONENT, MAX_EXPONENT):
        for e_out in (-MAX_EXPONENT, MAX_EXPONENT):
            value = Exponents(e_in, e_out).factor(m_in, m_out)
            assert math.isfinite(value) and sys.float_info.min < value
            # the product of all ten exponents of a row stays finite too
            assert math.isfinite(Exponents(5 * e_in, 5 * e_out).factor(m_in, m_out))


# ---- fuzz: random documents are a Rule or a RuleError ---------------------------------------

VALID = tomllib.loads(CUSTOM.replace('id = "custom"', 'id = "fuzz"'))
NAMES = sorted({*VALID, *VALID["doc"], *ROLES, *KINDS, *QUANTITIES, "m_in", "m_out", "role",
                "kind", "fuzz"})
keys = st.sampled_from(NAMES) | st.text(max_size=12)
scalars = (st.floats() | st.integers() | st.text(max_size=20) | st.booleans()
           | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324,
                              MAX_EXPONENT, -MAX_EXPONENT, 4.000001, 10 ** 30, -(2 ** 63)]))
garbage = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(keys, inner, max_size=4), max_leaves=12)
exponents = st.floats(-MAX_EXPONENT, MAX_EXPONENT) | st.integers(-MAX_EXPONENT, MAX_EXPONENT)
valid_rows = st.dictionaries(st.sampled_from(QUANTITIES), st.fixed_dictionaries(
    {}, optional={"m_in": exponents, "m_out": exponents}), max_size=5)
exponent_tables = st.dictionaries(st.sampled_from(["m_in", "m_out"]) | keys, exponents | garbage,
                                  max_size=2)
rows = st.dictionaries(st.sampled_from(QUANTITIES) | keys, exponent_tables | garbage, max_size=5)


def _toml_string(text: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}"
                      for c in text)
    return f'"{escaped}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def rule_documents(draw: st.DrawFn) -> dict[str, Any]:
    """The valid structure with random rows; half of them with random keys and values set or
    deleted anywhere."""
    data = {**copy.deepcopy(VALID), "weight_decay_convention": draw(st.sampled_from(
        ["custom", "custom", "constant-lr-wd", "constant-wd"]))}
    hostile = draw(st.booleans())
    for prefix, names in (("role", ROLES), ("kind", KINDS)):
        data[prefix] = draw(st.dictionaries(st.sampled_from(names) | keys, rows | garbage,
                                            max_size=3) | garbage if hostile else
                            st.dictionaries(st.sampled_from(names), valid_rows, max_size=3))
    for _ in range(draw(st.integers(1, 3)) if hostile else 0):
        table, key = data, draw(keys)
        while isinstance(table.get(key), dict) and table[key] and draw(st.booleans()):
            table, key = table[key], draw(st.sampled_from(sorted(table[key])) | keys)
        if draw(st.booleans()):
            table.pop(key, None)
        else:
            table[key] = draw(garbage)
    return data


@st.composite
def rule_files(draw: st.DrawFn) -> bytes:
    """A document as TOML text, sometimes with random bytes spliced in, or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    text = _serialized(draw(rule_documents()), tables=draw(st.booleans())).encode()
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    return text


def _serialized(data: dict[str, Any], tables: bool = False, prefix: tuple[str, ...] = ()) -> str:
    """TOML text: tables as inline tables, or as [a.b] sections when ``tables``."""
    section = [tables and isinstance(v, dict) for v in data.values()]
    return "\n".join([f"{_toml_string(k)} = {_toml_value(v)}"
                      for (k, v), s in zip(data.items(), section) if not s]
                     + [f"[{'.'.join(map(_toml_string, (*prefix, k)))}]\n"
                        + _serialized(v, True, (*prefix, k))
                        for (k, v), s in zip(data.items(), section) if s])


def _load(content: bytes) -> Rule | RuleError:
    """Load ``content`` from a file: a Rule with finite factors, or a complete RuleError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_bytes(content)
        try:
            rule = load_rule(path)
        except RuleError as exc:
            assert exc.fix and exc.where and str(path) in str(exc), str(exc)
            return exc
    _assert_finite(rule)
    return rule


@pytest.mark.properties
@settings(deadline=1000)
@given(content=rule_files())
def test_any_file_is_a_rule_or_a_rule_error(content: bytes) -> None:
    _load(content)


@pytest.mark.properties
@settings(deadline=1000)
@given(data=rule_documents())
def test_any_document_is_a_rule_or_a_rule_error(data: dict[str, Any]) -> None:
    _load(_serialized(data).encode())
