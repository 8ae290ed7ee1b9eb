"""Run many ``muprewrite`` command lines, each in a process of its own, importing torch once.

``python tests/cli_driver.py`` reads a JSON job list on stdin::

    {"workers": 2, "timeout": 300,
     "jobs": [{"id": "x", "cwd": "/tmp/case", "argv": ["analyze", ...],
               "stdout": "/tmp/io/x.out", "stderr": "/tmp/io/x.err"}, ...]}

imports what the CLI imports (torch, muprewrite and its commands), then forks one child per
job, at most ``workers`` at a time. The child is what the ``muprewrite`` console script would
be: its own folder, stdin from /dev/null, stdout and stderr to the job's files,
MUPREWRITE_TRACEBACK unset, ``sys.path[0]`` the script's folder, ``main(argv)``, exit
handlers run, its exit status as the process's. A child past ``timeout`` seconds is killed
(status -9, as ``subprocess`` reports it). The parent runs no torch op before forking, so
no thread pool is copied half-held. Prints ``{id: status}`` as JSON on stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path


def _preload() -> None:
    import libcst  # noqa: F401
    import torch  # noqa: F401
    import torch.export  # noqa: F401

    import muprewrite  # noqa: F401
    import muprewrite.analysis.analyze  # noqa: F401
    import muprewrite.cli.main  # noqa: F401
    import muprewrite.emit  # noqa: F401


def _child(job: dict) -> int:
    code = 1
    try:
        os.chdir(job["cwd"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        os.environ.pop("MUPREWRITE_TRACEBACK", None)
        cli = str(Path(sys.executable).with_name("muprewrite"))
        sys.argv = [cli, *job["argv"]]
        sys.path[0] = str(Path(cli).parent)  # as the console script has it
        from muprewrite.cli.main import main

        try:
            main(list(job["argv"]))
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # as the interpreter does with a message
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - shown as the interpreter would show it
            traceback.print_exc()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - nothing left to tell
                pass
        os._exit(code)


def run(jobs: list[dict], workers: int, timeout: float) -> dict[str, int]:
    todo = list(reversed(jobs))
    running: dict[int, tuple[str, float]] = {}
    codes: dict[str, int] = {}
    while todo or running:
        while todo and len(running) < workers:
            job = todo.pop()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(job)
            running[pid] = (job["id"], time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            codes[running.pop(pid)[0]] = os.waitstatus_to_exitcode(status)
            continue
        now = time.monotonic()
        for pid, (_, start) in running.items():
            if now - start > timeout:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    return codes


if __name__ == "__main__":
    request = json.load(sys.stdin)
    _preload()
    print(json.dumps(run(request["jobs"], request.get("workers", 2),
                         request.get("timeout", 300))))
