"""``muprewrite check`` runs at sizes the user did not give, holds the header against the
code, finds the original of an ``-o DIR/`` tree, and checks a float32 model in float32.

The model is the tiny adaLN-Zero transformer of ``test_check_offinit`` (DiT's style).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from emit_projects import PKG, write_project
from test_check_offinit import MODEL

from muprewrite.cli.main import cli
from muprewrite.emit import emit
from muprewrite.spec import load_module
from muprewrite.verify.check_report import CheckError
from muprewrite.verify.check_specs import plan_sizes
from muprewrite.verify.source_check import check_emitted

BASE = "TinyDiT(width=16, heads=2)"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sizes")
    (out / "adaln.py").write_text(MODEL)
    return out


def test_widths_and_depths_are_added_from_the_specs(folder: Path) -> None:
    """One --model above the base: 1.5x the base is added, with the heads convention of the
    given spec (heads kept, or grown with the width); under a depth rule two depths other
    than the base's; all on the meta device, nothing evaluated."""
    user = load_module(folder / "adaln.py")
    plan = plan_sizes(user, BASE, ["TinyDiT(width=32, heads=2)"], False)
    assert plan.derived == ["TinyDiT(width=24, heads=2)"] and not plan.notes
    plan = plan_sizes(user, BASE, ["TinyDiT(width=32, heads=4)"], False)
    assert plan.derived == ["TinyDiT(width=24, heads=3)"]
    plan = plan_sizes(user, "TinyDiT(width=16, heads=2, depth=1)",
                      ["TinyDiT(width=32, heads=2, depth=1)"], True)
    assert plan.derived == ["TinyDiT(width=24, heads=2, depth=2)",
                            "TinyDiT(width=32, heads=2, depth=3)"]
    # two widths given, both power-of-two multiples: a third, not one, is added
    plan = plan_sizes(user, BASE, ["TinyDiT(width=32, heads=2)", "TinyDiT(width=64, heads=2)"],
                      False)
    assert plan.derived == ["TinyDiT(width=24, heads=2)"] and not plan.notes
    plan = plan_sizes(user, BASE, ["TinyDiT(width=32, heads=2)", "TinyDiT(width=48, heads=2)"],
                      False)
    assert plan.derived == [] and not plan.notes


def test_the_base_width_alone_is_refused(folder: Path) -> None:
    user = load_module(folder / "adaln.py")
    with pytest.raises(CheckError, match=r"every --model is at the base width"):
        plan_sizes(user, BASE, [BASE, "TinyDiT(heads=2, width=16)"], False)


@pytest.mark.slow
def test_a_deleted_branch_multiplier_checked_at_the_base_depth_fails(folder: Path) -> None:
    """Checked only at the base depth, where m_L^-alpha is 1, a deleted branch multiplier
    passed; check now adds two depths."""
    source = emit(folder / "adaln.py", "TinyDiT(width=32, heads=2, depth=2)",
                  "TinyDiT(width=16, heads=2, depth=1)", rule="completep").source
    broken, count = re.subn(r"self\.mup_branch_multiplier \* ", "", source)
    assert count == 2
    (folder / "nobranch_mup.py").write_text(broken)
    result = check_emitted(folder / "nobranch_mup.py", ["TinyDiT(width=32, heads=2, depth=1)"],
                           original=folder / "adaln.py", steps=1, derive=True)
    assert not result.passed and result.divergence is not None
    assert "depth=2" in result.divergence.width or "depth=3" in result.divergence.width


