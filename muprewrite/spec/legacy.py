"""Parse ``--model "DiT(depth=4, hidden_size=256)"`` and ``--inputs`` safely: literals only.

Nothing here calls ``eval``. A constructor expression is a call of a name (or dotted name)
defined in the user's file, with literal arguments (numbers, strings, tuples, lists, dicts,
True/False/None). Example inputs are written as tensor specs::

    --inputs "float(2, 4, 32, 32), int(2, high=1000), int(2, high=10)"
    --inputs "x=float(2, 4, 32, 32), t=int(2, high=1000)"      # keyword arguments

``float(*shape)`` is a random normal tensor, ``int(*shape, high=N)`` random integers in
[0, N), ``bool(*shape)`` all-true; ``half``/``bfloat16``/``double``/``long`` work alike.
Plain literals pass through (``scale=1.5``). Arithmetic on numbers is allowed in
constructor arguments (``num_heads=256 // 64``), so that a width template such as
``"DiT(hidden_size={width}, num_heads={width} // 64)"`` can be filled in per width.
"""

from __future__ import annotations

import ast
import importlib.util
import operator
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..errors import InputSpecError, ModelSpecError

__all__ = ["load_module", "build_model", "parse_inputs", "parse_call"]

_DTYPES = {"float": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16,
           "double": torch.float64, "int": torch.int64, "long": torch.int64, "bool": torch.bool}


def load_module(path: str | Path) -> ModuleType:
    """Import the user's model file (its directory goes on sys.path for local imports)."""
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"no such file: {path}", fix="pass the path of your model's .py file")
    name = f"_muprewrite_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"cannot import {path}", fix="pass a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ModelSpecError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    finally:
        sys.path.pop(0)
    return module


_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv, ast.Pow: operator.pow,
          ast.Mod: operator.mod}


def _literal(node: ast.expr) -> Any:
    """``ast.literal_eval`` plus + - * / // % ** between numbers (no names, no calls)."""
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        left, right = _literal(node.left), _literal(node.right)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            raise ValueError("arithmetic on numbers only")
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _ARITH[type(node.op)](left, right)
    return ast.literal_eval(node)


def parse_call(text: str, what: str) -> tuple[list[str], list[Any], dict[str, Any]]:
    """``"a.B(1, x=2)"`` -> (["a", "B"], [1], {"x": 2}); literals only."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ModelSpecError(f"{what} {text!r} does not parse: {exc.msg}",
                             fix='write it as a call, e.g. "DiT(depth=4, hidden_size=256)"') from exc
    if isinstance(tree, (ast.Name, ast.Attribute)):
        tree = ast.Call(func=tree, args=[], keywords=[])
    if not isinstance(tree, ast.Call):
        raise ModelSpecError(f"{what} {text!r} is not a constructor call",
                             fix='write it as a call, e.g. "DiT(depth=4, hidden_size=256)"')
    dotted = _dotted(tree.func)
    if dotted is None:
        raise ModelSpecError(f"{what} {text!r}: call a class by name, e.g. DiT(...)")
    try:
        args = [_literal(a) for a in tree.args]
        kwargs = {k.arg: _literal(k.value) for k in tree.keywords if k.arg}
    except (ValueError, ZeroDivisionError) as exc:
        raise ModelSpecError(f"{what} {text!r}: arguments must be literals (numbers, strings, "
                             "tuples, lists, dicts, True/False/None)") from exc
    return dotted, args, kwargs


def _dotted(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return head + [node.attr] if head is not None else None
    return None


def build_model(module: ModuleType, text: str, what: str = "--model",
                device: torch.device | str = "meta") -> torch.nn.Module:
    """Construct ``text`` from ``module``'s namespace on ``device`` (meta: no memory)."""
    dotted, args, kwargs = parse_call(text, what)
    obj: Any = module
    for part in dotted:
        if not hasattr(obj, part):
            known = sorted(n for n, v in vars(module).items()
                           if isinstance(v, type) and issubclass(v, torch.nn.Module)
                           and v.__module__ == module.__name__)
            raise ModelSpecError(f"{what}: {'.'.join(dotted)} is not defined in "
                                 f"{module.__file__}", fix=f"one of: {', '.join(known) or '-'}")
        obj = getattr(obj, part)
    try:
        with torch.device(device):
            model = obj(*args, **kwargs)
    except TypeError as exc:
        raise ModelSpecError(f"{what}: {text}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{what}: {text} built a {type(model).__name__}, not an nn.Module")
    return model


def parse_inputs(text: str, device: torch.device | str = "meta") -> tuple[tuple, dict]:
    """Tensor specs (see module docstring) -> (args, kwargs) on ``device``."""
    try:
        call = ast.parse(f"_({text})", mode="eval").body
    except SyntaxError as exc:
        raise InputSpecError(f"--inputs {text!r} does not parse: {exc.msg}",
                             fix='e.g. --inputs "float(2, 4, 32, 32), int(2, high=1000)"') from exc
    assert isinstance(call, ast.Call)
    args = tuple(_value(a, device) for a in call.args)
    kwargs = {k.arg: _value(k.value, device) for k in call.keywords if k.arg}
    return args, kwargs


def _value(node: ast.expr, device: torch.device | str) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DTYPES:
        try:
            shape = [ast.literal_eval(a) for a in node.args]
            opts = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError as exc:
            raise InputSpecError(f"tensor spec {ast.unparse(node)!r}: sizes must be integers") from exc
        dtype = _DTYPES[node.func.id]
        if dtype == torch.int64:
            return torch.randint(0, int(opts.get("high", 2)), shape, device=device)
        if dtype == torch.bool:
            return torch.ones(shape, dtype=torch.bool, device=device)
        return torch.randn(shape, dtype=dtype, device=device)
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise InputSpecError(f"--inputs: {ast.unparse(node)!r} is neither a tensor spec "
                             f"({', '.join(_DTYPES)}) nor a literal") from exc
