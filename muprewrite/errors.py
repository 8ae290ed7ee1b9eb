"""The project's exception types. Every user-facing failure raises one of these.

Each error says what went wrong, where (parameter, graph node or source line) and how to
fix it; the CLI prints ``str(error)`` as its one-line (or few-line) message.
"""

from __future__ import annotations

__all__ = ["first_few", "printable", "MuprewriteError", "CaptureError", "ModelSpecError", "InputSpecError", "UsageError"]


class MuprewriteError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(self, message: str, *, where: str = "", fix: str = "") -> None:
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def one_line(self) -> str:
        """The error as a single line (for CLI messages about arguments)."""
        parts = [self.message] + ([f"at {self.where}"] if self.where else []) + (
            [f"fix: {self.fix}"] if self.fix else [])
        return printable("; ".join(parts))

    def _render(self) -> str:
        text = self.message
        if self.where:
            text += f"\n  at: {self.where}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class CaptureError(MuprewriteError):
    """The model's forward could not be captured as a graph."""


class ModelSpecError(MuprewriteError):
    """A ``--model``/``--base`` constructor expression is malformed or names nothing."""


class InputSpecError(MuprewriteError):
    """An ``--inputs`` expression or ``example_inputs`` value is malformed."""


class UsageError(MuprewriteError):
    """A library call got an argument that does not fit: a value of the wrong type, a base
    of another structure, or a Report that does not describe the model it is used with."""


def first_few(items: list[str], n: int = 3) -> str:
    """``"a; b; c (and 4 more)"``: the start of a list of problems, for one-line errors."""
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return "; ".join(items[:n]) + more


def printable(text: str) -> str:
    """``text`` on one line: a name from the user's model (a ``ModuleDict`` key) may hold line
    breaks or terminal control characters; they are shown escaped, as in a Python literal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
