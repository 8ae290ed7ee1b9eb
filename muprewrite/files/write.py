"""The one way this package writes a file: whole or not at all, never over an input.

``write_file`` stages: resolve symlinks (the link stays, its target gets the bytes), refusing
a link that leads out of the output folder (``inside``, by default the folder the path names)
even with ``force``; refuse a folder, a non-regular file, or a read-only file unless ``force``; write a temporary file
in the target's folder (created with mode 0o666, so a new file follows the umask); give it
the old file's owner and mode; ``os.replace`` it over the target. The temporary file is
removed on any exception, KeyboardInterrupt and SystemExit included.

``write_files`` replaces several files, all or none: every temporary file is written first;
each existing target gets a hard link (a copy where links fail) as its backup; then the
targets are replaced one by one, and on any failure (Ctrl-C too) the replaced ones are put
back from their backups, new ones removed, and the temporary files, the backups and the
folders it made (``make_folders``) removed. Only a crash of the process itself between two
replacements can leave some files new and some old.

``check_output``, ``check_folder`` and ``check_distinct`` make the same checks before a
command computes anything, so a bad output is reported at once.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
>>> write_file(out, b"hi\\n").read_bytes()
b'hi\\n'
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import MuprewriteError

__all__ = ["OutputError", "check_distinct", "check_folder", "check_output", "write_file",
           "write_files"]

_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)


class OutputError(MuprewriteError):
    """An output cannot be written where asked, or would overwrite an input."""


def write_file(path: str | Path, data: bytes, *, force: bool = False,
               inside: str | Path | None = None) -> Path:
    """Replace the contents of ``path`` (or of the file it links to) by ``data``.

    ``inside``: the folder whose files a symlink may lead to (default: the folder of
    ``path``, links followed). Raises OutputError, leaving ``path`` as it was and no
    temporary file behind.
    """
    path = Path(path)
    real = _contained(path, inside)
    old = _existing(path, real, force=force)
    tmp = None
    try:
        tmp = _staged(real, data, old)
        os.replace(tmp, real)
        tmp = None
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def write_files(items: Sequence[tuple[str | Path, bytes]], *, force: bool = False,
                make_folders: bool = False, inside: str | Path | None = None) -> list[Path]:
    """Replace the contents of every path of ``items`` by its bytes, or of none.

    ``make_folders``: create missing parent folders (removed again on failure); ``inside``:
    as for ``write_file``, for every path. Raises OutputError naming the file that failed,
    every file as it was and nothing left behind.
    """
    paths = [Path(p) for p, _ in items]
    reals = [_contained(p, inside) for p in paths]
    olds = [_existing(p, r, force=force) for p, r in zip(paths, reals, strict=True)]
    run = _Run()
    current = paths[0] if paths else Path()
    try:
        if make_folders:
            run.make_folders(reals)
        for path, real, old, (_, data) in zip(paths, reals, olds, items, strict=True):
            current = path
            run.temps[real] = _staged(real, data, old)
            if old is not None:
                run.backups[real] = _backup(real)
        for path, real in zip(paths, reals, strict=True):
            current = path
            os.replace(run.temps[real], real)
            del run.temps[real]
            run.replaced.append(real)
        run.done = True
    except OSError as exc:
        raise _cannot_write(current, exc) from None
    finally:
        run.finish()
    return paths


class _Run:
    """What one ``write_files`` made, to undo or clean up."""

    def __init__(self) -> None:
        self.temps: dict[Path, Path] = {}  # target -> its temporary file, not yet moved
        self.backups: dict[Path, Path] = {}  # target -> a link to its old contents
        self.replaced: list[Path] = []
        self.folders: list[Path] = []  # made by us, outermost first
        self.done = False

    def make_folders(self, reals: Sequence[Path]) -> None:
        for real in reals:
            missing = [p for p in [real.parent, *real.parent.parents] if not p.exists()]
            for folder in reversed(missing):
                folder.mkdir()
                self.folders.append(folder)

    def finish(self) -> None:
        kept = []
        if not self.done:
            for real in reversed(self.replaced):
                backup = self.backups.pop(real, None)
                try:
                    if backup:
                        os.replace(backup, real)
                    else:
                        os.unlink(real)
                except OSError:
                    if backup:
                        kept.append(f"{real} (its old contents are in {backup})")
        for tmp in [*self.temps.values(), *self.backups.values()]:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if not self.done:
            for folder in reversed(self.folders):
                with contextlib.suppress(OSError):
                    folder.rmdir()
        if kept:
            raise OutputError(f"could not restore {', '.join(kept)}",
                              fix="move the old contents back by hand")


def _staged(real: Path, data: bytes, old: os.stat_result | None) -> Path:
    """A new temporary file next to ``real`` holding ``data``, with the old file's owner and
    mode; removed again if writing it fails."""
    tmp = real.parent / f".{real.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, _FLAGS, 0o666)  # FileExistsError: not ours, nothing to remove
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if old is not None:
            _copy_owner_and_mode(tmp, old)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _backup(real: Path) -> Path:
    """A second name for ``real``'s current contents, in its folder."""
    backup = real.parent / f".{real.name}.{secrets.token_hex(8)}.old"
    try:
        os.link(real, backup)
    except OSError:  # no hard links here: a copy
        shutil.copy2(real, backup)
    return backup


