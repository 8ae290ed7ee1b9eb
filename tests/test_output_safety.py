"""Outputs never replace what the model reads, nor leave their folder through a symlink.

Each case builds a small project in a fresh folder, takes a byte/mode/inode snapshot of it,
runs the command in process and checks the refusal (one message naming the file and a fix)
and that the snapshot is unchanged, with --force too. Covered: coord-check --json and
spectra over a file the model imports (through a symlink in the output folder), -o FILE
through a link out of its folder, -o DIR/ over another model's tree, a symlinked project
file mirrored under its own name, and --in-place on a file another model also imports.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from emit_projects import import_tree, write_project

from muprewrite.cli.main import cli
from muprewrite.emit.find.importers import other_importers
from muprewrite.files import OutputError, check_output, write_file, write_files

TINY = '''import torch
from torch import nn

from blocks import Head, Hidden


class Net(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.hidden = Hidden(width)
        self.out = Head(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(self.inp(x).relu()))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(3, 4, device=self.inp.weight.device),)
'''

TINY_BLOCKS = '''import torch
from torch import nn


class Hidden(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).relu()


class Head(nn.Module):
    """The readout, defined here: emission edits this file."""

    def __init__(self, width: int, n_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)
'''

# a second model of the same project that imports the same blocks.py
OTHER = TINY.replace("class Net(", "class Other(")
ARGS = ("--model", "Net(width=32)", "--base", "Net(width=16)")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every entry under ``folder``: bytes (a link: its target), mode and inode."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if "__pycache__" in p.parts or (p.is_dir() and not p.is_symlink()):
            continue
        st = p.lstat()
        data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
        out[p.relative_to(folder).as_posix()] = (data, st.st_mode, st.st_ino)
    return out


def run(folder: Path, *args: str) -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(cli, list(args))
    finally:
        os.chdir(cwd)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def refused(folder: Path, pattern: str, *args: str) -> str:
    """Run ``args`` in ``folder``: exit 1 with one Error line matching ``pattern`` and a fix,
    every file under ``folder`` as it was."""
    before = snapshot(folder)
    code, output = run(folder, *args)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert code == 1 and len(errors) == 1, output
    assert "fix:" in errors[0], errors[0]
    assert re.search(pattern, errors[0]), errors[0]
    assert snapshot(folder) == before
    return errors[0]


# -- the writers -----------------------------------------------------------------------------


def test_a_link_out_of_the_folder_is_never_written_through(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "out").mkdir()
    victim = tmp_path / "proj" / "blocks.py"
    victim.write_text("keep\n")
    link = tmp_path / "out" / "result.json"
    link.symlink_to("../proj/blocks.py")
    before = snapshot(tmp_path)
    for force in (False, True):
        with pytest.raises(OutputError, match="symbolic link to .*blocks.py, outside"):
            write_file(link, b"{}", force=force)
        with pytest.raises(OutputError, match="outside the output folder"):
            write_files([(tmp_path / "out" / "a.json", b"1"), (link, b"2")], force=force)
        with pytest.raises(OutputError, match="outside the output folder"):
            check_output(link, force=force)
    assert snapshot(tmp_path) == before


def test_a_dangling_link_out_of_the_folder_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "new.json").symlink_to("../elsewhere.json")
    with pytest.raises(OutputError, match="outside the output folder"):
        write_file(tmp_path / "out" / "new.json", b"{}", force=True)
    assert not (tmp_path / "elsewhere.json").exists()


def test_inside_allows_links_within_a_tree(tmp_path: Path) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "real.py").write_text("old\n")
    (tmp_path / "tree" / "link.py").symlink_to("sub/real.py")
    write_file(tmp_path / "tree" / "link.py", b"new\n", inside=tmp_path / "tree")
    assert (tmp_path / "tree" / "sub" / "real.py").read_bytes() == b"new\n"
    with pytest.raises(OutputError, match="outside the output folder"):
        write_file(tmp_path / "tree" / "sub" / "real.py", b"x", inside=tmp_path / "tree" / "sub2")


# -- coord-check and spectra -------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_project(tmp_path, {"model.py": TINY, "blocks.py": TINY_BLOCKS})


def test_coord_check_json_never_replaces_a_file_the_model_imports(tiny: Path) -> None:
    error = refused(tiny, r"--json blocks\.py is the same file as a file MODEL_FILE imports",
                    "coord-check", "model.py", "--model", "Net(width={width})", "--widths",
                    "8,16", "--steps", "1", "--seeds", "1", "--json", "blocks.py", "--force")
    assert "pass another --json" in error


def test_coord_check_png_through_a_hard_link_to_an_import(tiny: Path) -> None:
    os.link(tiny / "blocks.py", tiny / "cc.png")
    refused(tiny, r"-o cc\.png is the same file as a file MODEL_FILE imports", "coord-check",
            "model.py", "--model", "Net(width={width})", "--widths", "8,16", "--steps", "1",
            "--seeds", "1", "-o", "cc.png", "--force")


def test_spectra_through_a_symlinked_folder_never_replaces_an_import(tiny: Path) -> None:
    """--out results, a link to the project folder, whose spectra_mup.json links to
    blocks.py: the link stays in its folder, but the file is one the model imports."""
    (tiny / "results").symlink_to(".")
    (tiny / "spectra_mup.json").symlink_to("blocks.py")
    refused(tiny, r"spectra_mup\.json is the same file as a file MODEL_FILE imports",
            "spectra", "model.py", "--model", "Net(width={width})", "--widths", "8,16",
            "--steps", "1", "--out", "results", "--force")


def test_spectra_never_writes_through_a_link_out_of_its_folder(tiny: Path) -> None:
    (tiny / "results").mkdir()
    (tiny / "results" / "spectra_mup.png").symlink_to("../blocks.py")
    refused(tiny, r"spectra_mup\.png is a symbolic link to .*blocks\.py, outside the output "
            r"folder", "spectra", "model.py", "--model", "Net(width={width})", "--widths",
            "8,16", "--steps", "1", "--out", "results", "--force")


# -- emission --------------------------------------------------------------------------------


def test_emit_o_file_never_writes_through_a_link_out_of_its_folder(tiny: Path) -> None:
    (tiny / "model.py").write_text(TINY.replace("Head(width, 2)", "nn.Linear(width, 2)"))
    (tiny / "out").mkdir()
    (tiny / "elsewhere.py").write_text("# not an output\n")
    (tiny / "out" / "net_mup.py").symlink_to("../elsewhere.py")
    refused(tiny, r"net_mup\.py is a symbolic link to .*elsewhere\.py, outside", "model.py",
            "--model", "Net(width=32)", "--base", "Net(width=16)", "-o", "out/net_mup.py",
            "--force")


def test_emit_tree_never_writes_through_a_link_out_of_the_tree(tiny: Path) -> None:
    """out/model.py, an earlier tree's link to notes.py beside the project: the muP model
    would be written into notes.py."""
    (tiny / "notes.py").write_text("# notes, imported by nothing\n")
    (tiny / "out").mkdir()
    (tiny / "out" / "model.py").symlink_to("../notes.py")
    refused(tiny, r"out/model\.py is a symbolic link to .*notes\.py, outside the output "
            r"folder", "model.py", *ARGS, "-o", "out/", "--force")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.py and other.py, two models of one project, both importing blocks.py, and the
    muP tree of model.py already emitted into out/."""
    folder = write_project(tmp_path_factory.mktemp("two_models"),
                           {"blocks.py": TINY_BLOCKS, "model.py": TINY, "other.py": OTHER})
    code, output = run(folder, "model.py", *ARGS, "-o", "out/")
    assert code == 0, output
    return folder


