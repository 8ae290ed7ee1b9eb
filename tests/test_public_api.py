"""The public API and the command line are pinned: ``tests/public_api.json`` holds, as they
were before the package was laid out in stage folders (issue 21), every name of
``muprewrite.__all__`` with its signature (functions) or public attributes (classes), and every
CLI command with its options. A refactor that renames, drops or re-signs any of them fails
here; a deliberate change of the API edits the file in the same commit."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import click

import muprewrite
from muprewrite.cli.main import cli
from muprewrite.rules import RULES_DIR

PINNED = json.loads((Path(__file__).with_name("public_api.json")).read_text())


def _api() -> dict[str, str]:
    out = {}
    for name in sorted(muprewrite.__all__):
        obj = getattr(muprewrite, name)
        if inspect.isfunction(obj):
            out[name] = "def " + str(inspect.signature(obj)).replace(repr(RULES_DIR), "RULES_DIR")
        elif inspect.isclass(obj):
            out[name] = "class " + ",".join(sorted(n for n in vars(obj) if not n.startswith("_")))
        else:
            out[name] = type(obj).__name__
    return out


def _commands(command: click.Command, prefix: str) -> dict[str, list[str]]:
    options = sorted(o for p in command.params for o in (*p.opts, *p.secondary_opts)
                     if o.startswith("-"))
    out = {prefix: options + sorted(str(p.name) for p in command.params
                                    if isinstance(p, click.Argument))}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            out.update(_commands(sub, f"{prefix} {name}"))
    return out


def test_the_public_names_and_signatures_are_as_pinned() -> None:
    assert _api() == PINNED["api"]


def test_the_commands_and_their_options_are_as_pinned() -> None:
    assert _commands(cli, "muprewrite") == PINNED["cli"]
