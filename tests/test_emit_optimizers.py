"""The emitted optimizer code under the Muon and weight-decay rules: ``mup_param_groups`` and
``mup_optimizer`` train what ``muprewrite.param_groups`` / ``muprewrite.optimizer`` train on the
``apply``'d model, and ``muprewrite check`` fails a file whose Muon flag or weight-decay factor
was changed.

examples/gpt.py at a small size (vocabulary 64, 8 positions, width 64 over base 32) is
emitted once per rule. Muon orthogonalises in bfloat16; the two runs compared start from the
same parameters and see the same inputs, so they agree to the last bits.
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from click.testing import CliRunner
from emitted import float64, import_without_muprewrite
from fitting import fit

import muprewrite
from muprewrite.cli.main import cli
from muprewrite.emit import emit
from muprewrite.verify.source_check import check_emitted

ROOT = Path(__file__).resolve().parents[1]
GPT = ROOT / "examples" / "gpt.py"
SIZE = dict(vocab_size=64, block_size=8, n_layer=2, n_head=2)
BASE = "GPT(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=32)"
WIDE = "GPT(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=64)"
RULES = ["mup-muon", "mup-muon-rms", "mup-wd-sqrt", "mup-wd-independent"]
# the values tuned at base width: Muon's and AdamW's all differ, so that a swap shows
VALUES = {"mup-muon": dict(lr=0.02, adam_lr=3e-3, weight_decay=0.05, adam_weight_decay=0.1),
          "mup-wd-sqrt": dict(lr=1e-2, weight_decay=0.1),
          "mup-wd-independent": dict(lr=1e-2, weight_decay=1e-3)}
VALUES["mup-muon-rms"] = VALUES["mup-muon"]
HIDDEN = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

needs_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"),
                                reason="torch.optim.Muon needs torch >= 2.9")


def _rule_param(rule: str) -> object:
    return pytest.param(rule, marks=needs_muon) if "muon" in rule else rule


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The models are tiny: one thread is faster, and far faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("optimizers")
    paths = {}
    for rule in RULES:
        paths[rule] = folder / f"gpt_{rule.replace('-', '_')}.py"
        paths[rule].write_text(emit(GPT, WIDE, BASE, rule=rule).source)
    return paths


def _models(path: Path, rule: str) -> tuple[ModuleType, torch.nn.Module, torch.nn.Module]:
    """The emitted module (imported without muprewrite), its model at WIDE and the original
    rewritten by apply with the emitted file's base draw; float64, the same parameters."""
    from examples.gpt import GPT as Original

    module = import_without_muprewrite(path)
    torch.manual_seed(0)  # MUP_BASE_SEED
    base = Original(**SIZE, n_embd=32)
    torch.manual_seed(1)
    runtime = muprewrite.apply(Original(**SIZE, n_embd=64), base=base, rule=rule)
    torch.manual_seed(1)
    model = module.GPT(**SIZE, n_embd=64)
    for (name, a), b in zip(runtime.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    return module, model, runtime


def _losses(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int,
            scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> list[float]:
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 64, (2, 8), generator=gen)
    target = torch.randn(2, 8, 64, generator=gen)
    return fit(model, idx, target, opt, steps, scheduler)


@pytest.mark.parametrize("rule", [_rule_param(r) for r in RULES])
def test_the_check_passes(emitted: dict[str, Path], rule: str) -> None:
    result = check_emitted(emitted[rule], [WIDE], original=GPT, steps=3)
    assert result.passed, result.divergence and result.divergence.line()
    name = "Muon + AdamW" if "muon" in rule else "AdamW"
    assert len(result.compared) == 2 and all(f"3 {name} steps" in c for c in result.compared)


@pytest.mark.parametrize("rule", [_rule_param(r) for r in RULES])
def test_mup_optimizer_trains_as_muprewrite_optimizer(emitted: dict[str, Path],
                                                      rule: str) -> None:
    with float64():
        module, model, runtime = _models(emitted[rule], rule)
        ours = module.mup_optimizer(model, **VALUES[rule])
        theirs = muprewrite.optimizer(runtime, **VALUES[rule])
        got, expected = _losses(model, ours, 5), _losses(runtime, theirs, 5)
    assert len(set(expected)) == 5  # it trained
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    for (name, a), b in zip(runtime.state_dict().items(), model.state_dict().values()):
        error = float((a - b).abs().max() / a.abs().max())  # of the largest value
        assert error < 1e-10, (name, error)
    kinds = {g.get("optimizer", "adamw") for g in ours.param_groups}
    assert kinds == ({"muon", "adamw"} if "muon" in rule else {"adamw"})


@needs_muon
@pytest.mark.parametrize("rule", ["mup-muon", "mup-muon-rms"])
def test_muon_groups(emitted: dict[str, Path], rule: str) -> None:
    """Muon steps exactly the hidden matrices, at lr (x m^-1/2 under mup-muon-rms) with the
    rule's adjust_lr_fn and Muon's own eps; AdamW the rest at adam_lr, with eps."""
    module = import_without_muprewrite(emitted[rule])
    model = module.GPT(**SIZE, n_embd=128)  # m = 4
    names = {id(p): n for n, p in model.named_parameters()}
    groups = module.mup_param_groups(model, **VALUES[rule])
    muon = {names[id(p)]: g for g in groups if g["optimizer"] == "muon" for p in g["params"]}
    assert sorted(muon) == sorted(f"transformer.h.{i}.{h}" for i in range(2) for h in HIDDEN)
    factor = 1.0 if rule == "mup-muon" else 0.5
    adjust = "original" if rule == "mup-muon" else "match_rms_adamw"
    for g in groups:
        if g["optimizer"] == "muon":
            assert "eps" not in g and g["adjust_lr_fn"] == adjust
            assert g["lr"] == pytest.approx(0.02 * factor)
            assert g["weight_decay"] == pytest.approx(0.05 / factor)
        else:
            assert g["lr"] == 3e-3 and g["eps"] == 1e-8  # no hidden matrix left on AdamW
    opt = module.mup_optimizer(model, **VALUES[rule])
    assert [g["eps"] for g in opt.param_groups if g["optimizer"] == "muon"] == [1e-7]
    with pytest.raises(ValueError, match="adam_lr= is missing"):
        module.mup_param_groups(model, lr=0.02)


@needs_muon
def test_muon_with_adamw_schedules_and_resumes(emitted: dict[str, Path]) -> None:
    """A scheduler scales every group, Muon's and AdamW's; a state_dict saved mid-run and
    loaded into a fresh optimizer, and a deep copy of model and optimizer, continue the run
    exactly."""
    module = import_without_muprewrite(emitted["mup-muon"])
    torch.manual_seed(1)
    model = module.GPT(**SIZE, n_embd=64)
    opt = module.mup_optimizer(model, **VALUES["mup-muon"])
    start = [g["lr"] for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    _losses(model, opt, 2, sched)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr / 4 for lr in start])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    copied_model, copied = copy.deepcopy((model, opt))
    buffer.seek(0)
    saved = torch.load(buffer)
    torch.manual_seed(3)
    twin = module.GPT(**SIZE, n_embd=64)
    twin.load_state_dict(saved["model"])
    resumed = module.mup_optimizer(twin, **VALUES["mup-muon"])
    resumed.load_state_dict(saved["opt"])
    assert [g["lr"] for g in resumed.param_groups] == [g["lr"] for g in opt.param_groups]
    expected = _losses(model, opt, 3)
    assert _losses(twin, resumed, 3) == expected
    assert _losses(copied_model, copied, 3) == expected


