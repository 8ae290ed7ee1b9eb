"""Emission under depth rules (completep, depth-mup): the residual branch multiplier in source.

Every example with residual branches, emitted with a base of half the width and a quarter of
the blocks (a third for U-ViT), must equal ``muprewrite.apply`` (the behavioural check, in
float64) at the emitted size and, under completep, at another width and depth the file was
not emitted for; at the base size the emitted model is the original, bit
for bit. A deleted branch multiplier fails ``muprewrite check``; a residual add the emitter
cannot find, or a branch module whose output feeds no add, is refused with file:line.
(``mlp`` has no residual branch; ``cnn`` has one block and no depth option.)
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from textwrap import dedent

import pytest
import torch
from click.testing import CliRunner
from emitted import float64, import_without_muprewrite

import muprewrite
from muprewrite import MuprewriteError
from muprewrite.cli.main import cli
from muprewrite.emit import emit
from muprewrite.emit.errors import EmitError
from muprewrite.rewrite.attached import plan_of
from muprewrite.verify.source_check import check_emitted

ROOT = Path(__file__).resolve().parents[1]

# module -> (class, width option, depth option, other options, base width,
#            (base depth, emitted depth, another depth))
SPECS = {
    "dit": ("DiT", "hidden_size", "depth", "num_heads=2, input_size=8", 32, (1, 4, 3)),
    "gpt": ("GPT", "n_embd", "n_layer", "n_head=2, vocab_size=32, block_size=8", 32, (1, 4, 3)),
    "pixart": ("PixArtAlpha", "hidden_size", "depth", "num_heads=2, input_size=8", 32,
               (1, 4, 3)),
    # the last block's context stream is pre-only (another kind of block): a base of 2
    "mmdit": ("MMDiT", "hidden_size", "depth", "num_heads=2, input_size=8", 32, (2, 8, 3)),
    # depth = in_blocks + mid_block + out_blocks: 1 + 1 + 1 -> 3 + 1 + 3
    "uvit": ("UViT", "embed_dim", "depth", "num_heads=2, img_size=8", 32, (3, 7, 5)),
}


def _spec(module: str, width_factor: int, which: int) -> str:
    """The model at ``width_factor`` x the base width and depth number ``which`` (0: the base's,
    1: the emitted one, 2: another)."""
    cls, width, blocks, options, base, depths = SPECS[module]
    return f"{cls}({width}={base * width_factor}, {blocks}={depths[which]}, {options})"


def _emit(module: str, rule: str, tmp_path: Path, model: str | None = None) -> Path:
    emission = emit(ROOT / "examples" / f"{module}.py", model or _spec(module, 2, 1),
                    _spec(module, 1, 0), rule=rule)
    path = tmp_path / f"{module}_mup.py"
    path.write_text(emission.source)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["completep", "depth-mup"])
@pytest.mark.parametrize("module", list(SPECS))
def test_emitted_equals_apply_at_every_width_and_depth(module: str, rule: str,
                                                       tmp_path: Path) -> None:
    path = _emit(module, rule, tmp_path)
    source = path.read_text()
    assert "self.mup_branch_multiplier * " in source
    imported = {a.name for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    assert not any(name.startswith("muprewrite") for name in imported)
    sizes = [_spec(module, 2, 1)] + ([_spec(module, 3, 2)] if rule == "completep" else [])
    result = check_emitted(path, sizes, original=ROOT / "examples" / f"{module}.py")
    assert result.passed, result.divergence and result.divergence.line()
    assert len(result.compared) == 1 + len(sizes)  # the base, then each size


@pytest.mark.slow
@pytest.mark.parametrize("module", ["dit", "gpt"])
def test_base_size_is_the_original_bit_for_bit(module: str, tmp_path: Path) -> None:
    emitted = import_without_muprewrite(_emit(module, "completep", tmp_path))
    original = importlib.import_module(f"examples.{module}")
    cls = SPECS[module][0]
    spec = _spec(module, 1, 0)
    with float64():
        torch.manual_seed(5)
        ours = eval(spec, vars(emitted))  # noqa: S307 - our own constructor call
        torch.manual_seed(5)
        theirs = eval(spec, vars(original))  # noqa: S307
        assert type(ours).__name__ == cls
        for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), name
        torch.manual_seed(6)
        inputs = theirs.example_inputs()
        for mode in (True, False):
            ours.train(mode)
            theirs.train(mode)
            torch.manual_seed(7)
            out = ours(*inputs)
            torch.manual_seed(7)
            assert torch.equal(out, theirs(*inputs))


@pytest.mark.slow
def test_factors_equal_apply_and_branch_multiplier_is_set(tmp_path: Path) -> None:
    """The optimizer factors (eps included, which 5 AdamW steps barely see) and m_L^-1 on
    every block, against apply's plan, at a depth the file was not emitted at."""
    emitted = import_without_muprewrite(_emit("gpt", "completep", tmp_path))
    from examples.gpt import GPT

    spec = dict(n_embd=96, n_layer=6, n_head=2, vocab_size=32, block_size=8)
    with float64():
        model = emitted.GPT(**spec)
        torch.manual_seed(0)
        base = GPT(n_embd=32, n_layer=1, n_head=2, vocab_size=32, block_size=8)
        ref = GPT(**spec)
        ref = muprewrite.apply(ref, ref.example_inputs(), base=base, rule="completep")
    plan = plan_of(ref)
    assert plan is not None
    for name, factors in model.mup_factors.items():
        for quantity in ("init", "lr", "eps", "weight_decay"):
            assert factors.get(quantity, 1.0) == pytest.approx(getattr(plan[name], quantity),
                                                                rel=1e-12), (name, quantity)
    assert [b.mup_branch_multiplier for b in model.transformer.h] == [1 / 6] * 6


