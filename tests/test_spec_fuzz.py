"""Fuzzing the spec grammar: random expressions, hostile pieces included.

Each drawn text goes through ``build_model`` (``--model``) and ``parse_inputs`` (``--inputs``)
in a folder holding a sentinel file. Allowed outcomes: a model / inputs, or a
MuprewriteError. Never another exception, never code run (the sentinel stays, nothing new
appears), and every call ends well within hypothesis' 1 s deadline.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muprewrite.errors import MuprewriteError
from muprewrite.spec import build_model, load_module, parse_inputs

pytestmark = pytest.mark.properties

TARGET = '''import os
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=8, scale=1.0, name="n", sizes=(1,), opts=None):
        super().__init__()
        self.inp = nn.Linear(4, int(width))
        self.out = nn.Linear(int(width), 2)


def config(**kw):
    return dict(kw)
'''

_ATOMS = st.sampled_from([
    "Net", "config", "torch", "os", "nn", "__import__", "exec", "eval", "open", "builtins",
    "Net.__init__", "torch.os.remove", "os.system", "nn.Linear", "__builtins__", "getattr",
    "0", "1", "-1", "8", "2**62", "2**63", "9**64", "10**400", "1e308", "1e400", "0.5", "-0.0",
    "'sentinel.txt'", "'pwned'", "None", "True", "[]", "{}", "()", "x", "width", "float",
    "int", "lambda: 1", "f'{1}'", "...", "b'x'", "1j", "{1, 2}"])
_OPS = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "<<", "and", "==", "@", "|"])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    if depth == 0:
        return draw(_ATOMS)
    kind = draw(st.integers(0, 7))
    inner = expressions(depth=depth - 1)
    if kind == 0:
        return draw(_ATOMS)
    if kind == 1:
        return f"({draw(inner)} {draw(_OPS)} {draw(inner)})"
    if kind == 2:
        return f"{draw(inner)}.{draw(st.sampled_from(['os', '__class__', 'remove', 'x', '__globals__']))}"
    if kind == 3:
        return f"{draw(inner)}[{draw(inner)}]"
    if kind == 4:
        return f"[{draw(inner)}, *{draw(inner)}]"
    args = draw(st.lists(inner, max_size=3))
    kwargs = draw(st.lists(st.tuples(st.sampled_from(["width", "scale", "name", "opts"]),
                                     inner), max_size=3))
    splat = draw(st.sampled_from(["", ", *[8]", ", **{'width': 8}"]))
    parts = args + [f"{k}={v}" for k, v in kwargs]
    callee = draw(st.sampled_from(["Net", "config", "float", "int", "torch.os.remove", "exec",
                                   "__import__", "open", "Net.__init__"]))
    return f"{callee}({', '.join(parts)}{splat})"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "fuzz_target.py").write_text(TARGET)
    (folder / "sentinel.txt").write_text("here\n")
    return load_module(folder / "fuzz_target.py"), folder


def _check_untouched(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir() if p.name != "__pycache__")
    assert names == ["fuzz_target.py", "sentinel.txt"], names


@settings(deadline=1000)
@given(text=expressions())
def test_model_specs(text: str, target: tuple[object, Path]) -> None:
    module, folder = target
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        build_model(module, text)  # type: ignore[arg-type]
    except MuprewriteError as exc:
        assert exc.fix, exc
    finally:
        os.chdir(cwd)
    _check_untouched(folder)


@settings(deadline=1000)
@given(text=st.lists(expressions(depth=2), min_size=1, max_size=3).map(", ".join))
def test_input_specs(text: str, target: tuple[object, Path]) -> None:
    _, folder = target
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        parse_inputs(text)
    except MuprewriteError as exc:
        assert exc.fix, exc
    finally:
        os.chdir(cwd)
    _check_untouched(folder)
