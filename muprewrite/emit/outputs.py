"""Where each emitted file goes: one file, a mirrored tree, or the user's files themselves.

- ``-o FILE`` (or the default ``<name>_mup.py``): the main file only; refused when other
  files of the project change too, since one file cannot hold them.
- ``-o DIR/`` (an existing folder, or a new one: a trailing slash): every changed file at its
  place under the project root, mirrored under DIR (``DIR/mypkg/model.py``), and every other
  project file the model imports copied unchanged beside them, so that DIR imports on its own
  (``sys.path`` entry DIR, as the project root is for the originals).
- ``--in-place``: every changed file over itself.

>>> is_folder("out/"), is_folder("out.py")
(True, False)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..spec.project import project_root
from .assemble import EmittedFile
from .emitter import Emission
from .sites import EmitError

__all__ = ["Output", "is_folder", "tree_target", "outputs"]


@dataclass(frozen=True)
class Output:
    target: Path
    source: Path  # the user's file it is made from
    file: EmittedFile | None  # None: an unchanged project file, copied

    @property
    def data(self) -> bytes:
        return self.file.data if self.file is not None else self.source.read_bytes()


def is_folder(output: str) -> bool:
    """``-o`` names a folder: it ends with a slash, or is an existing folder."""
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def tree_target(folder: Path, file: Path) -> Path:
    """Where ``file`` of its project goes in the tree mirrored under ``folder``."""
    return folder / file.resolve().relative_to(project_root(file).resolve())


def outputs(emission: Emission, *, target: Path | None, folder: Path | None,
            what: str) -> list[Output]:
    """The files to write: into ``folder`` (a tree), to ``target`` (one file), or in place
    (both None). ``what`` names the single output in the refusal (``-o out.py``)."""
    files = emission.files
    if folder is not None:
        return _tree(emission, folder)
    if target is None:
        return [Output(f.path, f.path, f) for f in files]
    if len(files) > 1:
        raise EmitError(f"{len(files)} files of the project change "
                        f"({', '.join(f.relative for f in files)}), and {what} holds one",
                        fix="pass -o DIR/ (a folder: the muP files in the project's layout, "
                            "with the project files they import) or --in-place (all of them, "
                            "or none)")
    return [Output(target, files[0].path, files[0])]


def _tree(emission: Emission, folder: Path) -> list[Output]:
    assert emission.root is not None
    out = [Output(folder / f.relative, f.path, f) for f in emission.files]
    changed = {f.path.resolve() for f in emission.files}
    for file in emission.imports:
        if file not in changed:
            out.append(Output(folder / file.relative_to(emission.root), file, None))
    return out
