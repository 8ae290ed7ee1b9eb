"""Which of the emitted file's edits ``muprewrite check`` ran.

A path of the forward that no input set takes (a ``self.flash`` switch, a global such as
``ATTENTION_MODE``, an xformers branch) is not compared: a factor deleted there passes. So the
check records, with ``sys.settrace`` and only in the emitted files' own code objects (every
other frame is refused at its first event, which keeps it cheap), the lines each run executed,
and holds them against the edits: every statement of the model's code (not the muP block's
``mup_*`` functions) whose code names a ``mup_``/``MUP_`` attribute or constant, and every
statement at a line the header lists as edited (``line(s) 38, 40`` of the original, mapped to
the emitted file by a diff of the two texts: a factor deleted from a path no run takes, which
leaves the original's text, is still an edit there). An edit no run reached is named with the condition that guards it (the
innermost enclosing ``if``'s test, as written), and ``muprewrite check`` exits 3: passed what
it ran, N edits not exercised.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import io
import os
import re
import sys
import tokenize
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["Edit", "edits_of", "header_sites", "traced", "unexercised"]

_NAMES = ("mup_", "MUP_")


@dataclass(frozen=True)
class Edit:
    file: Path
    line: int  # the statement's first line
    lines: range  # the lines of the statement (for a compound one, its header)
    text: str  # the statement's first line, stripped
    guard: str  # the innermost enclosing condition ("" at the top of a function)
    function: str  # Class.method

    def shown(self) -> str:
        where = f"{self.file}:{self.line}: {self.text}"
        guard = (f" (guarded by `{self.guard}`)" if self.guard
                 else f" (in {self.function}, which no run called)")
        return where + guard


def _code_lines(text: str) -> set[int]:
    """Lines whose code (not a comment or a string) names mup_/MUP_."""
    out: set[int] = set()
    with contextlib.suppress(tokenize.TokenError, SyntaxError):
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NAME and tok.string.startswith(_NAMES):
                out.add(tok.start[0])
    return out


_LISTED = re.compile(r"line\(s\) ((?:[^\s,;()]+:)?\d+(?:, (?:[^\s,;()]+:)?\d+)*)")


def header_sites(text: str, original: str | None, name: str) -> set[int]:
    """The emitted file's lines of the edits its header lists for the file ``name`` (lines of
    ``original``, mapped through a diff; an entry ``other.py:19`` is another file's)."""
    if original is None:
        return set()
    head = " ".join(line.lstrip("# ") for line in text.splitlines()[:16]
                    if line.startswith("#"))
    listed = set()
    for group in _LISTED.findall(head):
        for item in group.split(", "):
            file, _, number = item.rpartition(":")
            if not file or Path(file).name == name:
                listed.add(int(number))
    if not listed:
        return set()
    ours, theirs = original.splitlines(), text.splitlines()
    mapped = {}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ours, theirs,
                                                       autojunk=False).get_opcodes():
        for i in range(i1, i2):
            mapped[i + 1] = (j1 + (i - i1 if tag == "equal" else min(i - i1, max(j2 - j1 - 1,
                                                                                0)))) + 1
    return {mapped[n] for n in listed if n in mapped}


def edits_of(file: Path, text: str, sites: Set[int] = frozenset()) -> list[Edit]:
    """The emitted edits of ``file``: statements of its classes' and functions' code (not
    the ``mup_*`` helpers) that name a muP attribute or constant or hold a line of
    ``sites``."""
    tree = ast.parse(text)
    marked = _code_lines(text) | set(sites)
    lines = text.splitlines()
    out: list[Edit] = []

    def visit(node: ast.AST, function: str, guard: str, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if child.name.startswith(("mup_", "_mup")):
                    continue
                name = f"{function}.{child.name}" if function else child.name
                visit(child, name, "", True)
                continue
            if isinstance(child, ast.ClassDef):
                visit(child, child.name, "", False)
                continue
            if not isinstance(child, ast.stmt):
                continue
            body: list[ast.stmt] = [s for f in ("body", "orelse", "finalbody", "handlers")
                                    for s in getattr(child, f, []) or []
                                    if isinstance(s, ast.stmt)]
            end = (min(s.lineno for s in body) - 1 if body else child.end_lineno
                   or child.lineno)
            own = range(child.lineno, max(end, child.lineno) + 1)
            if inside and any(n in marked for n in own):
                out.append(Edit(file, child.lineno, own, lines[child.lineno - 1].strip(),
                                guard, function))
            if isinstance(child, ast.If):
                test = f"if {ast.get_source_segment(text, child.test) or '...'}:"
                for s in child.body:
                    visit_one(s, function, test, inside)
                for s in child.orelse:
                    visit_one(s, function, f"else of {test}", inside)
            elif body:
                for s in body:
                    visit_one(s, function, guard, inside)

    def visit_one(stmt: ast.stmt, function: str, guard: str, inside: bool) -> None:
        holder = ast.Module(body=[stmt], type_ignores=[])
        visit(holder, function, guard, inside)

    visit(tree, "", "", False)
    return out


@contextlib.contextmanager
def traced(files: list[Path]) -> Iterator[dict[str, set[int]]]:
    """Executed lines of ``files`` (by real path) while the block runs."""
    wanted = {os.path.realpath(f) for f in files}
    seen: dict[str, set[int]] = {f: set() for f in wanted}
    known: dict[str, str | None] = {}

    def local(frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "line":
            seen[known[frame.f_code.co_filename]].add(frame.f_lineno)  # type: ignore[index]
        return local

    def calls(frame: FrameType, _event: str, _arg: Any) -> Any:
        name = frame.f_code.co_filename
        real = known.get(name, "")
        if real == "":
            real = known[name] = (os.path.realpath(name) if os.path.realpath(name) in wanted
                                  else None)
        if real is None:
            return None
        seen[real].add(frame.f_lineno)
        return local

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        yield seen
    finally:
        sys.settrace(previous)


def unexercised(edits: list[Edit], seen: dict[str, set[int]]) -> list[Edit]:
    """The edits none of whose lines ran."""
    out = []
    for edit in edits:
        ran = seen.get(os.path.realpath(edit.file), set())
        if not any(n in ran for n in edit.lines):
            out.append(edit)
    return out
