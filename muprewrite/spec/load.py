"""Import the user's model file, as Python would run it, and contain what it does at import.

The file is *imported*: its top-level code runs (that is how its classes come to exist).
While it runs, and while a constructor runs:

- its standard output goes to standard error, so ``analyze --json`` stays valid JSON;
- ``sys.argv`` holds only the file's path, so argument parsing at import sees no muprewrite
  options;
- ``sys.exit()`` (or an argparse error) becomes one ModelSpecError naming the line;
- an ImportError names the missing module; any other exception names its file:line.

A file inside a package (a folder with ``__init__.py``) is imported as a module of its
package, so relative imports work: ``muprewrite pkg/model.py`` imports ``pkg.model``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from ..errors import ModelSpecError
from .project import is_project_file, module_name, project_root, remember, user_frame

__all__ = ["load_module", "contained"]

_RUN_IT = "run `python {path}` to see the error; muprewrite imports the file as Python does"


@contextlib.contextmanager
def contained(path: Path) -> Iterator[None]:
    """Run user code with stdout sent to stderr and ``sys.argv == [path]``."""
    argv = sys.argv
    sys.argv = [str(path)]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.argv = argv


def load_module(path: str | Path) -> ModuleType:
    """Import the user's model file (its project root goes on sys.path while it imports)."""
    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        what = "no such file" if not path.exists() else "not a Python source file"
        raise ModelSpecError(f"{what}: {path}", fix="pass the path of your model's .py file")
    root = project_root(path)
    name = module_name(path)
    _forget_project_modules(root)
    if "." in name:
        return _import_in_package(path, root, name)
    return _import_file(path, root, f"_muprewrite_user_{path.stem}")


def _import_file(path: Path, root: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"cannot import {path}", fix="pass a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with _on_path(root), _translated(path, root):
        spec.loader.exec_module(module)
    return module


def _import_in_package(path: Path, root: Path, name: str) -> ModuleType:
    top = name.split(".", 1)[0]
    loaded = sys.modules.get(top)
    if loaded is not None and not is_project_file(getattr(loaded, "__file__", None), root):
        raise ModelSpecError(
            f"{path} is in a package named {top!r}, but another module of that name is "
            f"already imported ({getattr(loaded, '__file__', None) or 'built in'})",
            fix=f"rename the package folder {root / top}")
    with _on_path(root), _translated(path, root):
        return importlib.import_module(name)


def _forget_project_modules(root: Path) -> None:
    """Drop cached modules of this project, or of another user folder with the same names.

    Importing reads the user's files as they are now; a sibling ``blocks.py`` must not come
    from an earlier load of another folder's ``blocks.py``.
    """
    local = {p.stem for p in root.glob("*.py")} | {p.parent.name for p in root.glob("*/__init__.py")}
    for key, mod in list(sys.modules.items()):
        filename = getattr(mod, "__file__", None)
        if not filename:
            continue
        if is_project_file(filename, root) or (
                key.split(".", 1)[0] in local
                and is_project_file(filename, Path(Path(filename).anchor))):
            remember(mod)
            del sys.modules[key]


@contextlib.contextmanager
def _on_path(root: Path) -> Iterator[None]:
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(root))


@contextlib.contextmanager
def _translated(path: Path, root: Path) -> Iterator[None]:
    """Turn whatever importing ``path`` raises into one ModelSpecError."""
    try:
        with contained(path):
            yield
    except SyntaxError as exc:
        where = f"{exc.filename or path}:{exc.lineno}"
        raise ModelSpecError(f"{where}: syntax error: {exc.msg}",
                             fix="fix the syntax error (the file must run under this Python, "
                                 f"{sys.version.split()[0]})") from None
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise ModelSpecError(f"importing {path} failed: {exc}", where=user_frame(exc, root),
                             fix=f"install {missing!r} in this environment, or, if it is your "
                                 "own module, keep it under " + str(root)) from None
    except SystemExit as exc:
        where = user_frame(exc, root)
        parsing = any("argparse" in str(f.filename) for f in _frames(exc))
        what = "parses the command line" if parsing else f"calls sys.exit({exc.code!r})"
        raise ModelSpecError(f"importing {path}: the file {what} when imported",
                             where=where, fix="put script code under `if __name__ == "
                                              "\"__main__\":` so that importing only defines "
                                              "the model") from None
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        raise ModelSpecError(f"importing {path} raised {type(exc).__name__}: "
                             f"{_first_line(exc)}", where=user_frame(exc, root),
                             fix=_RUN_IT.format(path=path)) from None


def _frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(exc.__traceback__))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"
