"""What emission returns: each changed file of the user's project, and the whole result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["EmittedFile", "Emission"]


@dataclass(frozen=True)
class EmittedFile:
    """One changed file of the user's project."""

    path: Path  # the user's file (the main one as given, the others as imported)
    relative: str  # its path under the project root, with "/": "mypkg/layers.py"
    original: str  # its text, decoded as ``source`` is
    source: str  # the new text, line endings as in the file
    encoding: str  # the file's encoding ("utf-8-sig": it starts with a BOM)

    @property
    def data(self) -> bytes:
        """The new bytes: the file's encoding, BOM and line endings."""
        return self.source.encode(self.encoding)


@dataclass(frozen=True)
class Emission:
    """The muP version of the user's model: the main file's text (``source``, ``data``) and
    every changed file of the project (``files``, the main one first)."""

    source: str  # the new file's text, line endings as in the input
    changes: tuple[str, ...]  # one line per kind of change, for people
    original: str = ""  # the input's text, decoded as ``source`` is (for diffs)
    encoding: str = "utf-8"  # the input's encoding ("utf-8-sig": it starts with a BOM)
    files: tuple[EmittedFile, ...] = ()  # every changed file of the project, main first
    root: Path | None = None  # the project root the files' ``relative`` paths start from
    imports: tuple[Path, ...] = ()  # every project file the model imports (folder resolved,
    # own name kept: a symlinked file by the name it is imported by)

    @property
    def data(self) -> bytes:
        """The new file's bytes: the input's encoding, BOM and line endings."""
        return self.source.encode(self.encoding)
