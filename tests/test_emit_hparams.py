"""Emission with base hyperparameters: the emitted file equals ``apply(..., hparams=card)``.

Each case emits an example with a card whose every multiplier differs from 1 (``--hparams
card.toml``), then compares the emitted model with ``muprewrite.apply`` given the same card, in
float64 to 1e-10, at the base size, the emitted size and another size the file was not emitted
for: the parameters after seeding (hidden init at the base width too), the forward from a
perturbed state (adaLN-Zero outputs are zero at init), each parameter's lr, weight decay and eps
in ``mup_param_groups``, and 3 AdamW steps of ``mup_optimizer`` (eps 1e-4: the key bias
has an exactly zero gradient, softmax being shift-invariant, and Adam with eps 1e-8 turns its
float rounding, which differs where the file scales a bias-less readout's input and apply its
output, into steps of 1e-8; the eps factors are compared in the groups). Cases: the tied GPT with
d_head growing and with the heads growing (the attention edited where d_head is fixed), the
adaLN-Zero DiT, and a GPT under completep with a base of another depth and a branch multiplier.

Each use of a MUP_* constant in the emitted code, deleted or changed, and each class in
MUP_CLASSES changed, fails the comparison; ``muprewrite check`` passes the file and fails
it when a constant no longer holds the card's value or a use is gone; what the file cannot
honour is refused, with its file:line where it has one.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from emit_projects import TWO, write_project
from emitted import float64, import_without_muprewrite

import muprewrite
from muprewrite import HParams, MuprewriteError
from muprewrite.cli.main import cli
from muprewrite.emit import emit
from muprewrite.emit.plan.tuned import CONSTANTS
from muprewrite.rules.hparams import Card

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CARD = HParams(output_multiplier=2.5, input_multiplier=0.6, attention_multiplier=1.7,
               hidden_init=1.4, lr_input=0.8, lr_hidden=1.9, lr_output=0.45, lr_vector=1.3)
TOL = 1e-10
GPT = dict(vocab_size=32, block_size=8)
DIT = dict(input_size=8)


@dataclass(frozen=True)
class Case:
    module: str
    cls: str
    sizes: tuple[dict[str, Any], ...]  # the base, the emitted size, another
    rule: str = "mup"
    hparams: HParams = CARD
    edits: tuple[str, ...] = field(default=())  # text the emitted file must hold


CASES = {
    "gpt-dhead": Case("gpt", "GPT", (dict(n_embd=32, n_head=2, **GPT),
                                     dict(n_embd=64, n_head=2, **GPT),
                                     dict(n_embd=128, n_head=2, **GPT)),
                      edits=("scale=MUP_ATTENTION_MULTIPLIER * MUP_D_HEAD_BASE ** 0.5 / "
                             "q.shape[-1]", "self.transformer.wte(idx) * "
                             "self.mup_wte_input_multiplier")),
    "gpt-heads": Case("gpt", "GPT", (dict(n_embd=32, n_head=2, **GPT),
                                     dict(n_embd=64, n_head=4, **GPT),
                                     dict(n_embd=128, n_head=8, **GPT)),
                      # a fixed head size takes the factor too: 1 here, right at any other
                      edits=("scale=MUP_ATTENTION_MULTIPLIER * MUP_D_HEAD_BASE ** 0.5 / "
                             "q.shape[-1]",)),
    "dit": Case("dit", "DiT", (dict(hidden_size=32, num_heads=2, **DIT),
                               dict(hidden_size=64, num_heads=2, **DIT),
                               dict(hidden_size=128, num_heads=2, **DIT)),
                edits=("self.mlp(t_freq.to(self.mlp[0].weight.dtype) * "
                       "self.mup_mlp_0_multiplier)", "self.linear(x * self.mup_linear_multiplier)")),
    "gpt-completep": Case("gpt", "GPT", (dict(n_embd=32, n_head=2, n_layer=1, **GPT),
                                         dict(n_embd=64, n_head=2, n_layer=4, **GPT),
                                         dict(n_embd=128, n_head=2, n_layer=3, **GPT)),
                          rule="completep", hparams=replace(CARD, branch_multiplier=0.7),
                          edits=("MUP_BRANCH_MULTIPLIER * m_depth ** -MUP_DEPTH_ALPHA",)),
}


def _call(cls: str, kwargs: dict[str, Any]) -> str:
    return f"{cls}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def _card(case: Case, folder: Path) -> Path:
    path = folder / "card.toml"
    path.write_text(Card(case.hparams, lr=1e-2, rule=case.rule).to_toml())
    return path


def _emit(case: Case, folder: Path) -> Path:
    emission = emit(ROOT / "examples" / f"{case.module}.py", _call(case.cls, case.sizes[1]),
                    _call(case.cls, case.sizes[0]), rule=case.rule, hparams=_card(case, folder))
    path = folder / f"{case.module}_mup.py"
    path.write_text(emission.source)
    return path


def _stages(model: torch.nn.Module, inputs: tuple, groups: Callable[..., list[dict]],
            optimizer: Callable[..., torch.optim.Optimizer]) -> Iterator[tuple[str, Any]]:
    """What one model does, stage by stage (a comparison stops at the first difference): its
    parameters after seeding, its output from a perturbed state, each parameter's (lr, weight
    decay, eps), the loss of each of 3 AdamW steps, and the parameters after them."""
    init = {n: v.detach().clone() for n, v in model.state_dict().items()}
    yield "init", init
    torch.manual_seed(5)
    model.load_state_dict({n: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
                           for n, v in init.items()})  # off the init: zero layers move
    with torch.no_grad():
        yield "output", model(*inputs)
    names = {id(p): n for n, p in model.named_parameters()}
    yield "groups", {names[id(p)]: (g["lr"], g["weight_decay"], g["eps"])
                     for g in groups(model, lr=1e-2, weight_decay=0.1) for p in g["params"]}
    opt = optimizer(model, lr=1e-2, weight_decay=0.1, eps=1e-4)
    for step in range(3):
        loss = model(*inputs).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield f"AdamW step {step + 1}", float(loss.detach())
    yield "after the steps", {n: p.detach().clone() for n, p in model.named_parameters()}


def _differs(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, dict):
        return ours.keys() != theirs.keys() or any(_differs(ours[k], v) for k, v in theirs.items())
    if isinstance(theirs, tuple):
        return any(_differs(a, b) for a, b in zip(ours, theirs, strict=True))
    if isinstance(theirs, torch.Tensor):
        scale = max(float(theirs.abs().max()), 1e-30) if theirs.numel() else 1.0
        return ours.shape != theirs.shape or bool((ours - theirs).abs().max() > TOL * scale)
    return abs(ours - theirs) > TOL * abs(theirs)


def _divergence(ours: Iterator[tuple[str, Any]], theirs: dict[str, Any]) -> str | None:
    """The first stage where ``ours`` differs from ``theirs`` (to 1e-10), or None."""
    for stage, value in ours:
        if _differs(value, theirs[stage]):
            return stage
    return None


def _expected(case: Case, size: dict[str, Any]) -> tuple[dict[str, Any], tuple]:
    """``apply`` with the card on the original model (base drawn with MUP_BASE_SEED, 0)."""
    original = getattr(importlib.import_module(f"examples.{case.module}"), case.cls)
    torch.manual_seed(0)
    base = original(**case.sizes[0])
    torch.manual_seed(1)
    model = original(**size)
    torch.manual_seed(2)
    inputs = model.example_inputs()
    model = muprewrite.apply(model, inputs, base=base, rule=case.rule, hparams=case.hparams)
    return dict(_stages(model, inputs, muprewrite.param_groups, muprewrite.optimizer)), inputs


def _ours(emitted: ModuleType, case: Case, size: dict[str, Any], inputs: tuple
          ) -> Iterator[tuple[str, Any]]:
    torch.manual_seed(1)
    model = getattr(emitted, case.cls)(**size)
    return _stages(model, inputs, emitted.mup_param_groups, emitted.mup_optimizer)


@pytest.mark.parametrize("name", list(CASES))
def test_emitted_equals_apply_with_the_card(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path = _emit(case, tmp_path)
    text = path.read_text()
    for field_name, constant in CONSTANTS.items():  # all nine, those at 1 too
        assert f"\n{constant} = {getattr(case.hparams, field_name)!r}  # " in text, constant
    for edit in case.edits:
        assert edit in text, edit
    emitted = import_without_muprewrite(path)
    with float64():
        for size in case.sizes:
            expected, inputs = _expected(case, size)
            assert _divergence(_ours(emitted, case, size, inputs), expected) is None, size


def _uses(text: str) -> list[ast.Name]:
    """Every read of a MUP_* base hyperparameter constant, but in the guard that refuses a
    value the file cannot honour (``_mup_fixed_hparams``: nothing to compare)."""
    tree = ast.parse(text)
    guard = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef)
             and f.name == "_mup_fixed_hparams" for n in ast.walk(f)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            and n.id in CONSTANTS.values() and id(n) not in guard]


def _replaced(text: str, node: ast.expr, new: str) -> str:
    lines = text.splitlines(keepends=True)
    line = lines[node.lineno - 1]
    assert node.end_lineno == node.lineno and node.end_col_offset is not None
    lines[node.lineno - 1] = line[:node.col_offset] + new + line[node.end_col_offset:]
    return "".join(lines)


def _class_mutants(text: str) -> list[tuple[str, str]]:
    """(what, mutated text): each MUP_CLASSES entry given another class."""
    out = []
    for match in re.finditer(r'^    ("[^"]+"): "(\w+)",$', text.split("MUP_CLASSES = {", 1)[1]
                             .split("\n}", 1)[0], re.M):
        other = "hidden" if match[2] == "vector" else "vector"
        line = match[0]
        out.append((f"{match[1]}: {match[2]} -> {other}",
                    text.replace(line, line.replace(f'"{match[2]}"', f'"{other}"'), 1)))
    return out


@pytest.mark.parametrize("name", ["gpt-dhead", "dit", "gpt-completep"])
def test_every_use_of_a_constant_is_needed(name: str, tmp_path: Path) -> None:
    """Deleting (1.0) or changing (x 1.25) any one use of a MUP_* constant, or changing a
    parameter's class, makes the emitted model differ from apply's with the card."""
    case = CASES[name]
    text = _emit(case, tmp_path).read_text()
    uses = _uses(text)
    names = {u.id for u in uses}
    assert names >= {CONSTANTS[f] for f, v in case.hparams.changed().items()
                     if not (f == "lr_output" and case.module == "gpt")}  # GPT's readout is tied
    mutants = [(f"{u.id} at line {u.lineno} deleted", _replaced(text, u, "1.0")) for u in uses]
    mutants += [(f"{u.id} at line {u.lineno} changed", _replaced(text, u, f"({u.id} * 1.25)"))
                for u in uses]
    if name == "gpt-dhead":
        mutants += _class_mutants(text)
    with float64():
        expected, inputs = _expected(case, case.sizes[1])
        for i, (what, mutant) in enumerate(mutants):
            path = tmp_path / f"mutant_{i}.py"
            path.write_text(mutant)
            ours = _ours(import_without_muprewrite(path), case, case.sizes[1], inputs)
            assert _divergence(ours, expected) is not None, f"not seen: {what}"


def _check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["check", *args, "--steps", "2"])
    return result.exit_code, result.output


def test_check_reads_the_constants_back_and_compares_them_with_the_card(tmp_path: Path) -> None:
    case = CASES["gpt-dhead"]
    card = _card(case, tmp_path)
    out = tmp_path / "gpt_mup.py"
    result = CliRunner().invoke(cli, [str(ROOT / "examples" / "gpt.py"), "--model",
                                      _call(case.cls, case.sizes[1]), "--base",
                                      _call(case.cls, case.sizes[0]), "--hparams", str(card),
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    args = [str(out), "--original", str(ROOT / "examples" / "gpt.py"), "--model",
            _call(case.cls, case.sizes[2])]
    code, output = _check(*args, "--hparams", str(card))
    assert code == 0, output
    assert "base hyperparameters: the card's" in output
    # retuned by hand: checked as retuned, but no longer the card
    out.write_text(text.replace("\nMUP_LR_HIDDEN = 1.9  #", "\nMUP_LR_HIDDEN = 2.2  #"))
    code, output = _check(*args)
    assert code == 0, output
    code, output = _check(*args, "--hparams", str(card))
    line = text[:text.index("\nMUP_LR_HIDDEN = ")].count("\n") + 2
    assert code == 1 and f"gpt_mup.py:{line}: MUP_LR_HIDDEN" in output, output
    assert "2.2 in the file, 1.9 in the card" in output
    # a use of a constant gone: the code no longer does what apply does with its values
    out.write_text(text.replace("scale=MUP_ATTENTION_MULTIPLIER * ", "scale="))
    code, output = _check(*args)
    assert code == 1 and "output diverges" in output, output


def test_default_emission_has_no_base_hyperparameters(tmp_path: Path) -> None:
    case = CASES["gpt-dhead"]
    source = emit(ROOT / "examples" / "gpt.py", _call(case.cls, case.sizes[1]),
                  _call(case.cls, case.sizes[0])).source
    assert not any(c in source for c in [*CONSTANTS.values(), "MUP_CLASSES", "MUP_LOOKUPS"])
    assert "self.transformer.wte(idx)  #" in source  # the tied lookups left as written


def test_a_branch_multiplier_the_file_cannot_honour(tmp_path: Path) -> None:
    """Under a width-only rule: a card with one is refused as apply refuses it; the constant
    at 1.0 is written, and the file refuses another value when the model is built."""
    case = CASES["gpt-dhead"]
    model, base = _call(case.cls, case.sizes[1]), _call(case.cls, case.sizes[0])
    with pytest.raises(MuprewriteError, match="depth rules"):
        emit(ROOT / "examples" / "gpt.py", model, base, hparams=HParams(branch_multiplier=0.5))
    source = emit(ROOT / "examples" / "gpt.py", model, base, hparams=CARD).source
    assert "\nMUP_BRANCH_MULTIPLIER = 1.0  # residual branches: none scaled" in source
    path = tmp_path / "gpt_mup.py"
    path.write_text(source.replace("\nMUP_BRANCH_MULTIPLIER = 1.0", "\nMUP_BRANCH_MULTIPLIER = 2.0"))
    emitted = import_without_muprewrite(path)
    with pytest.raises(ValueError, match="MUP_BRANCH_MULTIPLIER scales residual branches"):
        emitted.GPT(**case.sizes[1])


def test_a_card_of_another_rule_is_refused(tmp_path: Path) -> None:
    card = _card(CASES["gpt-completep"], tmp_path)
    with pytest.raises(MuprewriteError, match="tuned under rule 'completep'"):
        emit(ROOT / "examples" / "gpt.py", "GPT(n_embd=64)", "GPT(n_embd=32)", hparams=card)


def test_an_attention_in_another_file_is_refused_with_its_line(tmp_path: Path) -> None:
    """MUP_ATTENTION_MULTIPLIER lives in the main file, which blocks.py cannot import."""
    project = write_project(tmp_path, TWO)
    with pytest.raises(MuprewriteError, match=r"blocks\.py:\d+.*MUP_ATTENTION_MULTIPLIER") as exc:
        emit(project / "model.py", "Net(width=128)", "Net(width=32)", device="cpu",
             hparams=CARD)
    assert "define that attention's class in model.py" in exc.value.fix


MHA = '''import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(6, width)
        self.attn = nn.MultiheadAttention(width, width // 16, batch_first=True)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(h)

    def example_inputs(self):
        return (torch.randn(2, 5, 6),)
'''


def test_an_attention_torch_computes_is_refused_with_its_line(tmp_path: Path) -> None:
    """Heads grow (d_head fixed): without a card the attention needs no edit; with one its
    logits take MUP_ATTENTION_MULTIPLIER, which nn.MultiheadAttention cannot be given."""
    path = tmp_path / "mha.py"
    path.write_text(MHA)
    emit(path, "Net(width=64)", "Net(width=32)")
    with pytest.raises(MuprewriteError, match=r"mha\.py:14") as exc:
        emit(path, "Net(width=64)", "Net(width=32)", hparams=CARD)
    assert "MUP_ATTENTION_MULTIPLIER" in exc.value.message
