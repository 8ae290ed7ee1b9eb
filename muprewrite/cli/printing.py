"""What the commands print while they work: stage messages on stderr for a person watching.

Shared by the commands (analyze, emit, check); it imports nothing of the CLI, and
``main.py`` imports the commands, never the other way round."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

__all__ = ["stage_printer"]


def stage_printer() -> Callable[[str], None] | None:
    """Stage messages on stderr, only when a person is watching (stderr is a terminal)."""
    if not sys.stderr.isatty():
        return None
    start = time.perf_counter()

    def say(message: str) -> None:
        click.echo(f"[{time.perf_counter() - start:5.1f}s] {message}...", err=True)

    return say