@pytest.mark.slow
def test_a_base_that_is_not_the_headers_fails(folder: Path) -> None:
    """mup_base_model() edited to build another base: the emitted init and apply then agree
    on the wrong base, and the file passed."""
    source = emit(folder / "adaln.py", "TinyDiT(width=32, heads=2)", BASE).source
    broken = source.replace(f"return {BASE}", "return TinyDiT(width=8, heads=2)")
    assert broken != source
    (folder / "rebased_mup.py").write_text(broken)
    result = check_emitted(folder / "rebased_mup.py", ["TinyDiT(width=32, heads=2)"],
                           original=folder / "adaln.py", steps=1)
    assert result.divergence is not None and result.divergence.what == "header"
    assert "TinyDiT(width=8, heads=2)" in result.divergence.detail
    assert BASE in result.divergence.detail
    (folder / "rerule_mup.py").write_text(source.replace('MUP_RULE = "mup"', 'MUP_RULE = "sp"'))
    result = check_emitted(folder / "rerule_mup.py", ["TinyDiT(width=32, heads=2)"],
                           original=folder / "adaln.py", steps=1)
    assert result.divergence is not None and result.divergence.what == "header"
    assert "MUP_RULE" in result.divergence.where and "'sp'" in result.divergence.detail


@pytest.mark.slow
def test_a_tree_file_is_never_its_own_original(tmp_path: Path) -> None:
    """-o DIR/: the header records mypkg/model.py; check without --original compared the
    emitted file with itself (a tree passed without testing anything)."""
    project = write_project(tmp_path / "proj", PKG)
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(cli, [str(project / "mypkg/model.py"), "--model",
                                 "Net(ModelConfig(width=64))", "--base",
                                 "Net(ModelConfig(width=32))", "-o", f"{out}/"])
    assert result.exit_code == 0, result.output
    main = out / "mypkg" / "model.py"
    assert main.read_text().startswith("# muprewrite: muP version of mypkg/model.py (rule")
    result = runner.invoke(cli, ["check", str(main), "--model", "Net(ModelConfig(width=64))"])
    assert result.exit_code == 1, result.output
    assert "its own original" in result.output and "--original path/to/mypkg/model.py" \
        in result.output
    # given the original, the edits of mypkg/layers.py are traced too (found through the
    # modules the emitted file imported); one guarded by a branch no run takes is named
    layers = out / "mypkg" / "layers.py"
    text = layers.read_text()
    line = next(i for i, s in enumerate(text.splitlines()) if "(MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5" in s)
    lines = text.splitlines()
    indent = lines[line][:len(lines[line]) - len(lines[line].lstrip())]
    lines[line:line + 1] = [f"{indent}if q.shape[-1] < 0:  # never", f"    {lines[line]}",
                            f"{indent}else:", f"    {lines[line]}"]
    layers.write_text("\n".join(lines) + "\n")
    result = runner.invoke(cli, ["check", str(main), "--model", "Net(ModelConfig(width=64))",
                                 "--original", str(project / "mypkg/model.py"), "--steps", "1"])
    assert result.exit_code == 3, result.output
    assert f"layers.py:{line + 2}:" in result.output and "if q.shape[-1] < 0:" in result.output


@pytest.mark.slow
def test_a_model_that_computes_in_float32_is_checked_in_float32(folder: Path) -> None:
    """Timestep features built in float32 (``.float()``, ``dtype=torch.float32``), as the
    original DiT does: check stopped on the dtype error; now it runs in float32 at 1e-4 and
    says so, passes the file and fails a deleted readout multiplier."""
    text = MODEL.replace("torch.arange(4, dtype=t.dtype", "torch.arange(4, dtype=torch.float32")
    text = text.replace("args = t[:, None]", "args = t.float()[:, None]")
    assert text.count("float32") == 1 and ".float()" in text
    (folder / "adaln32.py").write_text(text)
    source = emit(folder / "adaln32.py", "TinyDiT(width=32, heads=2)", BASE).source
    for name, body in (("ok32_mup.py", source),
                       ("noreadout32_mup.py", source.replace(" * self.mup_linear_multiplier", ""))):
        (folder / name).write_text(body)
        result = check_emitted(folder / name, ["TinyDiT(width=32, heads=2)"],
                               original=folder / "adaln32.py", steps=2, derive=False)
        assert any("float32" in note for note in result.notes), result.notes
        assert result.passed == (name == "ok32_mup.py"), result.divergence