def check_folder(path: str | Path, *, option: str = "-o") -> None:
    """Raise OutputError unless ``path`` is a folder that takes new files, or can be made as
    one (its parent is such a folder)."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    if real.exists():
        if not real.is_dir():
            raise OutputError(f"cannot write into {path}: it is not a folder",
                              fix=f"pass another {option}")
        _probe(real, path, option)
        return
    if not real.parent.is_dir():
        raise OutputError(f"cannot write into {path}: folder {real.parent} does not exist",
                          fix=f"create it (mkdir -p {real}), or pass another {option}")
    _probe(real.parent, path, option)


def check_output(path: str | Path, *, force: bool = False, may_exist: bool = False,
                 option: str = "-o", inside: str | Path | None = None) -> None:
    """Raise OutputError unless ``path`` can be written now: its folder exists and takes a
    new file, it is not a folder, and no symlink leads it out of ``inside`` (as for
    ``write_file``); an existing file needs ``force`` (or ``may_exist``), a read-only one
    ``force``. ``option`` names the flag the fix should mention."""
    path = Path(path)
    real = _contained(path, inside, option)
    old = _existing(path, real, force=force)
    if old is not None and not (force or may_exist):
        raise OutputError(f"{path} exists; pass --force to overwrite it, or another {option}")
    parent = real.parent
    if not parent.exists():
        raise OutputError(f"cannot write {path}: folder {parent} does not exist",
                          fix=f"create it (mkdir -p {parent}), or pass another {option}")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is not a folder",
                          fix=f"pass another {option}")
    _probe(parent, path, option)


def _probe(folder: Path, path: Path, option: str) -> None:
    """Raise OutputError unless a new file can be made in ``folder``."""
    probe = folder / f".{path.name}.{secrets.token_hex(8)}.probe"
    try:
        os.close(os.open(probe, _FLAGS, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}",
                          fix=f"pass another {option} in a folder you can write to") from None


def check_distinct(outputs: Sequence[tuple[str, str | Path]],
                   inputs: Sequence[tuple[str, str | Path]] = ()) -> None:
    """Raise OutputError if an output is an input or an earlier output (after resolving
    symlinks, and hard links of existing files). Pairs are (what the user calls it, path)."""
    for i, (label, out) in enumerate(outputs):
        for other_label, other in [*inputs, *outputs[:i]]:
            if _same(Path(out), Path(other)):
                raise OutputError(f"{label} {out} is the same file as {other_label} {other}",
                                  fix=f"pass another {label}")


def _contained(path: Path, inside: str | Path | None, option: str = "-o") -> Path:
    """The file ``path`` resolves to; OutputError when a symlink on the way leads out of
    ``inside`` (default: the resolved folder of ``path``, so only its last part counts)."""
    real = Path(os.path.realpath(path))
    folder = Path(os.path.realpath(path.parent if inside is None else inside))
    if real.parent != folder and folder not in real.parents:
        raise OutputError(f"{path} is a symbolic link to {real}, outside the output folder "
                          f"{folder}; writing through it would change a file there, with or "
                          "without --force",
                          fix=f"remove the link, or pass {real} itself as {option} if you mean "
                              "to replace it")
    return real


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def _existing(path: Path, real: Path, *, force: bool) -> os.stat_result | None:
    """The stat of the existing target, None if there is none; refuses what must not be
    replaced."""
    try:
        old = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):  # the folder checks say why
        return None
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    if stat.S_ISDIR(old.st_mode):
        raise OutputError(f"cannot write {path}: it is a folder", fix="pass a file name")
    if not stat.S_ISREG(old.st_mode):
        raise OutputError(f"cannot write {path}: it is not a regular file",
                          fix="pass the path of a regular file")
    if not old.st_mode & 0o222 and not force:
        raise OutputError(f"{path} is read-only (mode {stat.S_IMODE(old.st_mode):o})",
                          fix="pass --force to overwrite it (its mode is kept), or write elsewhere")
    return old


def _copy_owner_and_mode(tmp: Path, old: os.stat_result) -> None:
    if hasattr(os, "chown"):
        with contextlib.suppress(OSError):  # only root may give a file away
            os.chown(tmp, old.st_uid, old.st_gid)
    os.chmod(tmp, stat.S_IMODE(old.st_mode))


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}",
                       fix="check the folder exists and that you may write there")
