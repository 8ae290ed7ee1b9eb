"""Emission across the files of a project: every file that needs muP gets it, or a refusal.

Two projects written here: a model file with a ``blocks.py`` beside it holding the attention
and the readout class (as PixArt-style repos do; its ``__init__`` calls ``.item()``, so it is
emitted with ``device="cpu"``), and a package ``mypkg/`` with relative imports and a config
dataclass. Each is emitted into a mirrored tree (``-o DIR/``) that imports on its own and, in
float64 at 2x and 4x the base width, equals ``muprewrite.apply`` on the original: parameters
bit-identical after seeding, outputs to 1e-10, five AdamW steps to rel 1e-10. ``--in-place``
replaces both files or neither; ``--diff`` shows both; a library edit is still refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from click.testing import CliRunner
from emit_projects import CONFIG, PKG, TWO, import_tree, tree, write_project
from emitted import float64, train_losses

import muprewrite
from muprewrite.cli import emit_cmd
from muprewrite.cli.main import cli
from muprewrite.files import write as write_module

pytestmark = pytest.mark.slow

TWO_ARGS = ["--model", "Net(width=128)", "--base", "Net(width=32)", "--device", "cpu"]
PKG_ARGS = ["--model", "Net(ModelConfig(width=64))", "--base", "Net(ModelConfig(width=32))"]
SDPA = "scaled_dot_product_attention(q, k, v, scale=MUP_D_HEAD_BASE ** 0.5 / q.shape[-1])"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, str]]:
    """Each project emitted once with -o DIR/: name -> (project, DIR, CLI output)."""
    out = {}
    for name, files, args, main in (("two", TWO, TWO_ARGS, "model.py"),
                                    ("pkg", PKG, PKG_ARGS, "mypkg/model.py")):
        project = write_project(tmp_path_factory.mktemp(name), files)
        folder = tmp_path_factory.mktemp(f"{name}_out") / "mup"
        code, output = run(str(project / main), *args, "-o", f"{folder}/")
        assert code == 0, output
        out[name] = (project, folder, output)
    return out


def test_two_files_mirrored_tree(emitted: dict[str, tuple[Path, Path, str]]) -> None:
    project, folder, output = emitted["two"]
    assert sorted(tree(folder)) == ["blocks.py", "model.py"]
    assert tree(project) == {k: v.encode() for k, v in TWO.items()}  # originals untouched
    blocks, model = (folder / "blocks.py").read_text(), (folder / "model.py").read_text()
    assert blocks.startswith('# muprewrite: muP edits (rule "mup"')
    assert "part of the muP version of model.py" in " ".join(blocks.splitlines()[:6])
    assert "MUP_D_HEAD_BASE = 16  # head size at base width" in blocks
    assert "scaled_dot_product_attention(q, k, v, scale=MUP_D_HEAD_BASE ** 0.5 / q.shape[-1])" \
           in blocks
    assert "return self.linear(self.norm(x) * self.mup_linear_multiplier)" in blocks
    assert "    mup_linear_multiplier = 1.0" in blocks and "def mup_init" not in blocks
    assert model.startswith('# muprewrite: muP version of model.py (rule "mup"')
    assert "def mup_init" in model and "mup_init(self)" in model
    assert "\nMUP_D_HEAD_BASE = " not in model and "blocks.py:19" in model
    assert "# MUP_D_HEAD_BASE = 16 (head size at base width) is defined in blocks.py" in model
    assert f"wrote {folder / 'blocks.py'}" in output
    assert run(str(folder / "model.py"), "--check")[0] == 0
    code, said = run(str(folder / "blocks.py"), "--check")
    assert code == 0 and "mup_init; check that file" in said


def test_package_mirrored_tree_imports_on_its_own(
        emitted: dict[str, tuple[Path, Path, str]]) -> None:
    project, folder, output = emitted["pkg"]
    assert sorted(tree(folder)) == ["mypkg/__init__.py", "mypkg/config.py", "mypkg/layers.py",
                                    "mypkg/model.py"]
    assert tree(folder)["mypkg/config.py"] == CONFIG.encode()  # copied: model imports it
    assert "copied 2 unchanged project file(s)" in output
    layers = (folder / "mypkg" / "layers.py").read_text()
    assert "att = (q @ k.transpose(-2, -1)) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5 / " \
           "q.shape[-1] ** 0.5  # (B, H, N, N)" in layers
    assert "return self.fc(self.norm(x.mean(dim=1)) * self.mup_fc_multiplier)" in layers
    script = ("import sys; sys.path.insert(0, sys.argv[1]); sys.modules['muprewrite'] = None\n"
              "from mypkg.model import Net, ModelConfig, mup_param_groups\n"
              "net = Net(ModelConfig(width=128)); print(net.head.mup_fc_multiplier)")
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True,
                          text=True, cwd=folder.parent)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == 0.25  # 1 / (128 / 32)


def _two(module: ModuleType, width: int) -> torch.nn.Module:
    return module.Net(width=width)


def _pkg(module: ModuleType, width: int) -> torch.nn.Module:
    return module.Net(module.ModelConfig(width=width))


@pytest.mark.parametrize("width", [64, 128])
@pytest.mark.parametrize(("name", "module", "make"), [("two", "model", _two),
                                                      ("pkg", "mypkg.model", _pkg)])
def test_emitted_project_equals_runtime_apply(emitted: dict[str, tuple[Path, Path, str]],
                                              name: str, module: str, width: int,
                                              make: Callable[[ModuleType, int], torch.nn.Module]
                                              ) -> None:
    project, folder, _ = emitted[name]
    original, ours = import_tree(project, module), import_tree(folder, module)
    with float64():
        torch.manual_seed(0)  # the emitted MUP_BASE_SEED
        base = make(original, 32)
        torch.manual_seed(1)
        runtime = muprewrite.apply(make(original, width), base=base)
        torch.manual_seed(1)
        model = make(ours, width)
        theirs, mine = runtime.state_dict(), model.state_dict()
        assert theirs.keys() == mine.keys()
        assert all(torch.equal(theirs[k], mine[k]) for k in theirs)
        torch.manual_seed(2)
        inputs = runtime.example_inputs()
        out = runtime(*inputs)
        torch.testing.assert_close(model(*inputs), out, rtol=1e-10, atol=1e-10)
        target = torch.randn_like(out)
        expected = train_losses(runtime, muprewrite.param_groups(runtime, lr=1e-2, weight_decay=0.1),
                          inputs, target, 5)
        got = train_losses(model, ours.mup_param_groups(model, lr=1e-2, weight_decay=0.1), inputs,
                     target, 5)
    assert len(set(expected)) > 1
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)




# -- --in-place: both files or neither -------------------------------------------------------

def _failing_second_replace(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """The writer's second os.replace fails (after the first file was replaced)."""
    real_write, real_replace = write_module.write_files, os.replace

    def write_files(*args: object, **kwargs: object) -> list[Path]:
        calls: list[object] = []

        def replace(src: object, dst: object) -> None:
            calls.append(dst)
            if len(calls) == 2:
                raise error
            real_replace(src, dst)  # type: ignore[arg-type]

        monkeypatch.setattr(write_module.os, "replace", replace)
        try:
            return real_write(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            monkeypatch.setattr(write_module.os, "replace", real_replace)

    monkeypatch.setattr(emit_cmd, "write_files", write_files)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_in_place_replaces_both_files_or_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 error: BaseException) -> None:
    project = write_project(tmp_path, TWO)
    (project / "blocks.py").chmod(0o640)
    before = tree(project)
    _failing_second_replace(monkeypatch, error)
    code, output = run(str(project / "model.py"), *TWO_ARGS, "--in-place")
    assert code == 1, output  # Ctrl-C: click's Abort here; muprewrite's main() exits 130
    assert isinstance(error, KeyboardInterrupt) or "No space left" in output
    assert tree(project) == before  # the first file was put back; no temporary file is left
    monkeypatch.undo()
    code, output = run(str(project / "model.py"), *TWO_ARGS, "--in-place")
    assert code == 0, output
    assert SDPA in (project / "blocks.py").read_text() and sorted(tree(project)) == sorted(before)
    assert (project / "blocks.py").stat().st_mode & 0o777 == 0o640  # its mode kept
    code, output = run(str(project / "model.py"), *TWO_ARGS, "--in-place")
    assert code == 1 and "was written by muprewrite" in output  # never muP twice