def test_refusals(emitted: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    adam = import_without_muprewrite(emitted["mup-wd-sqrt"])
    model = adam.GPT(**SIZE, n_embd=64)
    with pytest.raises(ValueError, match="steps every parameter with AdamW"):
        adam.mup_optimizer(model, lr=1e-2, adam_lr=1e-3)
    muon = import_without_muprewrite(emitted["mup-muon"])
    model = muon.GPT(**SIZE, n_embd=64)
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    with pytest.raises(RuntimeError, match=r"torch\.optim\.Muon, which torch .* lacks: it "
                                           r"needs PyTorch >= 2\.9"):
        muon.mup_optimizer(model, lr=0.02, adam_lr=3e-3)


def test_vector_like_parameters_get_no_weight_decay(emitted: dict[str, Path]) -> None:
    module = import_without_muprewrite(emitted["mup-wd-sqrt"])
    model = module.GPT(**SIZE, n_embd=128)  # m = 4
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in module.mup_param_groups(
        model, lr=1e-2, weight_decay=0.1) for p in g["params"]}
    for name, value in decay.items():
        assert value == (pytest.approx(0.2) if name.endswith(HIDDEN) else 0.0), name


def _corrupt(path: Path, pattern: str, replacement: str) -> Path:
    text, count = re.subn(pattern, replacement, path.read_text())
    assert count == 1, pattern
    bad = path.with_name(f"bad_{path.name}")
    bad.write_text(text)
    return bad


