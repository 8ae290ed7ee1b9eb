"""The files a command reads, which none of its outputs may replace, even with --force.

A command's inputs are MODEL_FILE, every file of its project that is imported once it has
been loaded (``load_module`` drops the project's cached modules first, so these are the
files the model imports now), and any rule file or card named on the command line. Outputs
are checked against them with ``files.check_distinct`` (symlinks and hard links resolved)
before any compute, and again right before writing, when everything the run imported is
known.

>>> from pathlib import Path
>>> named_inputs("m.py", rules=("mup", "my.toml"))
[('MODEL_FILE', PosixPath('m.py')), ('--rule', PosixPath('my.toml'))]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["imported_files", "named_inputs", "project_inputs"]


def imported_files(path: str | Path) -> list[str]:
    """The files of ``path``'s project that are imported now (after loading it)."""
    from ..spec.project import is_project_file, project_root

    root = project_root(Path(path))
    files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
    return [f for f in files if f and is_project_file(f, root)]


def named_inputs(model_file: str | Path, *, rules: Sequence[str] = (),
                 cards: Sequence[str | Path] = ()) -> list[tuple[str, Path]]:
    """MODEL_FILE, the rule files (a rule given by name is no file) and the cards."""
    out = [("MODEL_FILE", Path(model_file))]
    out += [("--rule", Path(rule)) for rule in rules if rule.endswith(".toml")]
    return out + [("--hparams", Path(card)) for card in cards]


def project_inputs(model_file: str | Path, *, rules: Sequence[str] = (),
                   cards: Sequence[str | Path] = ()) -> list[tuple[str, Path]]:
    """``named_inputs`` and every project file imported now, each named as such."""
    own = named_inputs(model_file, rules=rules, cards=cards)
    return own + [("a file MODEL_FILE imports,", Path(f)) for f in imported_files(model_file)]