def test_another_model_over_an_edited_file_is_refused(tmp_path: Path) -> None:
    """blocks.py already holds muP edits (emitted in place for model.py): a second model file
    of the project that uses it is refused, naming blocks.py."""
    project = write_project(tmp_path, TWO)
    assert run(str(project / "model.py"), *TWO_ARGS, "--in-place")[0] == 0
    (project / "other.py").write_text(TWO["model.py"])
    code, output = run(str(project / "other.py"), *TWO_ARGS, "-o", f"{tmp_path / 'out'}/")
    assert code == 1 and "blocks.py was written by muprewrite" in output
    assert not (tmp_path / "out").exists()


def test_write_files_keeps_the_single_file_guarantees(tmp_path: Path) -> None:
    real, link, new = tmp_path / "real.txt", tmp_path / "link.txt", tmp_path / "a" / "new.txt"
    real.write_bytes(b"old")
    real.chmod(0o444)
    link.symlink_to(real.name)
    with pytest.raises(write_module.OutputError, match="read-only"):
        write_module.write_files([(new, b"x"), (link, b"new")], make_folders=True)
    assert not (tmp_path / "a").exists() and real.read_bytes() == b"old"
    write_module.write_files([(new, b"x"), (link, b"new")], force=True, make_folders=True)
    assert link.is_symlink() and real.read_bytes() == b"new" and new.read_bytes() == b"x"
    assert real.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "link.txt", "new.txt", "real.txt"]


