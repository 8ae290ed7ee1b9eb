"""A Python source file as text, with what it takes to write it back byte for byte.

Stages: read the bytes; find the encoding as Python does (``tokenize.detect_encoding``: a
UTF-8 BOM, a PEP 263 ``coding`` comment, else UTF-8); decode without newline translation,
so CRLF, CR and LF endings all survive; ``encode`` reverses it (the BOM comes back with the
``utf-8-sig`` codec).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.py"
>>> _ = path.write_bytes(b"# -*- coding: latin-1 -*-\\r\\nx = 1  # caf\\xe9\\r\\n")
>>> src = read_source(path)
>>> src.encoding, src.text.endswith("caf\\u00e9\\r\\n")
('iso-8859-1', True)
>>> src.encode(src.text) == path.read_bytes()
True
"""

from __future__ import annotations

import io
import os
import re
import stat
import tokenize
from dataclasses import dataclass
from pathlib import Path

from ..errors import MuprewriteError

__all__ = ["SourceError", "SourceText", "read_source", "split_lines"]

MAX_SOURCE_BYTES = 64 * 1024 * 1024  # far above any model file; a bound for hostile input
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class SourceError(MuprewriteError):
    """A source file cannot be read or decoded."""


@dataclass(frozen=True)
class SourceText:
    text: str  # decoded, line endings as in the file, no BOM
    encoding: str  # a codec name; "utf-8-sig" when the file starts with a BOM

    def encode(self, text: str) -> bytes:
        """``text`` in this file's encoding (raises UnicodeEncodeError if it cannot be)."""
        return text.encode(self.encoding)


def read_source(path: str | Path) -> SourceText:
    """The text of the Python file ``path``, decoded as Python would decode it."""
    path = Path(path)
    try:
        st = os.stat(path)  # follows links: a link to a regular file is read through
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block, /dev/zero never end
            raise SourceError(f"{path} is not a regular file (a pipe, a device or a folder)",
                              fix="pass the path of your model's .py file")
        if st.st_size > MAX_SOURCE_BYTES:
            raise SourceError(f"{path} is {st.st_size} bytes, more than a Python source file "
                              f"muprewrite reads ({MAX_SOURCE_BYTES})",
                              fix="pass the path of your model's .py file")
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}",
                          fix="check the path and its permissions") from None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:  # an unknown codec in the cookie, or a BOM that contradicts it
        raise SourceError(f"cannot read {path}: {exc.msg}",
                          fix="declare a known encoding, e.g. # -*- coding: utf-8 -*-") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceError(f"cannot read {path}: byte {exc.start} is not valid {encoding}",
                          fix="save the file as UTF-8, or declare its encoding on line 1 or 2 "
                              "(PEP 263), e.g. # -*- coding: latin-1 -*-") from None
    return SourceText(text, encoding)


def split_lines(text: str) -> list[str]:
    """Lines with their endings (\\r\\n, \\r or \\n) kept; unlike ``str.splitlines``, form
    feeds and Unicode separators do not end a line.

    >>> split_lines("a\\r\\nb\\nc")
    ['a\\r\\n', 'b\\n', 'c']
    """
    return _LINE.findall(text)