def test_a_tree_of_another_model_is_never_replaced(two_models: Path) -> None:
    error = refused(two_models, r"out/blocks\.py belongs to the muP tree of model\.py",
                    "other.py", "--model", "Other(width=32)", "--base", "Other(width=16)",
                    "-o", "out/", "--force")
    assert "emit other.py into another folder" in error
    before = snapshot(two_models)
    code, output = run(two_models, "model.py", *ARGS, "-o", "out/", "--force")
    assert code == 0, output  # the same model's earlier tree may be replaced
    after = snapshot(two_models)
    assert after.keys() == before.keys()
    assert all(after[k][0] == before[k][0] for k in after)  # byte for byte the same


def test_in_place_refuses_a_file_another_model_imports(two_models: Path) -> None:
    error = refused(two_models, r"--in-place would edit .*blocks\.py, which other\.py also "
                    r"import", "model.py", *ARGS, "--in-place")
    assert "--in-place-shared" in error


def test_in_place_shared_needs_in_place(tiny: Path) -> None:
    code, output = run(tiny, "model.py", "--model", "Net(width=32)", "--base", "Net(width=16)",
                       "--in-place-shared")
    assert code == 2 and "--in-place-shared is a permission for --in-place" in output


def test_in_place_shared_edits_the_shared_file(tmp_path: Path) -> None:
    folder = write_project(tmp_path, {"blocks.py": TINY_BLOCKS, "model.py": TINY,
                                      "other.py": OTHER})
    code, output = run(folder, "model.py", *ARGS, "--in-place", "--in-place-shared")
    assert code == 0, output
    assert b"part of the muP version of model.py" in (folder / "blocks.py").read_bytes()
    assert (folder / "other.py").read_text() == OTHER


