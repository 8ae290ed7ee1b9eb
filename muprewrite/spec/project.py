"""The user's project: which files are theirs, and where a failure in their code happened.

The project root is the folder of the model file, or, when that folder is a package (has an
``__init__.py``), the folder above its top-level package. A file is the user's when it lies
under the root and not in an installed library (``site-packages``/``dist-packages``), the
standard library, torch or muprewrite itself. Specs may call only what the user's files
define; edits are only ever made to the user's files.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["project_root", "module_name", "is_project_file", "defined_in_project",
           "user_frame", "remember"]

_LIBRARY_PARTS = {"site-packages", "dist-packages"}
# user modules dropped from sys.modules by a later load (see load.py): their classes still
# exist and must still count as the user's
_FORGOTTEN: list[ModuleType] = []


def remember(module: ModuleType) -> None:
    """Keep ``module`` findable after it leaves sys.modules (a later load of the project)."""
    _FORGOTTEN.append(module)


def _class_file(cls: type) -> str | None:
    """The source file of ``cls``: the module that holds this very class object (two loaded
    files may share a module name, e.g. model.py and an emitted DIR/model.py), else its own
    methods' code."""
    for module in [sys.modules.get(cls.__module__), *reversed(_FORGOTTEN)]:
        if module is not None and vars(module).get(cls.__name__) is cls:
            return getattr(module, "__file__", None)
    for value in vars(cls).values():
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        if code is not None and not code.co_filename.startswith("<"):
            return str(code.co_filename)
    return None


def project_root(path: Path) -> Path:
    """The folder whose entry on sys.path makes ``path`` importable with its package."""
    folder = path.resolve().parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        folder = folder.parent
    return folder


def module_name(path: Path) -> str:
    """``pkg/sub/model.py`` inside packages -> ``"pkg.sub.model"``; a loose file -> its stem."""
    path = path.resolve()
    rel = path.relative_to(project_root(path)).with_suffix("")
    return ".".join(rel.parts)


@cache
def _excluded() -> tuple[str, ...]:
    paths = {sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib",
                                                         "platlib")}
    here = Path(__file__).resolve().parents[1]  # the muprewrite package
    paths.add(str(here))
    torch_file = getattr(sys.modules.get("torch"), "__file__", None)
    if torch_file:
        paths.add(str(Path(torch_file).resolve().parent))
    return tuple(os.path.realpath(p) for p in paths if p)


def is_project_file(filename: str | os.PathLike[str] | None, root: Path) -> bool:
    """Whether ``filename`` is one of the user's own source files under ``root``."""
    if not filename or str(filename).startswith("<"):
        return False
    real = os.path.realpath(filename)
    root_real = os.path.realpath(root)
    if os.path.commonpath([real, root_real]) != root_real:
        return False
    if _LIBRARY_PARTS & set(Path(real).parts):
        return False
    return not any(os.path.commonpath([real, ex]) == ex for ex in _excluded())


def defined_in_project(obj: Any, root: Path) -> bool:
    """A class, function or module whose source file is one of the user's files."""
    if isinstance(obj, ModuleType):
        return is_project_file(getattr(obj, "__file__", None), root)
    if isinstance(obj, type):
        return is_project_file(_class_file(obj), root)
    func = getattr(obj, "__func__", obj)  # a bound classmethod -> its function
    code = getattr(func, "__code__", None)
    return code is not None and is_project_file(code.co_filename, root)


def user_frame(exc: BaseException, root: Path) -> str:
    """``file:line: code`` of the innermost traceback frame in the user's files, or ""."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_project_file(f.filename, root)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}:{f.lineno}" + (f": {f.line.strip()}" if f.line else "")
