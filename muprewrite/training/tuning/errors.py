"""The sweep's error types.

``TuneError`` is a user-facing failure of the sweep as a whole (a proxy that cannot be
built, a study made with other settings, no trial that finished). A failure of *one* trial
is never raised to the caller: it is recorded on that trial (user attribute ``error``) and
the sweep goes on.
"""

from __future__ import annotations

from ...errors import MuprewriteError

__all__ = ["TuneError", "TrialTimeout", "TrialDiverged"]


class TuneError(MuprewriteError):
    """The sweep cannot run or cannot go on."""


class TrialTimeout(BaseException):
    """A trial ran past its time budget (raised by SIGALRM in the worker's main thread).

    A ``BaseException``, so a train function's ``except Exception`` does not swallow it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"ran past its time budget of {seconds:g} s")


class TrialDiverged(Exception):
    """The train function reported a loss that is not a finite number."""
