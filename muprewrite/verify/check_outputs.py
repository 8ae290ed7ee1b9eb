"""The structure, the parameters and the forward of the emitted model against ``apply``'s."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..rewrite.branches import HOOK_ATTR
from .check_report import Divergence, rel, tensors

__all__ = ["structure", "parameters", "outputs"]


def structure(spec: str, base: nn.Module, model: nn.Module,
              pair: Callable[[nn.Module, nn.Module], dict[str, str]] | None
              ) -> Divergence | None:
    """Every parameter of the model has a partner in the base with as many axes, and every
    base parameter is someone's partner. The partner is the same name, or under a depth rule
    the emitted file's own pairing of blocks by position (``mup_partners``)."""
    ours = {n: p.dim() for n, p in model.named_parameters()}
    theirs = {n: p.dim() for n, p in base.named_parameters()}
    partners = pair(model, base) if pair is not None else {n: n for n in ours}
    missing = sorted(n for n in ours if theirs.get(partners.get(n, "")) != ours[n])
    missing += sorted(set(theirs) - {partners.get(n) for n in ours})
    if missing:
        another = "width and depth" if pair is not None else "width"
        return Divergence(spec, "structure", "mup_base_model()", "-", -1, float("inf"),
                          f"the emitted base and the model differ in {len(missing)} "
                          f"parameter(s), e.g. {', '.join(missing[:10])}; the base must be the "
                          f"same architecture at another {another}")
    return None


def parameters(spec: str, model: nn.Module, expected: nn.Module, tol: float,
               what: str = "init scale differs") -> Divergence | None:
    """Every entry of the state dict, by name."""
    theirs = expected.state_dict()
    for name, value in model.state_dict().items():
        if name not in theirs:
            return Divergence(spec, "parameter", name, "-", -1, float("inf"), "not in the "
                              "original model")
        error = rel(value, theirs[name])
        if error > tol:
            return Divergence(spec, "parameter", name, "-", -1, error, what)
    return None


def outputs(spec: str, model: nn.Module, expected: nn.Module, args: tuple, kwargs: dict,
            mode: str, index: int, file: Path, tol: float) -> Divergence | None:
    """One forward of each in ``mode``; on a divergence the first module whose output
    differs is named with the emitted file's line of its ``forward``."""
    model.train(mode == "train")
    expected.train(mode == "train")
    with _recorded(model) as ours, _recorded(expected) as theirs, torch.no_grad():
        torch.manual_seed(3)
        out = model(*args, **kwargs)
        torch.manual_seed(3)
        ref = expected(*args, **kwargs)
    error = max((rel(a, b) for a, b in zip(tensors(out), tensors(ref))), default=0.0)
    if error <= tol:
        return None
    where = "the model's output"
    for name in ours:
        if getattr(expected.get_submodule(name), HOOK_ATTR, None) is not None:
            continue  # apply scales this branch module's output; the file scales at the add
        if name in theirs and max((rel(a, b) for a, b in zip(ours[name], theirs[name])),
                                  default=0.0) > tol:
            where = module_where(model, name, file)
            break
    return Divergence(spec, "output", where, mode, index, error)


@contextlib.contextmanager
def _recorded(model: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Each module's first output, in the order the modules finish (innermost first)."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(_m: nn.Module, _a: Any, out: Any, name: str = name) -> None:
            seen.setdefault(name, tensors(out))
        handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def module_where(model: nn.Module, name: str, file: Path) -> str:
    """The emitted file's line of the innermost module around ``name`` that the file defines
    (a library leaf such as nn.Linear is named through its parent's forward)."""
    path = name
    while True:
        module = model.get_submodule(path)
        try:
            src = inspect.getsourcefile(type(module).forward)
            _lines, start = inspect.getsourcelines(type(module).forward)
        except (OSError, TypeError):
            src, start = None, 0
        if src and Path(src).resolve() == file.resolve():
            inner = f"; first differing output: {name}" if name != path else ""
            return (f"{file}:{start}: {type(module).__name__}.forward of "
                    f"{path or '<root>'}{inner}")
        if not path:
            return f"module {name or '<root>'} ({type(model.get_submodule(name)).__name__})"
        path = path.rpartition(".")[0]
