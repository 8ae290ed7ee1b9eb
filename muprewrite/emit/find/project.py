"""The user's files that emission reads and may edit: the model file and the project around it.

A class is the user's when its module's file is a project file (``muprewrite.spec.project``:
under the project root, not an installed library). Each such file is read as Python reads it
(``files.source_text``), parsed with libcst once, and kept with its class spans, so that the
sites, the pattern scans and the rewrite all see the same nodes. The model file given on the
command line is the *main* file: it gets the muP block; every other file only its edits.

>>> from pathlib import Path
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "m.py").write_text("class A:\\n    pass\\n")
>>> project = Project(folder / "m.py")
>>> project.parsed(folder / "m.py").spans
{'A': (1, 2)}
>>> project.relative(folder / "m.py")
'm.py'
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from ...files import SourceError, SourceText, read_source
from ...spec.project import is_project_file, project_root
from ..cst.source import SourceFile
from ..errors import EmitError

__all__ = ["Parsed", "Project"]


@dataclass(frozen=True)
class Parsed:
    """One file of the project, read and parsed."""

    path: Path  # as the user or the import system named it (for messages)
    text: SourceText
    wrapper: MetadataWrapper
    spans: dict[str, tuple[int, int]]  # top-level class -> (first line, last line)
    src: SourceFile


class Project:
    """The files of the user's project that emission has read, keyed by resolved path."""

    def __init__(self, main: Path) -> None:
        self.main = main.resolve()
        self.root = project_root(main).resolve()
        self._given = main
        self._files: dict[Path, Parsed] = {}
        self._classes: dict[type, tuple[Path, tuple[int, int]] | None] = {}

    def owns(self, file: str | Path) -> bool:
        """Whether ``file`` is one of the user's files (under the root, not a library)."""
        return is_project_file(file, self.root)

    def relative(self, file: Path) -> str:
        """``file`` under the project root, with ``/``: ``mypkg/layers.py``; a symlinked
        file by its own name, the one it is imported by (where emission writes it)."""
        parsed = self._files.get(file.resolve())
        given = parsed.path if parsed is not None else file
        kept = Path(os.path.realpath(given.parent)) / given.name
        try:
            return kept.relative_to(self.root).as_posix()
        except ValueError:  # the link lies outside the project: its target's place
            return file.resolve().relative_to(self.root).as_posix()

    def files(self) -> list[Parsed]:
        """Every file parsed so far, the main one first."""
        return list(self._files.values())

    def parsed(self, file: Path) -> Parsed:
        key = file.resolve()
        if key not in self._files:
            self._files[key] = _parse(self._given if key == self.main else file)
        return self._files[key]

    def class_site(self, cls: type) -> tuple[Path, tuple[int, int]] | None:
        """(resolved file, span) of ``cls`` when a project file defines it at top level."""
        if cls not in self._classes:
            self._classes[cls] = self._find(cls)
        return self._classes[cls]

    def _find(self, cls: type) -> tuple[Path, tuple[int, int]] | None:
        module = sys.modules.get(cls.__module__)
        file = getattr(module, "__file__", None)
        if not file or cls.__qualname__ != cls.__name__ or not self.owns(file):
            return None
        parsed = self.parsed(Path(file))
        span = parsed.spans.get(cls.__name__)
        return (Path(file).resolve(), span) if span else None


def class_spans(wrapper: MetadataWrapper) -> dict[str, tuple[int, int]]:
    """Top-level class name -> (first line, last line)."""
    positions = wrapper.resolve(PositionProvider)
    return {stmt.name.value: (positions[stmt].start.line, positions[stmt].end.line)
            for stmt in wrapper.module.body if isinstance(stmt, cst.ClassDef)}


def _parse(path: Path) -> Parsed:
    try:
        text = read_source(path)
    except SourceError as exc:
        raise EmitError(exc.message, fix=exc.fix) from None
    try:
        wrapper = MetadataWrapper(cst.parse_module(text.text))
    except cst.ParserSyntaxError as exc:
        raise EmitError(f"{path}:{exc.raw_line}: syntax error: {exc.message}") from None
    return Parsed(path, text, wrapper, class_spans(wrapper), SourceFile(wrapper, path))
