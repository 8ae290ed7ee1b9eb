"""Which other files of the project import a file that ``--in-place`` would edit.

An edit in place changes a shared module for everyone: a ``blocks.py`` that a second model
file also imports would give that model this model's attention scale. Stages: list the
project's Python files (under the project root; no hidden, ``__pycache__`` or installed
folders; symlinked folders not followed; only regular files of at most 1 MiB); read each
import statement with ``ast`` (never running the file); resolve each name to a project file
as Python would, from the project root or from the importing file's own folder (a script
run directly); then walk importers backwards from each edited file other than the model
file. An importer is reported unless it is the model file or a file the model imports
itself; files reached only through the model file (a train.py that imports it) get the muP
model on purpose and are not reported.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> _ = (root / "blocks.py").write_text("X = 1\\n")
>>> _ = (root / "a.py").write_text("from blocks import X\\n")
>>> _ = (root / "b.py").write_text("import blocks\\n")
>>> found = other_importers([root / "blocks.py"], main=root / "a.py", chain=(), root=root)
>>> {k.name: [p.name for p in v] for k, v in found.items()}
{'blocks.py': ['b.py']}
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import EmitError

__all__ = ["other_importers"]

MAX_ENTRIES = 50_000  # files and folders scanned at most: a bigger tree is refused
MAX_BYTES = 1 << 20
_SKIP = {"__pycache__", "site-packages", "dist-packages", "node_modules"}


def other_importers(edited: Sequence[Path], *, main: Path, chain: Iterable[Path],
                    root: Path) -> dict[Path, list[Path]]:
    """Edited file -> the project files outside the model's own imports that import it,
    directly or through other project files."""
    root = root.resolve()
    files = _python_files(root)  # by the names they are imported by
    modules = {_module(f, root): _real(f) for f in files}
    imports: dict[Path, set[Path]] = {}
    for f in files:
        imports.setdefault(_real(f), set()).update(_imports(f, root, modules))
    importers: dict[Path, set[Path]] = {}
    for f, targets in imports.items():
        for t in targets:
            importers.setdefault(t, set()).add(f)
    main = main.resolve()
    own = {Path(os.path.realpath(p)) for p in chain} | {main}
    out = {}
    for file in edited:
        start = file.resolve()
        if start == main:
            continue
        seen, todo = {start}, [start]
        while todo:
            for f in importers.get(todo.pop(), ()):
                if f not in seen and f != main:
                    seen.add(f)
                    todo.append(f)
        others = sorted(f for f in seen - own - {start})
        if others:
            out[file] = others
    return out


def _python_files(root: Path) -> list[Path]:
    found: list[Path] = []
    seen = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP)
        seen += len(dirs) + len(names)
        if seen > MAX_ENTRIES:
            raise EmitError(f"the project folder {root} holds more than {MAX_ENTRIES} entries; "
                            "muprewrite cannot tell which of its files import the files "
                            "--in-place would edit",
                            fix="put the model in a folder of its own project, pass -o DIR/, "
                                "or --in-place-shared if every importer should change")
        for name in sorted(names):
            path = Path(folder) / name
            if name.endswith(".py") and _small_regular(path):
                found.append(path)
    return found


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _small_regular(path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size <= MAX_BYTES


def _module(file: Path, root: Path) -> str:
    try:
        parts = list(file.relative_to(root).with_suffix("").parts)
    except ValueError:  # a link to a file outside the project: no name imports it
        return f"<outside>{file}"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(file: Path, root: Path, modules: dict[str, Path]) -> set[Path]:
    """The project files ``file``'s import statements name."""
    try:
        tree = ast.parse(file.read_bytes())
    except (SyntaxError, ValueError, OSError):  # cannot be imported either
        return set()
    here = _module(file, root)
    package = here if file.name == "__init__.py" else here.rpartition(".")[0]
    local = ".".join(file.parent.relative_to(root).parts)  # a script run directly imports
    # from its own folder
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            if base is None:
                continue
            names.add(base)
            names.update(f"{base}.{a.name}" if base else a.name for a in node.names)
    out = set()
    for name in names:
        parts = name.split(".")
        if local and f"{local}.{parts[0]}" in modules:  # its own folder comes first
            parts = [*local.split("."), *parts]
        for i in range(1, len(parts) + 1):  # import a.b.c runs a, a.b and a.b.c
            hit = modules.get(".".join(parts[:i]))
            if hit is not None and hit != _real(file):
                out.add(hit)
    return out


def _absolute(node: ast.ImportFrom, package: str) -> str | None:
    if not node.level:
        return node.module or ""
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])