@pytest.mark.parametrize(("rule", "pattern", "replacement", "needle"), [
    pytest.param("mup-muon", r'("transformer\.h\.\*\.mlp\.c_fc\.weight": .*), "muon": \(0\.0, 0\.0\)',
                 r"\1", r"c_fc\.weight .*optimizer 'adamw' in mup_param_groups, 'muon' in "
                 r"param_groups", marks=needs_muon, id="muon-flag"),
    pytest.param("mup-wd-sqrt", r'(mlp\.c_proj\.weight": .*"weight_decay": )\(0\.5, 0\.0\)',
                 r"\1(1.0, 0.0)", r"mlp\.c_proj\.weight \(GPT\(.*n_embd=64\).*weight_decay "
                 r"0\.2 in mup_param_groups, 0\.141421 in param_groups", id="decay-exponent"),
    pytest.param("mup-wd-sqrt", r', "no_weight_decay": \(0\.0, 0\.0\)(?=\}\),\n    "transformer\.wpe)',
                 "", r"transformer\.wte\.weight .*weight_decay 0\.1 in mup_param_groups, 0 in",
                 id="no-decay-flag"),
    pytest.param("mup-wd-independent", r"\n +_mup_independent_decay\(groups\[key\], name\)", "",
                 r"weight_decay 0\.1 in mup_param_groups, 10 in param_groups",
                 id="independent-coupling"),
])
def test_the_check_fails_a_changed_optimizer_factor(emitted: dict[str, Path], rule: str,
                                                    pattern: str, replacement: str,
                                                    needle: str) -> None:
    bad = _corrupt(emitted[rule], pattern, replacement)
    result = check_emitted(bad, [WIDE], original=GPT, steps=3)
    assert result.divergence is not None and result.divergence.what == "optimizer group"
    assert re.search(needle, result.divergence.line()), result.divergence.line()


