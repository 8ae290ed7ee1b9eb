"""Where a study lives, and how workers tell a live trial from one whose worker died.

A storage is a journal file (Optuna's ``JournalFileBackend``: the default, one file any
number of processes on one machine or a shared filesystem append to) or any database URL
Optuna accepts (``sqlite:///tune.db``, ``postgresql://...``). Either is a normal Optuna
storage: ``optuna-dashboard tune.journal`` (or the URL) opens it.

Dead workers: a trial whose process was killed stays RUNNING in the storage. Optuna's
heartbeat marks it FAIL once its heartbeat is older than a grace period, and retries it once
with the same parameters. Database storages have that built in; for the journal file,
:class:`HeartbeatJournalStorage` adds it through Optuna's own heartbeat interface (the beat is
a trial system attribute), and a trial whose worker ran on this machine and is gone is stale
at once. Workers also hold a lock on the journal file (``flock``) from choosing a trial to
starting it, so workers never start more trials than the study asks for; on a database
storage, two workers that finish at the same instant may start one trial too many.

This module imports Optuna at import time: import it only after ``require_optuna()``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat  # the interface Optuna's heartbeat uses
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from .errors import TuneError

__all__ = ["HeartbeatJournalStorage", "Claim", "open_storage", "storage_file", "describe",
           "HEARTBEAT_INTERVAL", "GRACE_PERIOD", "HEARTBEAT_ATTR", "ERROR_ATTR"]

HEARTBEAT_INTERVAL = 5  # seconds between beats of a running trial
GRACE_PERIOD = 30  # a trial silent this long is stale (its worker is taken to be dead)
HEARTBEAT_ATTR = "muprewrite:heartbeat"
ERROR_ATTR = "error"
HOST = socket.gethostname()

StorageLike = str | os.PathLike[str] | BaseStorage


def describe(storage: StorageLike) -> str:
    """The storage as the user named it (a path or URL)."""
    return storage if isinstance(storage, str) else os.fspath(storage) \
        if isinstance(storage, os.PathLike) else type(storage).__name__


def storage_file(storage: StorageLike) -> Path | None:
    """The local file holding the study (journal file or SQLite database), if any."""
    if isinstance(storage, BaseStorage):
        return None
    text = os.fspath(storage)
    if "://" not in text:
        return Path(text)
    if text.startswith("sqlite:///") and ":memory:" not in text:
        return Path(text[len("sqlite:///"):])
    return None


def open_storage(storage: StorageLike) -> BaseStorage:
    """The Optuna storage ``storage`` names, with dead-worker detection switched on."""
    if isinstance(storage, BaseStorage):
        return storage
    text = os.fspath(storage)
    if "://" not in text:
        path = Path(text)
        if not path.parent.is_dir():
            raise TuneError(f"cannot create the study journal {path}: folder {path.parent} "
                            "does not exist", fix=f"mkdir -p {path.parent}, or pass another "
                                                  "storage")
        if path.is_dir():
            raise TuneError(f"the storage {path} is a folder", fix="pass a file name, e.g. "
                                                                   "tune.journal")
        return HeartbeatJournalStorage(JournalFileBackend(str(path)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _rdb(text)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types
        raise TuneError(f"cannot open the storage {text}: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                        fix="pass a journal file path, or a database URL Optuna accepts "
                            "(sqlite:///tune.db, postgresql://user@host/db)") from None


def _rdb(url: str) -> BaseStorage:
    kwargs: dict[str, Any] = {"heartbeat_interval": HEARTBEAT_INTERVAL,
                              "grace_period": GRACE_PERIOD}
    try:
        return optuna.storages.RDBStorage(url, **kwargs, heartbeat_stale_trial_callback=retry)
    except TypeError:  # Optuna < 4.9 names it failed_trial_callback
        return optuna.storages.RDBStorage(url, **kwargs, failed_trial_callback=retry)


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a stale trial once more with the same parameters (Optuna's retry callback),
    without the dead attempt's error and heartbeat."""
    trial.user_attrs.pop(ERROR_ATTR, None)
    trial.system_attrs.pop(HEARTBEAT_ATTR, None)
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
        or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls(max_retry=1)(study, trial)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with Optuna's heartbeat: ``study.optimize`` beats every
    ``interval`` seconds while a trial runs and fails stale trials before asking for one."""

    def __init__(self, backend: Any, interval: int = HEARTBEAT_INTERVAL,
                 grace: int = GRACE_PERIOD) -> None:
        super().__init__(backend)
        self._interval = interval
        self._grace = grace

    def record_heartbeat(self, trial_id: int) -> None:
        beat: dict[str, Any] = {"trial": trial_id, "time": time.time(), "host": HOST, "pid": os.getpid()}
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, beat)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = []
        now = time.time()
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            why = self._why_stale(t, now)
            if why is not None:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    self.set_trial_user_attr(t._trial_id, ERROR_ATTR, why)
                    stale.append(t._trial_id)
        return stale

    def _why_stale(self, t: FrozenTrial, now: float) -> str | None:
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        if not isinstance(beat, dict) or beat.get("trial") != t._trial_id:
            beat = None  # no beat yet (or one copied from the trial this one retries)
        if beat is not None and beat.get("host") == HOST and not _alive(beat.get("pid")):
            return f"its worker (process {beat.get('pid')} on {HOST}) ended mid-trial"
        last = beat["time"] if beat is not None else (
            t.datetime_start.timestamp() if t.datetime_start else now)
        if now - last > self._grace:
            return f"its worker sent no heartbeat for {now - last:.0f} s (grace {self._grace} s)"
        return None

    def get_heartbeat_interval(self) -> int:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None]:
        return retry

    def get_failed_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None]:
        return retry  # the name before Optuna 4.9


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie does not)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)  # signal 0: a probe, nothing is sent
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class Claim:
    """An exclusive lock (``flock``) on the study's file, held from counting the trials to
    starting one; a no-op where there is no local file or no ``fcntl``."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._path is None or self._fd is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        try:
            fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file releases its flock
