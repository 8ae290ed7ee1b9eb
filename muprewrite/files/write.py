"""The one way this package writes a file: whole or not at all, never over an input.

``write_file`` stages: resolve symlinks (the link stays, its target gets the bytes); refuse
a folder, a non-regular file, or a read-only file unless ``force``; write a temporary file
in the target's folder (created with mode 0o666, so a new file follows the umask); give it
the old file's owner and mode; ``os.replace`` it over the target. The temporary file is
removed on any exception, KeyboardInterrupt and SystemExit included.

``check_output`` and ``check_distinct`` make the same checks before a command computes
anything, so a bad output is reported at once.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
>>> write_file(out, b"hi\\n").read_bytes()
b'hi\\n'
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import MuprewriteError

__all__ = ["OutputError", "check_distinct", "check_output", "write_file"]

_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)


class OutputError(MuprewriteError):
    """An output cannot be written where asked, or would overwrite an input."""


def write_file(path: str | Path, data: bytes, *, force: bool = False) -> Path:
    """Replace the contents of ``path`` (or of the file it links to) by ``data``.

    Raises OutputError, leaving ``path`` as it was and no temporary file behind.
    """
    path = Path(path)
    real = Path(os.path.realpath(path))
    old = _existing(path, real, force=force)
    tmp = real.parent / f".{real.name}.{secrets.token_hex(8)}.tmp"
    ours = True
    try:
        try:
            fd = os.open(tmp, _FLAGS, 0o666)
        except FileExistsError:
            ours = False  # not ours to remove
            raise
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if old is not None:
            _copy_owner_and_mode(tmp, old)
        os.replace(tmp, real)
        ours = False
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        if ours:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def check_output(path: str | Path, *, force: bool = False, may_exist: bool = False,
                 option: str = "-o") -> None:
    """Raise OutputError unless ``path`` can be written now: its folder exists and takes a
    new file, and it is not a folder; an existing file needs ``force`` (or ``may_exist``),
    a read-only one ``force``. ``option`` names the flag the fix should mention."""
    path = Path(path)
    real = Path(os.path.realpath(path))
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
    probe = parent / f".{real.name}.{secrets.token_hex(8)}.probe"
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