def test_deleted_branch_multiplier_fails_the_check(tmp_path: Path) -> None:
    path = _emit("gpt", "completep", tmp_path, model=_spec("gpt", 2, 2))
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "x + self.mup_branch_multiplier * self.mlp" in line)
    lines[at] = lines[at].replace("self.mup_branch_multiplier * ", "")
    path.write_text("".join(lines))
    result = CliRunner().invoke(cli, ["check", str(path), "--model", _spec("gpt", 2, 2),
                                      "--original", str(ROOT / "examples" / "gpt.py")])
    assert result.exit_code == 1, result.output
    assert "output diverges" in result.output and "Block.forward" in result.output


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "net.py"
    path.write_text(dedent('''\
        import torch
        from torch import nn


        class Block(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.norm = nn.LayerNorm(width)
                self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(),
                                         nn.Linear(2 * width, width))
        ''') + body + dedent('''

        class Net(nn.Module):
            def __init__(self, width=16, depth=2):
                super().__init__()
                self.embed = nn.Linear(4, width)
                self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
                self.head = nn.Linear(width, 3)

            def forward(self, x):
                x = self.embed(x)
                for block in self.blocks:
                    x = block(x)
                return self.head(x)

            def example_inputs(self):
                return (torch.randn(2, 5, 4),)
        '''))
    return path


def test_a_branch_added_through_a_helper_is_refused_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
    def forward(self, x):
        return x + through(self, self.norm(x))


def through(block, h):
    return block.mlp(h)
''')
    with pytest.raises(EmitError, match=r"residual branch blocks\.0\.mlp is added there") as err:
        emit(path, "Net(width=32, depth=4)", "Net(width=16, depth=2)", rule="completep")
    assert err.value.where == f"{path.resolve()}:13"


def test_a_branch_ending_in_an_inline_op_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
    def forward(self, x):
        return x + self.mlp(self.norm(x)).relu()
''')
    with pytest.raises(MuprewriteError, match=r"ends in an op of the block's own forward") as err:
        emit(path, "Net(width=32, depth=4)", "Net(width=16, depth=2)", rule="completep")
    assert str(err.value.where).endswith("net.py:13")


def test_every_path_of_the_host_is_edited_or_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
    def forward(self, x):
        x += self.mlp(self.norm(x))
        return x

    def step(self, x, cache):
        h = self.mlp(self.norm(x))
        x = h + x
        return x
''')
    emission = emit(path, "Net(width=32, depth=4)", "Net(width=16, depth=2)", rule="depth-mup")
    assert "x += self.mup_branch_multiplier * self.mlp(self.norm(x))" in emission.source
    assert "x = self.mup_branch_multiplier * h + x" in emission.source
    assert any("net.py:18: residual add of self.mlp(...) not run by any capture" in c
               for c in emission.changes)
    escaped = path.read_text().replace("        x = h + x\n", "        x = h\n")
    path.write_text(escaped)
    with pytest.raises(EmitError, match=r"self\.mlp computes a residual branch, but its output "
                                        r"here feeds no residual add") as err:
        emit(path, "Net(width=32, depth=4)", "Net(width=16, depth=2)", rule="depth-mup")
    assert str(err.value.where).endswith("net.py:17")


def test_emitted_file_measures_m_l_at_any_depth(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
    def forward(self, x):
        return x + self.mlp(self.norm(x))
''')
    (tmp_path / "net_mup.py").write_text(
        emit(path, "Net(width=32, depth=4)", "Net(width=16, depth=2)", rule="completep").source)
    emitted = import_without_muprewrite(tmp_path / "net_mup.py")
    model = emitted.Net(width=48, depth=3)  # any width and depth
    assert [b.mup_branch_multiplier for b in model.blocks] == [pytest.approx(2 / 3)] * 3
    assert emitted.MUP_BLOCKS == ("blocks.*",)
    with pytest.raises(ValueError, match=r"the model has 0 and its base 3 residual blocks"):
        emitted.mup_depth_ratio(torch.nn.Linear(2, 2), model)
