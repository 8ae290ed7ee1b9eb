"""The header comment of an emitted file: written on top of each changed file, read back to
know a file the emitter wrote (its rule, and for another file of the project, its main file).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from ..cst.literals import comment_text

__all__ = ["MARKER", "render_header", "render_part_header", "emitted_rule", "is_emitted",
           "part_of"]

MARKER = "# muprewrite:"  # first word of the header: marks a file the emitter wrote
_PART = "part of the muP version of "  # the header of another file of the project says this


def render_header(file: str, rule: str, title: str, changes: Sequence[str],
                  base: str) -> list[str]:
    """The comment lines that open the emitted file (without newlines)."""
    text = (f'muP version of {file} (rule "{rule}": {title}; base width {base}). Changed: '
            + "; ".join(changes) + ". Regenerate from the original file to change the rule "
            "or the base.")
    return _wrap(text)


def _wrap(text: str) -> list[str]:
    lines = textwrap.wrap(f"{MARKER} {comment_text(text)}", 90, break_long_words=False,
                          break_on_hyphens=False)
    return [lines[0]] + [f"# {line}" for line in lines[1:]]


def emitted_rule(text: str) -> str | None:
    """The rule named in the muprewrite header of ``text``; None for a file without one."""
    for line in text.splitlines()[:5]:
        if line.startswith(MARKER):
            return line.split('rule "', 1)[1].split('"', 1)[0] if 'rule "' in line else "?"
    return None


def part_of(text: str) -> str | None:
    """For a file holding only muP edits, the main emitted file it belongs to (its path
    under the project root); None for a main file or a file without the header."""
    head = " ".join(line.lstrip("# ") for line in text.splitlines()[:8])
    if emitted_rule(text) is None or _PART not in head:
        return None
    return head.split(_PART, 1)[1].split()[0].rstrip(";,.")


def render_part_header(file: str, main: str, rule: str, title: str, changes: Sequence[str],
                       base: str) -> list[str]:
    """The comment lines that open another edited file of the project (``file``, ``main``:
    paths under the project root)."""
    text = (f'muP edits (rule "{rule}": {title}) in {file}, {_PART}{main} (base width '
            f"{base}), which holds mup_init, mup_param_groups and mup_optimizer. Changed: "
            + "; ".join(changes)
            + ". Regenerate from the original files to change the rule or the base.")
    return _wrap(text)


def is_emitted(text: str) -> bool:
    """Whether ``text`` is a file this emitter wrote (its header carries the marker)."""
    return emitted_rule(text) is not None
