"""Hostile input to the writers: no file lost, no temporary file left, no byte changed that
emission does not mean to change, every refusal one ``Error:`` line before any compute."""

from __future__ import annotations

import difflib
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from muprewrite.cli.main import cli
from muprewrite.files import OutputError, write_file
from muprewrite.files import write as write_module

ROOT = Path(__file__).resolve().parents[1]
MLP = (ROOT / "examples" / "mlp.py").read_bytes()
WIDE, BASE = "MLP(width=256)", "MLP(width=64)"
READOUT = b"        return self.output_layer(h)  # (B, F_out)"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def run_bytes(*args: str) -> tuple[int, bytes]:
    """Like run, with stdout as bytes (``output`` turns CRLF into LF)."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout_bytes


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- write_file ----------------------------------------------------------------------------


def _interruptible() -> None:
    """A job started in the background by a shell inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: give the child Ctrl-C back, as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_symlink_is_written_through(tmp_path: Path) -> None:
    real, link = tmp_path / "real.txt", tmp_path / "link.txt"
    real.write_bytes(b"old")
    real.chmod(0o640)
    link.symlink_to(real.name)
    write_file(link, b"new")
    assert link.is_symlink() and os.readlink(link) == real.name
    assert real.read_bytes() == b"new" and _mode(real) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def test_read_only_is_refused_unless_forced_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    target.chmod(0o444)
    with pytest.raises(OutputError, match="(?s)read-only.*--force"):
        write_file(target, b"new")
    assert target.read_bytes() == b"old"
    write_file(target, b"new", force=True)
    assert target.read_bytes() == b"new" and _mode(target) == 0o444


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_a_new_file_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        write_file(tmp_path / "new.txt", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new.txt") == mode


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    target.write_bytes(b"old")
    target.chmod(0o751)
    write_file(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o751


def test_folders_and_devices_are_never_replaced(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a folder"):
        write_file(tmp_path, b"x")
    with pytest.raises(OutputError, match="not a regular file"):
        write_file("/dev/null", b"x")
    with pytest.raises(OutputError, match="cannot write"):
        write_file(tmp_path / "missing" / "x.txt", b"x")


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_no_temporary_file_survives_a_failed_write(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   error: BaseException) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")

    def fail(fd: int) -> None:
        raise error

    monkeypatch.setattr(write_module.os, "fsync", fail)
    with pytest.raises(OutputError if isinstance(error, OSError) else KeyboardInterrupt):
        write_file(target, b"new")
    assert _files(tmp_path) == {"out.txt": b"old"}


_SIGNAL_MID_WRITE = """
import os, signal, sys
from muprewrite.files import write_file
real_fsync = os.fsync
def fsync(fd):  # the signal arrives while the temporary file is open
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    real_fsync(fd)
os.fsync = fsync
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # what the CLI's main() does
write_file(sys.argv[1], b"new")
"""


@pytest.mark.parametrize(("signame", "codes"), [("SIGINT", (-2, 130)), ("SIGTERM", (143,))])
def test_no_temporary_file_survives_a_signal(tmp_path: Path, signame: str,
                                             codes: tuple[int, ...]) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    done = subprocess.run([sys.executable, "-c", _SIGNAL_MID_WRITE, str(target), signame],
                          capture_output=True, text=True, cwd=ROOT, preexec_fn=_interruptible)
    assert done.returncode in codes, done.stderr
    assert _files(tmp_path) == {"out.txt": b"old"}


# -- emit: outputs that are inputs, unwritable outputs -------------------------------------

@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.py"
    path.write_bytes(MLP)
    return path


def _no_emission(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the analysis ran before the output was checked")

    monkeypatch.setattr("muprewrite.emit.emit", fail)


def test_emit_refuses_an_output_that_is_an_input(tmp_path: Path, model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _no_emission(monkeypatch)
    os.link(model, tmp_path / "hard.py")
    shutil.copy(ROOT / "rules" / "mup.toml", tmp_path / "mup.toml")
    before = _files(tmp_path)
    code, output = run(str(model), "--model", WIDE, "--base", BASE, "-o", str(tmp_path / "hard.py"))
    assert code == 1 and "is the same file as MODEL_FILE" in output
    code, output = run(str(model), "--model", WIDE, "--base", BASE, "--rule",
                       str(tmp_path / "mup.toml"), "-o", str(tmp_path / "mup.toml"), "--force")
    assert code == 1 and "is the same file as --rule" in output
    assert _files(tmp_path) == before


@pytest.mark.parametrize(("where", "message"), [("missing/out.py", "does not exist"),
                                                ("blocker/out.py", "is not a folder")])
def test_emit_refuses_an_unwritable_output_before_analysis(
        tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch, where: str,
        message: str) -> None:
    _no_emission(monkeypatch)
    (tmp_path / "blocker").write_text("a file")
    code, output = run(str(model), "--model", WIDE, "--base", BASE, "-o", str(tmp_path / where))
    assert code == 1 and output.startswith("Error: ") and message in output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output


def test_emit_read_only_needs_force_and_keeps_its_mode(tmp_path: Path, model: Path) -> None:
    model.chmod(0o444)
    code, output = run(str(model), "--model", WIDE, "--base", BASE, "--in-place")
    assert code == 1 and "read-only" in output and model.read_bytes() == MLP
    code, output = run(str(model), "--model", WIDE, "--base", BASE, "--in-place", "--force")
    assert code == 0, output
    assert b"mup_init(self)" in model.read_bytes() and _mode(model) == 0o444


# -- coord-check: refused before any compute -------------------------------------------------

@pytest.fixture
def no_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("coord_check ran before the outputs were checked")

    monkeypatch.setattr("muprewrite.verify.coord_check", fail)


def _coord(model: Path, *args: str) -> tuple[int, str]:
    return run("coord-check", str(model), "--model", "MLP(width={width})", "--widths", "32,64",
               *args)


@pytest.mark.usefixtures("no_compute")
def test_coord_check_outputs_clash_refused_at_once(tmp_path: Path, model: Path) -> None:
    png = str(tmp_path / "c.png")
    before = _files(tmp_path)
    code, output = _coord(model, "-o", png, "--json", png)
    assert code == 1 and f"--json {png} is the same file as -o {png}" in output
    code, output = _coord(model, "-o", png, "--json", str(model), "--force")
    assert code == 1 and "is the same file as MODEL_FILE" in output
    code, output = _coord(model, "-o", str(model), "--force")
    assert code == 1 and "is the same file as MODEL_FILE" in output
    assert _files(tmp_path) == before


@pytest.mark.usefixtures("no_compute")
def test_coord_check_unwritable_output_refused_at_once(tmp_path: Path, model: Path) -> None:
    code, output = _coord(model, "-o", str(tmp_path / "nowhere" / "c.png"))
    assert code == 1 and "folder" in output and "does not exist" in output
    assert "widths x seeds" not in output  # no progress bar: nothing was computed
    (tmp_path / "blocker").write_text("a file")
    code, output = _coord(model, "-o", str(tmp_path / "c.png"), "--json",
                          str(tmp_path / "blocker" / "c.json"))
    assert code == 1 and "is not a folder" in output
    code, output = _coord(model, "-o", str(tmp_path / "c.json"), "--json", str(tmp_path / "d.json"))
    assert code == 1 and "not 'json'" in output


# -- emission keeps every byte it does not mean to change -----------------------------------

def _latin1(src: bytes) -> bytes:
    commented = src.replace(b"plain fully", "plain café fully".encode("latin-1"))
    return b"# -*- coding: latin-1 -*-\n" + commented


ENCODED = {
    "crlf": lambda src: src.replace(b"\n", b"\r\n"),
    "mixed": lambda src: b"".join(line.replace(b"\n", b"\r\n") if i % 3 else line
                                  for i, line in enumerate(src.splitlines(keepends=True))),
    "latin-1": _latin1,
    "bom": lambda src: b"\xef\xbb\xbf" + src,
    "no final newline": lambda src: src.rstrip(b"\n"),
}


def _changed_lines(before: bytes, after: bytes) -> list[bytes]:
    """Lines of ``before`` that are not in ``after`` byte for byte (endings included)."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [line for op, i1, i2, _, _ in matcher.get_opcodes() if op in ("replace", "delete")
            for line in a[i1:i2]]


@pytest.mark.parametrize("kind", list(ENCODED))
def test_emission_round_trip_keeps_bytes(tmp_path: Path, kind: str) -> None:
    source = ENCODED[kind](MLP)
    path = tmp_path / "mlp.py"
    path.write_bytes(source)
    out = tmp_path / "mlp_mup.py"
    code, output = run(str(path), "--model", WIDE, "--base", BASE, "-o", str(out))
    assert code == 0, output
    data = out.read_bytes()
    assert path.read_bytes() == source
    if kind == "bom":
        assert data.startswith(b"\xef\xbb\xbf")
        source, data = source[3:], data[3:]
    assert [line.rstrip(b"\r\n") for line in _changed_lines(source, data)] == [READOUT]
    if kind == "crlf":
        assert data.count(b"\n") == data.count(b"\r\n") > source.count(b"\r\n")
    if kind == "latin-1":
        assert data.startswith(b"# -*- coding: latin-1 -*-\n") and b"caf\xe9" in data
    assert data.endswith(b"\n") == source.endswith(b"\n")
    _import_and_run(out)


def _import_and_run(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"emitted_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.MLP(width=256)
    assert model(*model.example_inputs()).shape == (2, 10)
    assert module.mup_param_groups(model, lr=1e-3)


def test_diff_shows_line_endings_and_check_reads_the_encoding(tmp_path: Path) -> None:
    path = tmp_path / "mlp.py"
    path.write_bytes(ENCODED["crlf"](MLP))
    code, diff = run_bytes(str(path), "--model", WIDE, "--base", BASE, "--diff")
    assert code == 0 and b"\n+import re\r\n+\r\n" in diff and b"\n import torch\r\n" in diff
    assert _files(tmp_path) == {"mlp.py": ENCODED["crlf"](MLP)}
    path.write_bytes(_latin1(MLP))
    assert run(str(path), "--model", WIDE, "--base", BASE, "--in-place")[0] == 0
    code, output = run(str(path), "--check")
    assert code == 0 and "muP (rule 'mup')" in output


def test_added_code_the_encoding_cannot_hold_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "mlp_\u0142.py"  # the header names the file: "ł" is not ASCII
    path.write_bytes(b"# -*- coding: ascii -*-\n" + MLP)
    code, output = run(str(path), "--model", WIDE, "--base", BASE)
    assert code == 1 and output.startswith("Error: ") and "encoded as ascii" in output
    assert "Traceback" not in output and _files(tmp_path) == {path.name: path.read_bytes()}


def test_library_writers_use_the_safe_write(tmp_path: Path) -> None:
    from muprewrite.verify.coordcheck import CoordCheck

    check = CoordCheck("mup", (32, 64), 1, 1e-3, 1, {"": ((1.0, 1.0), (1.0, 1.0))})
    target = tmp_path / "c.json"
    target.write_text("{}")
    target.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        check.save_json(target)
    check.save_json(target, force=True)
    assert _mode(target) == 0o444 and '"rule": "mup"' in target.read_text()


def test_diff_marks_a_changed_line_ending_and_a_missing_final_newline() -> None:
    from muprewrite.cli.emit_cmd import _diff

    assert _diff("a\r\nb\n", "a\nb", "x", "y").splitlines(keepends=True)[3:] == [
        "-a\r\n", "-b\n", "+a\n", "+b\n", "\\ No newline at end of file\n"]
