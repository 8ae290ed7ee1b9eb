"""Where each emitted file goes: one file, a mirrored tree, or the user's files themselves.

- ``-o FILE`` (or the default ``<name>_mup.py``): the main file only; refused when other
  files of the project change too, since one file cannot hold them.
- ``-o DIR/`` (an existing folder, or a new one: a trailing slash): every changed file at its
  place under the project root, mirrored under DIR (``DIR/mypkg/model.py``), and every other
  project file the model imports copied unchanged beside them, so that DIR imports on its own
  (``sys.path`` entry DIR, as the project root is for the originals). A file keeps the
  name it is imported by (a symlink's own name, not its target's). A file under DIR that an
  emission of another model wrote (its muprewrite header names that model's file) is never
  replaced, even with --force (``check_tree``): two models' trees do not share a folder.
- ``--in-place``: every changed file over itself.

>>> is_folder("out/"), is_folder("out.py")
(True, False)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...files import OutputError, SourceError, read_source
from ...spec.project import project_root
from ..errors import EmitError
from .emission import Emission, EmittedFile
from .header import emitted_rule, part_of

__all__ = ["Output", "check_tree", "is_folder", "named", "tree_target", "outputs"]


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


def named(file: Path, root: Path) -> Path:
    """``file`` under ``root`` by the name it is imported by: its folder resolved, its own
    name kept (a symlinked ``blocks.py`` stays ``blocks.py``); the resolved path when that
    name lies outside ``root``."""
    kept = Path(os.path.realpath(file.parent)) / file.name
    root = root.resolve()
    try:
        return kept.relative_to(root)
    except ValueError:
        return file.resolve().relative_to(root)


def tree_target(folder: Path, file: Path) -> Path:
    """Where ``file`` of its project goes in the tree mirrored under ``folder``."""
    return folder / named(file, project_root(file))


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
        if file.resolve() not in changed:
            out.append(Output(folder / named(file, emission.root), file, None))
    return out


def check_tree(planned: list[Output], emission: Emission, folder: Path) -> None:
    """Refuse to replace a file under ``folder`` that an emission of another model wrote
    (with or without --force): its header names a main file other than this one."""
    ours = emission.files[0].relative
    for o in planned:
        try:
            text = read_source(o.target).text if o.target.is_file() else None
        except SourceError:  # not Python text: no emission wrote it
            continue
        if text is None or emitted_rule(text) is None or o.target.read_bytes() == o.data:
            continue
        owner = part_of(text) or named(o.target, folder).as_posix()
        if owner != ours:
            raise OutputError(
                f"{o.target} belongs to the muP tree of {owner}, another model emitted into "
                f"{folder}; the muP version of {ours} would replace it with "
                + ("its own edits" if o.file is not None else "the unchanged project file")
                + ", and that model's tree would stop being muP (refused even with --force)",
                fix=f"emit {ours} into another folder (-o OTHER/), or delete {folder} first "
                    "if the other tree is no longer needed")
