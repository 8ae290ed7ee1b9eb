"""The code examples of README.md and docs/*.md, read out of the markdown for tests/test_docs.py.

A fenced block is an example when its language is ``python`` or ``bash``; ``diff``, ``text``
and ``toml`` blocks show output or file contents and are not run. An HTML comment on the last
non-blank line before the fence, ``<!-- not run: REASON -->``, marks a block that cannot run in
the suite (it takes minutes, or it is an excerpt of emitted source rather than a program);
REASON says which.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_LANGS = ("python", "bash")
SHOWN_LANGS = ("diff", "text", "toml")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<why>.+?)\s*-->$")
_FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(?P<title>.+?)\s*$")


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None  # the reason given in the marker, or None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """README.md, then every docs/*.md in name order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of one page, in order."""
    rel = str(page.relative_to(ROOT))
    lines = page.read_text(encoding="utf-8").split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group("lang")
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        if j == len(lines):
            raise ValueError(f"{rel}:{start + 1}: fence never closed")
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = _NOT_RUN.match(lines[k].strip()) if k >= 0 else None
        text = "\n".join(lines[start + 1:j]) + "\n"
        out.append(Block(rel, start + 1, lang, text, marker.group("why") if marker else None))
        i = j + 1
    return out


def commands(text: str) -> list[list[str]]:
    """The command lines of a bash block: continuations joined, comments dropped, split as the shell does."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.split("\n"):
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def options(argv: list[str]) -> list[str]:
    """The option names a command line uses (``--name`` and ``-x``, without ``=value``)."""
    return [w.split("=", 1)[0] for w in argv if re.match(r"^--?[A-Za-z]", w)]


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link and image outside code fences."""
    out = []
    in_fence = False
    for n, line in enumerate(page.read_text(encoding="utf-8").split("\n"), 1):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        stripped = re.sub(r"`[^`]*`", "", line)
        out += [(n, m.group("target")) for m in _LINK.finditer(stripped)]
    return out


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a page: lower case, punctuation dropped, spaces as '-'."""
    out = set()
    in_fence = False
    for line in page.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        m = None if in_fence else _HEADING.match(line)
        if m:
            title = m.group("title").lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out