# -- --diff, -o FILE, outputs checked first, libraries refused ------------------------------

def test_diff_shows_every_changed_file_and_writes_nothing(tmp_path: Path) -> None:
    project = write_project(tmp_path, TWO)
    code, output = run(str(project / "model.py"), *TWO_ARGS, "--diff")
    assert code == 0, output
    assert f"--- {project / 'model.py'}" in output and f"--- {project / 'blocks.py'}" in output
    assert f"+        y = F.{SDPA}" in output
    assert "+        mup_init(self)  # muP: init scale and forward multipliers" in output
    assert tree(project) == {k: v.encode() for k, v in TWO.items()}


@pytest.mark.parametrize("output", ["out.py", None])
def test_one_output_file_cannot_hold_two(tmp_path: Path, output: str | None) -> None:
    project = write_project(tmp_path, TWO)
    args = ["-o", str(tmp_path / output)] if output else []
    code, said = run(str(project / "model.py"), *TWO_ARGS, *args)
    assert code == 1 and "2 files of the project change (model.py, blocks.py)" in said
    assert "-o DIR/" in said and tree(project) == {k: v.encode() for k, v in TWO.items()}


def test_tree_outputs_checked_before_and_after_analysis(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    project = write_project(tmp_path / "p", PKG)
    model = str(project / "mypkg" / "model.py")
    with monkeypatch.context() as patch:  # refused before any analysis runs
        patch.setattr("muprewrite.emit.emit", lambda *a, **k: pytest.fail("analysis ran"))
        code, said = run(model, *PKG_ARGS, "-o", f"{tmp_path / 'missing' / 'out'}/")
        assert code == 1 and "does not exist" in said
        code, said = run(model, *PKG_ARGS, "-o", f"{project}/")
        assert code == 2 and "is MODEL_FILE itself" in said
    out = tmp_path / "out"
    write_project(out, {"mypkg/layers.py": "# mine\n"})
    code, said = run(model, *PKG_ARGS, "-o", str(out))  # an existing folder, no slash needed
    assert code == 1 and "exists; pass --force" in said
    assert tree(out) == {"mypkg/layers.py": b"# mine\n"}  # nothing written, not even model.py
    assert run(model, *PKG_ARGS, "-o", str(out), "--force")[0] == 0
    assert sorted(tree(out)) == ["mypkg/__init__.py", "mypkg/config.py", "mypkg/layers.py",
                                 "mypkg/model.py"]


def test_a_readout_in_an_installed_library_is_refused(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    library = tmp_path / "site-packages"
    write_project(library, {"extlib_final.py": TWO["blocks.py"]})
    monkeypatch.syspath_prepend(str(library))
    project = write_project(tmp_path / "p", {"model.py": TWO["model.py"].replace(
        "from blocks import", "from extlib_final import")})
    code, said = run(str(project / "model.py"), *TWO_ARGS, "-o", f"{tmp_path / 'out'}/")
    assert code == 1 and len(said.strip().splitlines()) == 1, said
    assert "extlib_final.py:" in said and "outside your project" in said
    assert "local subclass" in said and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("name", "main", "models"), [
    ("two", "model.py", ("Net(width=64)", "Net(width=128)")),
    ("pkg", "mypkg/model.py", ("Net(ModelConfig(width=64))", "Net(ModelConfig(width=128))")),
])
def test_emitted_tree_passes_the_behavioural_check(emitted: dict[str, tuple[Path, Path, str]],
                                                   name: str, main: str,
                                                   models: tuple[str, str]) -> None:
    """``muprewrite check DIR/model.py --original model.py``: same module names in two
    places (and a constructor calling .item(), built on the CPU)."""
    project, folder, _output = emitted[name]
    args = ["check", str(folder / main), "--original", str(project / main)]
    for spec in models:
        args += ["--model", spec]
    code, output = run(*args)
    assert code == 0, output
    # the base and the two widths given (powers of two), and 1.5x the base added by check
    # (the constructor reads a value: the sizes are derived from a build on the CPU)
    assert output.count("ok: ") == 4 and "width=48)" in output
