"""Names from the user's model reach emitted source as data: any text, written as a string
literal or into a comment, parses back to exactly that text and adds no statement."""

from __future__ import annotations

import ast

import libcst as cst
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muprewrite.emit.cst.literals import comment_text, identifier, string, strings_tuple
from muprewrite.emit.errors import EmitError
from muprewrite.emit.plan.entries import Entry
from muprewrite.emit.write.block import render_block
from muprewrite.emit.write.optimizer_block import Training

HOSTILE = ['a"b', "a'b", "a'\"b", "x\\", "\\n", "line\nbreak", "cr\rx", "\x00nul", "\u2028",
           "\u202e", "\x1b[2J", '"""', "'''", "é\U0001f600", "\ud800", "{}", "#", ""]


@settings(max_examples=300, deadline=None)
@given(value=st.text())
def test_string_parses_back_to_the_value(value: str) -> None:
    code = string(value)
    assert "\n" not in code and "\r" not in code
    node = ast.parse(code, mode="eval").body
    assert isinstance(node, ast.Constant) and node.value == value


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings(value: str) -> None:
    assert ast.literal_eval(string(value)) == value
    assert ast.literal_eval(strings_tuple([value])) == (value,)


@settings(max_examples=300, deadline=None)
@given(value=st.text())
def test_comment_text_stays_one_comment(value: str) -> None:
    line = f"x = 1  # {comment_text(value)}\n"
    module = cst.parse_module(line)
    assert len(module.body) == 1 and module.code == line
    assert len(line.splitlines()) == 1


def test_identifier_refuses_code() -> None:
    assert identifier("mup_out_multiplier") == "mup_out_multiplier"
    for bad in ("a b", "x=1", "a\nb", "é"):
        with pytest.raises(EmitError):
            identifier(bad)


@pytest.mark.parametrize("value", HOSTILE)
def test_block_with_hostile_names_is_inert(value: str) -> None:
    """The whole added block, built around a hostile parameter and module name, defines only
    the names it should and maps the name to its entry unchanged."""
    entry = Entry((1,), (0,), (("init", -0.5, 0.0), ("lr", -1.0, 0.0)))
    name = f"blocks.{value}.weight"
    text = render_block(rule="mup", seed=0, base_call="Net()", entries={name: entry},
                        unused=[f"dead.{value}"], multipliers={f"head.{value}": {
                            "mup_head_multiplier": name}}, d_head={}, training=Training(),
                        imports=["import re", "import torch"])
    tree = ast.parse(text)
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name)}
    assert {"MUP_RULE", "MUP_PARAMS", "MUP_UNUSED", "MUP_MULTIPLIERS"} <= assigned
    assert not any(isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                   for node in tree.body)  # no bare call at module level
    params = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "MUP_PARAMS")
    assert ast.literal_eval(params) == {name: ((1,), (0,), {"init": (-0.5, 0.0),
                                                            "lr": (-1.0, 0.0)})}