@needs_muon
def test_the_cli_check_names_a_changed_muon_optimizer(emitted: dict[str, Path]) -> None:
    """An edit of mup_optimizer itself (Muon built with another eps) fails on its groups."""
    bad = _corrupt(emitted["mup-muon"], r"torch\.optim\.Muon\(muon, lr=lr, ",
                   "torch.optim.Muon(muon, lr=lr, eps=1e-8, ")
    result = CliRunner().invoke(cli, ["check", str(bad), "--model", WIDE, "--original", str(GPT),
                                      "--steps", "2"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert re.search(r"eps 1e-08 in mup_optimizer, 1e-07 in muprewrite\.optimizer", errors[0])
    assert "Traceback" not in result.output


def _by_name(groups: list[dict], model: torch.nn.Module) -> dict[str, tuple]:
    """name -> (lr, weight decay, eps) of each parameter's group."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"], g.get("eps")) for g in groups
            for p in g["params"]}


@pytest.mark.parametrize("rule", ["mup-wd-sqrt", _rule_param("mup-muon")])
def test_no_decay_vectors_alike_in_all_three_paths(emitted: dict[str, Path], rule: str) -> None:
    """no_decay="vectors": weight decay 0 on every parameter with fewer than 2 dimensions, the
    rest as the rule says; param_groups, muprewrite.optimizer and the emitted
    mup_param_groups / mup_optimizer agree parameter by parameter."""
    with float64():
        module, model, runtime = _models(emitted[rule], rule)
    rule_only = _by_name(muprewrite.param_groups(runtime, **VALUES[rule]), runtime)
    paths = [_by_name(muprewrite.param_groups(runtime, **VALUES[rule], no_decay="vectors"),
                      runtime),
             _by_name(muprewrite.optimizer(runtime, **VALUES[rule],
                                           no_decay="vectors").param_groups, runtime),
             _by_name(module.mup_param_groups(model, **VALUES[rule], no_decay="vectors"), model),
             _by_name(module.mup_optimizer(model, **VALUES[rule],
                                           no_decay="vectors").param_groups, model)]
    assert paths[0] == paths[2] and paths[1] == paths[3]  # (Muon's groups get its eps)
    assert {n: v[:2] for n, v in paths[1].items()} == {n: v[:2] for n, v in paths[0].items()}
    assert _by_name(module.mup_param_groups(model, **VALUES[rule]), model) == rule_only
    shapes = {n: p.dim() for n, p in runtime.named_parameters()}
    assert any(shapes[n] < 2 and wd for n, (_, wd, _) in rule_only.items()) == (rule != "mup-wd-sqrt")
    for name, (lr, wd, eps) in paths[0].items():
        expected = rule_only[name]
        assert (lr, eps) == (expected[0], expected[2]), name
        assert wd == (0.0 if shapes[name] < 2 else expected[1]), name
    with pytest.raises(ValueError, match="no_decay='norms'"):
        module.mup_param_groups(model, **VALUES[rule], no_decay="norms")
    with pytest.raises(muprewrite.MuprewriteError, match="no_decay='norms' is not a policy"):
        muprewrite.param_groups(runtime, **VALUES[rule], no_decay="norms")


def test_a_layer_added_after_mup_init_is_refused(emitted: dict[str, Path]) -> None:
    """A subclass that adds a layer after the emitted __init__ ran mup_init(self): the layer
    has no partner in the base and no factor; the emitted groups refuse it by name (they gave
    it factor 1)."""
    module = import_without_muprewrite(emitted["mup-wd-sqrt"])

    class WithAdapter(module.GPT):  # type: ignore[name-defined,misc]
        def __init__(self, **kw: int) -> None:
            super().__init__(**kw)
            self.adapter = torch.nn.Linear(kw["n_embd"], kw["n_embd"])

    model = WithAdapter(**SIZE, n_embd=64)
    for build in (module.mup_param_groups, module.mup_optimizer):
        with pytest.raises(ValueError, match=r"changed since mup_init.*adapter\.(bias|weight)"):
            build(model, lr=1e-2, weight_decay=0.1)
    plain = module.GPT(**SIZE, n_embd=64)
    module.mup_param_groups(plain, lr=1e-2)  # unchanged: accepted
    with torch.no_grad():  # a parameter reshaped since mup_init: its factors change
        plain.transformer.h[0].mlp.c_fc.weight = torch.nn.Parameter(torch.zeros(256, 128))
    with pytest.raises(ValueError, match=r"factors of transformer\.h\.0\.mlp\.c_fc\.weight "
                                         r"changed since mup_init"):
        module.mup_param_groups(plain, lr=1e-2)
