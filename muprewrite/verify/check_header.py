"""The emitted file's header, read back and held against the file's own code.

The header names the original (its path under the project root), the rule and the base
call; the code holds ``MUP_RULE`` and ``mup_base_model()``. ``muprewrite check`` trusts
neither alone: a ``mup_base_model()`` edited to build another base, or a ``MUP_RULE`` that is
not the header's, is a divergence naming both.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .check_report import CheckError, Divergence

__all__ = ["Header", "read_header", "base_call", "cross_check", "original_of"]

_HEADER = re.compile(r"muP version of (?P<file>.+?) \(rule \"(?P<rule>[^\"]+)\"")  # spaces too
_BASE = re.compile(r"; base width (?P<base>.+?)\)\. Changed: ")


@dataclass(frozen=True)
class Header:
    file: str  # the original, under its project root ("mypkg/model.py"; older files: a name)
    rule: str
    base: str | None  # the base call as the header writes it (None: not found)


def read_header(path: Path, text: str) -> Header:
    head = " ".join(line.lstrip("# ") for line in text.splitlines()[:12])
    found = _HEADER.search(head)
    if found is None:
        raise CheckError(f"{path} has no muprewrite header", fix=f"check the file muprewrite "
                         f"wrote: muprewrite ORIGINAL.py --model ... --base ... -o {path.name}")
    base = _BASE.search(head[found.end():])
    return Header(found["file"], found["rule"], base["base"] if base else None)


def original_of(path: Path, header: Header, original: str | Path | None) -> Path:
    """The original file: ``original`` when given, else the header's file beside ``path``;
    never ``path`` itself nor another emitted file (an ``-o DIR/`` tree holds emitted files
    under the original's names: comparing one with itself would prove nothing)."""
    if original:
        source = Path(original)
    else:
        source = path.with_name(Path(header.file).name)
    fix = f"pass --original path/to/{header.file} (the file {path.name} was written from)"
    if not source.is_file():
        raise CheckError(f"the original {source} of {path} is not there", fix=fix)
    if source.resolve() == path.resolve():
        raise CheckError(f"{path} is its own original per its header ({header.file}): it is "
                         "an emitted file in an -o DIR/ tree, and comparing it with itself "
                         "would prove nothing", fix=fix)
    from ..emit import emitted_rule
    from ..files import read_source

    if emitted_rule(read_source(source).text) is not None:
        raise CheckError(f"the original {source} of {path} was itself written by muprewrite",
                         fix=fix)
    return source


def base_call(emitted: ModuleType, path: Path) -> str:
    """The base constructor call written in the emitted ``mup_base_model``."""
    func = getattr(emitted, "mup_base_model", None)
    if func is None:
        raise CheckError(f"{path} has no mup_base_model(): it is not a whole muprewrite file",
                         fix="regenerate it from the original file")
    tree = ast.parse(inspect.getsource(func))
    returns = [n for n in ast.walk(tree) if isinstance(n, ast.Return) and n.value is not None]
    if len(returns) != 1:
        raise CheckError(f"{path}: mup_base_model() was edited", fix="regenerate the file")
    return ast.unparse(returns[0].value)  # type: ignore[arg-type]


def _same_call(a: str, b: str) -> bool:
    try:
        return ast.dump(ast.parse(a.strip(), mode="eval")) == ast.dump(
            ast.parse(b.strip(), mode="eval"))
    except SyntaxError:
        return "".join(a.split()) == "".join(b.split())


def cross_check(path: Path, header: Header, emitted: ModuleType, base: str,
                rule: str | None) -> Divergence | None:
    """The header's base and rule against ``mup_base_model()`` and ``MUP_RULE``."""
    if header.base is not None and not _same_call(header.base, base):
        return Divergence("the header", "header", f"{path}: mup_base_model()", "-", -1,
                          float("inf"), f"it builds {base}, the header says the base is "
                          f"{header.base}")
    held = getattr(emitted, "MUP_RULE", None)
    if rule is None and isinstance(held, str) and held != header.rule:
        return Divergence("the header", "header", f"{path}: MUP_RULE", "-", -1, float("inf"),
                          f"it is {held!r}, the header says rule {header.rule!r}")
    return None
