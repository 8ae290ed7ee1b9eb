"""Import an emitted model file the way a user without muprewrite would."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """Default dtype float64 inside the block (exactness checks), restored after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def import_without_muprewrite(path: Path) -> ModuleType:
    """Execute ``path`` as a fresh module while any ``import muprewrite`` fails."""
    saved = {k: v for k, v in sys.modules.items() if k == "muprewrite" or k.startswith("muprewrite.")}
    for k in saved:
        del sys.modules[k]
    sys.modules["muprewrite"] = None  # type: ignore[assignment]  # makes the import raise
    try:
        spec = importlib.util.spec_from_file_location(f"emitted_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as an import does (dataclasses look it up)
        spec.loader.exec_module(module)
        return module
    finally:
        del sys.modules["muprewrite"]
        sys.modules.update(saved)
