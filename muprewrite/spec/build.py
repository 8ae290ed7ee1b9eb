"""Build a model from a spec: resolve each call in the user's project, then construct.

A callee must be a class (a dataclass too) or a function defined in one of the user's
own files (see :mod:`.project`) and reachable from the model file's namespace: a name the
file defines or imports, then optionally attributes of the user's own modules and classes
(``blocks.GPT``, ``GPT.from_config``). Nothing is looked up on installed libraries, so
``torch.os.remove(...)`` names nothing callable. Inner calls are built first
(``GPT(GPTConfig(n_embd=256))``); the outermost must return an ``nn.Module``.

>>> import sys, types
>>> from muprewrite.errors import ModelSpecError
>>> user = types.ModuleType("user"); user.__file__ = __file__; user.torch = sys.modules["torch"]
>>> try:
...     build_model(user, "torch.os.remove('model.py')")
... except ModelSpecError as exc:
...     print(exc.message)
--model: 'torch.os.remove' is not a class or function of your project
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..analysis.empty import check_zero_size
from ..errors import ModelSpecError
from .grammar import Call, parse_spec
from .load import contained
from .project import defined_in_project, project_root, user_frame

__all__ = ["build_model", "resolve"]

_META_HINTS = ("meta tensor", "on meta", "'meta'", "meta device", ".item()")


def build_model(module: ModuleType, text: str, what: str = "--model",
                device: torch.device | str = "meta") -> torch.nn.Module:
    """Construct the spec ``text`` from ``module``'s namespace on ``device`` (meta: no memory)."""
    call = parse_spec(text, what)
    path = Path(module.__file__ or ".")
    root = project_root(path)
    with contained(path), torch.device(device):
        model = _construct(call, module, root, what, str(device))
    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{what}: {call.name}(...) returned a {type(model).__name__}, "
                             "not an nn.Module", fix="call the model's class or a function "
                                                     "that returns the model")
    check_zero_size(model, f"{what}: {text.strip()}")
    return model


def _construct(call: Call, module: ModuleType, root: Path, what: str, device: str) -> Any:
    target = resolve(call, module, root, what)
    args = [_built(a, module, root, what, device) for a in call.args]
    kwargs = {k: _built(v, module, root, what, device) for k, v in call.kwargs}
    try:
        return target(*args, **kwargs)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's constructor may raise anything
        raise _construction_error(call, exc, root, what, device) from None


def _built(value: Any, module: ModuleType, root: Path, what: str, device: str) -> Any:
    if isinstance(value, Call):
        return _construct(value, module, root, what, device)
    if isinstance(value, (list, tuple)):
        return type(value)(_built(v, module, root, what, device) for v in value)
    if isinstance(value, dict):
        return {k: _built(v, module, root, what, device) for k, v in value.items()}
    return value


def resolve(call: Call, module: ModuleType, root: Path, what: str) -> Callable[..., Any]:
    """The class or function ``call`` names, if the user's project defines it."""
    namespace = vars(module)
    head = call.callee[0]
    if head not in namespace:
        raise ModelSpecError(f"{what}: {head} is not defined in {module.__file__}",
                             fix=f"one of: {', '.join(_known(module, root)) or '-'}")
    obj: Any = namespace[head]
    for depth, part in enumerate(call.callee[1:], start=1):
        if not ((isinstance(obj, (ModuleType, type))) and defined_in_project(obj, root)):
            break
        obj = vars(obj).get(part) if isinstance(obj, ModuleType) else getattr(obj, part, None)
        if obj is None:
            raise ModelSpecError(f"{what}: {'.'.join(call.callee[:depth + 1])} does not exist",
                                 fix=f"one of: {', '.join(_known(module, root)) or '-'}")
    else:
        if callable(obj) and not isinstance(obj, ModuleType) and defined_in_project(obj, root):
            return obj  # type: ignore[no-any-return]
    raise ModelSpecError(f"{what}: {call.name!r} is not a class or function of your project",
                         where=str(root),
                         fix="a spec may call only classes and functions defined in your model "
                             f"file or imported into it from files under {root}; one of: "
                             f"{', '.join(_known(module, root)) or '-'}")


def _known(module: ModuleType, root: Path) -> list[str]:
    """The nn.Module classes the user's file defines or imports from the project."""
    return sorted(n for n, v in vars(module).items()
                  if isinstance(v, type) and issubclass(v, torch.nn.Module)
                  and defined_in_project(v, root))


def _construction_error(call: Call, exc: BaseException, root: Path, what: str,
                        device: str) -> ModelSpecError:
    text = str(exc).strip().splitlines()
    first = (text[0] if text else "(no message)")[:300]
    name = type(exc).__name__
    if isinstance(exc, SystemExit):
        first, name = f"sys.exit({exc.code!r})", "SystemExit"
    fix = "check the arguments against the constructor's signature"
    if device == "meta" and any(h in str(exc) for h in _META_HINTS):
        fix = ("the constructor needs real tensor values (e.g. .item() in __init__), which the "
               "meta device does not have; retry with --device cpu (device='cpu') at a small width")
    elif not isinstance(exc, TypeError):
        fix = "the error is raised by your constructor; call it in Python to see it in full"
    return ModelSpecError(f"{what}: {call.name}(...) raised {name}: {first}",
                          where=user_frame(exc, root), fix=fix)
