"""Where a captured site lies in the user's project: its file and line, the classes of its module.

``place`` resolves a captured ``file:line`` to a project file, refusing a change that would fall
outside the project (an installed library): the emitter never writes a silently incomplete
model. ``scope_of``: the classes of a module's MRO that the project writes, with their files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ..errors import EmitError
from .sites import Scope

if TYPE_CHECKING:
    from .project import Project

__all__ = ["split_source", "place", "scope_of"]


def split_source(source: str) -> tuple[str, int]:
    file, _, line = source.rpartition(":")
    return file, int(line) if line.isdigit() else 0


def place(source: str, project: Project, what: str) -> tuple[Path, int]:
    """(resolved file, line) of a captured ``file:line``, refused outside the project."""
    where, line = split_source(source)
    if not where or not line:
        raise EmitError(f"{what} has no source line to edit", where=source or "?",
                        fix="use muprewrite.apply(model, ...) at runtime")
    if not project.owns(where):
        main = project.main.name
        raise EmitError(f"{what} belongs at {where}:{line}, outside your project (the files "
                        f"under {project.root} that are not an installed library), so it "
                        "cannot be edited", where=f"{where}:{line}",
                        fix=f"define that module in your project (a local subclass in {main} "
                            "whose forward you write), or use muprewrite.apply(model, ...) at "
                            "runtime")
    return Path(where).resolve(), line


def scope_of(module: nn.Module, project: Project) -> Scope:
    """The classes of ``module``'s MRO that are written in the project, with their files."""
    out = []
    for cls in type(module).__mro__:
        found = project.class_site(cls)
        if found is not None:
            out.append((found[0], cls.__name__))
    return tuple(out)