def test_a_symlinked_project_file_is_mirrored_by_its_own_name(tmp_path: Path) -> None:
    folder = write_project(tmp_path, {"lib/blocks_impl.py": TINY_BLOCKS, "model.py": TINY})
    (folder / "blocks.py").symlink_to("lib/blocks_impl.py")
    code, output = run(folder, "model.py", *ARGS, "-o", "out/")
    assert code == 0, output
    assert sorted(p.relative_to(folder / "out").as_posix()
                  for p in (folder / "out").rglob("*.py")) == ["blocks.py", "model.py"]
    assert not (folder / "out" / "blocks.py").is_symlink()
    assert b"part of the muP version of model.py" in (folder / "out" / "blocks.py").read_bytes()
    module = import_tree(folder / "out", "model")
    assert module.Net(32).out.mup_lin_multiplier == pytest.approx(0.5)


# -- who imports a file --------------------------------------------------------------------


def test_importers_are_found_through_the_project_not_through_the_model(tmp_path: Path) -> None:
    """other.py reaches blocks.py through layers.py, which the model imports too; train.py
    reaches it only through model.py; pkg/user.py imports it relatively from a package."""
    write_project(tmp_path, {
        "blocks.py": "X = 1\n",
        "layers.py": "from blocks import X\n",
        "model.py": "import layers\n",
        "other.py": "import layers as L  # another model\n",
        "train.py": "from model import *\n",
        "pkg/__init__.py": "",
        "pkg/blocks.py": "Y = 2\n",
        "pkg/user.py": "from . import blocks\n",
        "broken.py": "def (:\n",
        "unrelated.py": "import os\n",
    })
    os.mkfifo(tmp_path / "pipe.py")  # never opened
    found = other_importers([tmp_path / "blocks.py", tmp_path / "pkg" / "blocks.py"],
                            main=tmp_path / "model.py", chain=[tmp_path / "layers.py"],
                            root=tmp_path)
    rel = {k.name if k.parent == tmp_path else "pkg/blocks.py":
           sorted(p.relative_to(tmp_path).as_posix() for p in v) for k, v in found.items()}
    assert rel == {"blocks.py": ["other.py"], "pkg/blocks.py": ["pkg/user.py"]}
    assert stat.S_ISFIFO((tmp_path / "pipe.py").lstat().st_mode)


def test_a_project_too_big_to_scan_is_refused(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from muprewrite.emit.errors import EmitError
    from muprewrite.emit.find import importers

    write_project(tmp_path, {"blocks.py": "X = 1\n", "model.py": "import blocks\n",
                             "a/b.py": "", "a/c.py": ""})
    monkeypatch.setattr(importers, "MAX_ENTRIES", 3)
    with pytest.raises(EmitError, match="(?s)more than 3 entries.*--in-place-shared"):
        other_importers([tmp_path / "blocks.py"], main=tmp_path / "model.py", chain=(),
                        root=tmp_path)
