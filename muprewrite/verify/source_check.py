"""The behavioural check of an emitted file: does it train what ``muprewrite.apply`` trains?

``check_emitted`` builds the emitted model at the base width and at each width asked for, and
the original model (the file the emitted one was written from) the same way, rewritten by
``apply`` with the emitted file's own base. For every width, every input set and both modes
(train, eval) it compares, in float64:

1. the structure: the base the emitted file builds has the model's parameters, with the same
   number of axes (a base of another structure has no factor for what it lacks); under a depth
   rule the base may have fewer blocks, paired by position (the file's ``mup_partners``);
2. the parameters after seeding (the emitted init against ``apply``'s rescale);
3. the forward output; on a divergence, the first module whose output differs is named with
   the emitted file's line of its ``forward``;
4. the optimizer: per parameter, the hyperparameters of ``mup_param_groups`` against
   ``param_groups`` (lr, weight decay, eps, and under a Muon rule which optimizer steps it and
   Muon's ``adjust_lr_fn``), then those of ``mup_optimizer`` against ``muprewrite.optimizer``
   (every key torch fills in too: betas, momentum, ...), then ``steps`` steps of the two
   (AdamW, SGD, or Muon on the hidden matrices and AdamW on the rest): the losses, and the
   parameters after the last step.

At the base width the expectation is the original model through ``apply`` against itself:
unchanged (every width factor is 1, and the base hyperparameters as ``apply`` puts them there),
trained as the rule trains it there, with the roles of
the single capture, which say which matrices Muon steps and which vector-like parameters get
no weight decay; a role that differs from the one the emitted file recorded shows as another
optimizer or weight decay. A check that sees a deleted readout
multiplier, a deleted attention factor, a branch of the forward left unscaled (when an input
set runs it), or an optimizer factor or flag changed fails here. What no input set runs is
not checked: pass one ``inputs`` per path of the forward.

Base hyperparameters: ``apply`` gets the values of the file's own ``MUP_*`` constants (none:
all 1), so that a retuned file is checked as retuned; given the card (``hparams``), those
values must first be the card's.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import MuprewriteError
from ..files import read_source
from ..hparams import HParams, HParamsLike, as_hparams
from ..input_sets import InputSets, input_sets
from ..rewrite.branches import HOOK_ATTR
from ..rules import Rule, load_rule
from ..spec import build_model, load_module, parse_inputs
from .file_hparams import constant_lines, differences, file_hparams

__all__ = ["CheckError", "Divergence", "SourceCheck", "check_emitted", "float64"]

_HEADER = re.compile(r"muP version of (?P<file>.+?) \(rule \"(?P<rule>[^\"]+)\"")  # a name may hold spaces
RTOL = 1e-9
# the values at base width both optimizers get (Muon's lr and weight decay, AdamW's under a
# Muon rule: four distinct values, so that a swap shows)
_VALUES = {"lr": 1e-2, "weight_decay": 0.1, "eps": 1e-8}
_ADAM_VALUES = {"adam_lr": 3e-3, "adam_weight_decay": 0.05}
# bookkeeping keys of muprewrite's groups, not hyperparameters
_BOOKKEEPING = {"params", "param_names", "lr_factor", "base_lr"}


class CheckError(MuprewriteError):
    """The emitted file cannot be checked (not emitted, original missing, bad specs)."""


@dataclass(frozen=True)
class Divergence:
    """The first place where the emitted model and its expectation part."""

    width: str  # the --model spec (or the base call)
    what: str  # "structure", "parameter", "output", "training"
    where: str  # file:line or parameter/module name
    mode: str  # "train" / "eval" / "-"
    inputs: int  # index of the input set, -1 when not applicable
    error: float  # relative size of the difference
    detail: str = ""

    def line(self) -> str:
        mode = f", {self.mode} mode" if self.mode != "-" else ""
        inputs = f", input set {self.inputs}" if self.inputs >= 0 else ""
        return (f"{self.what} diverges at {self.where} ({self.width}{mode}{inputs}): relative "
                f"error {self.error:.3g}" + (f"; {self.detail}" if self.detail else ""))


@dataclass
class SourceCheck:
    """What was compared, and the first divergence (None: the file passed)."""

    file: Path
    original: Path
    rule: str
    compared: list[str] = field(default_factory=list)  # one line per passed comparison
    divergence: Divergence | None = None
    hparams: HParams | None = None  # the file's base hyperparameters (None: it has none)

    @property
    def passed(self) -> bool:
        return self.divergence is None


def check_emitted(path: str | Path, models: Sequence[str], *, inputs: Sequence[str] = (),
                  original: str | Path | None = None, rule: str | None = None, steps: int = 5,
                  base: str | None = None, hparams: HParamsLike = None,
                  progress: Callable[[str], None] | None = None) -> SourceCheck:
    """Check the emitted file ``path`` at its base width and at each spec in ``models``.

    ``base``: the base ``apply`` gets, when the models are built with options (flags) that
    the emitted file's base call lacks; default that call. Same widths, same parameters.
    ``hparams``: the card (or HParams) the file was emitted with: its ``MUP_*`` constants
    must hold those values (default: whatever they hold is what ``apply`` gets).
    """
    path = Path(path)
    text = read_source(path).text
    header = _HEADER.search(" ".join(line.lstrip("# ") for line in text.splitlines()[:8]))
    if header is None:
        raise CheckError(f"{path} has no muprewrite header", fix=f"check the file muprewrite "
                         f"wrote: muprewrite ORIGINAL.py --model ... --base ... -o {path.name}")
    source = Path(original) if original else path.with_name(header["file"])
    if not source.is_file():
        raise CheckError(f"the original {source} of {path} is not there",
                         fix="pass --original path/to/the/original.py")
    emitted, user = load_module(path), load_module(source)
    base_text = base or _base_call(emitted, path)
    result = SourceCheck(path, source, rule or header["rule"], hparams=file_hparams(emitted, path))
    loaded = load_rule(result.rule)
    if hparams is not None:
        result.divergence = _against_card(result, text, as_hparams(hparams, loaded.id))
        if result.divergence is not None:
            return result
    say = progress or (lambda _m: None)
    with float64():
        for spec in [base_text, *models]:
            say(f"checking {spec}")
            found = _check_width(result, emitted, user, spec, base_text, inputs, steps, loaded)
            if found is not None:
                result.divergence = found
                break
    return result


def _against_card(result: SourceCheck, text: str, card: HParams) -> Divergence | None:
    """The first of the file's base hyperparameters that is not the card's."""
    found = differences(result.hparams or HParams(), card)
    if not found:
        kept = "the card's" if result.hparams is not None else "none (all 1, as the card)"
        result.compared.append(f"base hyperparameters: {kept}")
        return None
    constant, ours, theirs = found[0]
    line = constant_lines(text).get(constant)
    where = f"{result.file}:{line}: {constant}" if line else f"{result.file}: {constant}"
    held = f"{ours!r} in the file" if result.hparams is not None else "absent from the file (1)"
    return Divergence("the card", "base hyperparameter", where, "-", -1,
                      abs(ours - theirs) / theirs, f"{held}, {theirs!r} in the card")


def _base_call(emitted: ModuleType, path: Path) -> str:
    """The base constructor call written in the emitted ``mup_base_model``."""
    func = getattr(emitted, "mup_base_model", None)
    if func is None:
        raise CheckError(f"{path} has no mup_base_model(): it is not a whole muprewrite file",
                         fix="regenerate it from the original file")
    tree = ast.parse(inspect.getsource(func))
    returns = [n for n in ast.walk(tree) if isinstance(n, ast.Return) and n.value is not None]
    if len(returns) != 1:
        raise CheckError(f"{path}: mup_base_model() was edited", fix="regenerate the file")
    return ast.unparse(returns[0].value)  # type: ignore[arg-type]


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """Default dtype float64 inside the block, restored after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _check_width(result: SourceCheck, emitted: ModuleType, user: ModuleType, spec: str,
                 base_text: str, inputs: Sequence[str], steps: int, rule: Rule
                 ) -> Divergence | None:
    from ..apply import apply

    seed = int(getattr(emitted, "MUP_BASE_SEED", 0))
    torch.manual_seed(seed)
    base = build_model(user, base_text, "the emitted base", device="cpu")
    torch.manual_seed(1)
    expected = build_model(user, spec, "--model", device="cpu")
    structure = _structure(spec, base, expected, getattr(emitted, "mup_partners", None))
    if structure is not None:
        return structure
    sets = _input_sets(expected, inputs)
    # every input set captured, as the emitter should have; at the base width apply changes
    # nothing but what the base hyperparameters change (every width factor is 1) and gives the
    # roles the rule's optimizer needs
    expected = apply(expected, InputSets(*sets), base=base, rule=result.rule,
                     hparams=result.hparams)
    torch.manual_seed(1)
    model = build_model(emitted, spec, "--model", device="cpu")
    found = _parameters(spec, model, expected)
    for i, (args, kwargs) in enumerate(sets):
        for mode in ("train", "eval"):
            found = found or _outputs(spec, model, expected, args, kwargs, mode, i, result.file)
    if found is None:  # the groups are compared always: --steps 0 skips only the steps
        found, optimizers = _optimizers(spec, emitted, model, expected, rule)
        if steps:
            found = found or _training(spec, model, expected, optimizers, sets[0], steps,
                                       _NAMES[rule.optimizer])
    if found is None:
        trained = ", optimizer groups" + (f", {steps} {_NAMES[rule.optimizer]} steps"
                                          if steps else "")
        result.compared.append(f"{spec}: parameters, {len(sets)} input set(s) x "
                               f"train/eval{trained}: equal")
    return found


_NAMES = {"adam": "AdamW", "sgd": "SGD", "muon": "Muon + AdamW"}


def _structure(spec: str, base: nn.Module, model: nn.Module,
               pair: Callable[[nn.Module, nn.Module], dict[str, str]] | None
               ) -> Divergence | None:
    """Every parameter of the model has a partner in the base with as many axes, and every
    base parameter is someone's partner. The partner is the same name, or under a depth rule
    the emitted file's own pairing of blocks by position (``mup_partners``)."""
    ours = {n: p.dim() for n, p in model.named_parameters()}
    theirs = {n: p.dim() for n, p in base.named_parameters()}
    partners = pair(model, base) if pair is not None else {n: n for n in ours}
    missing = sorted(n for n in ours if theirs.get(partners.get(n, "")) != ours[n])
    missing += sorted(set(theirs) - {partners.get(n) for n in ours})
    if missing:
        another = "width and depth" if pair is not None else "width"
        return Divergence(spec, "structure", "mup_base_model()", "-", -1, float("inf"),
                          f"the emitted base and the model differ in {len(missing)} "
                          f"parameter(s), e.g. {', '.join(missing[:10])}; the base must be the "
                          f"same architecture at another {another}")
    return None


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return float("inf")
    scale = max(float(b.abs().max()) if b.numel() else 0.0, 1e-30)
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


def _parameters(spec: str, model: nn.Module, expected: nn.Module) -> Divergence | None:
    theirs = expected.state_dict()
    for name, value in model.state_dict().items():
        if name not in theirs:
            return Divergence(spec, "parameter", name, "-", -1, float("inf"), "not in the "
                              "original model")
        error = _rel(value, theirs[name])
        if error > RTOL:
            return Divergence(spec, "parameter", name, "-", -1, error, "init scale differs")
    return None


def _input_sets(model: nn.Module, inputs: Sequence[str]) -> list[tuple[tuple, dict]]:
    if inputs:  # float specs in the check's float64, as the models are
        return [torch.utils._pytree.tree_map_only(
            torch.Tensor, lambda t: t.double() if t.dtype == torch.float32 else t,
            parse_inputs(text, device="cpu")) for text in inputs]
    make = getattr(model, "example_inputs", None)
    if not callable(make):
        raise CheckError(f"{type(model).__name__} has no example_inputs() method",
                         fix='pass --inputs, e.g. --inputs "float(2, 4, 32, 32)" (repeat it '
                             "for each path of the forward)")
    torch.manual_seed(2)
    return input_sets(make())


def _outputs(spec: str, model: nn.Module, expected: nn.Module, args: tuple, kwargs: dict,
             mode: str, index: int, file: Path) -> Divergence | None:
    model.train(mode == "train")
    expected.train(mode == "train")
    with _recorded(model) as ours, _recorded(expected) as theirs, torch.no_grad():
        torch.manual_seed(3)
        out = model(*args, **kwargs)
        torch.manual_seed(3)
        ref = expected(*args, **kwargs)
    error = max((_rel(a, b) for a, b in zip(_tensors(out), _tensors(ref))), default=0.0)
    if error <= RTOL:
        return None
    where = "the model's output"
    for name in ours:
        if getattr(expected.get_submodule(name), HOOK_ATTR, None) is not None:
            continue  # apply scales this branch module's output; the file scales at the add
        if name in theirs and max((_rel(a, b) for a, b in zip(ours[name], theirs[name])),
                                  default=0.0) > RTOL:
            where = _module_where(model, name, file)
            break
    return Divergence(spec, "output", where, mode, index, error)


@contextlib.contextmanager
def _recorded(model: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Each module's first output, in the order the modules finish (innermost first)."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(_m: nn.Module, _a: Any, out: Any, name: str = name) -> None:
            seen.setdefault(name, _tensors(out))
        handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _module_where(model: nn.Module, name: str, file: Path) -> str:
    """The emitted file's line of the innermost module around ``name`` that the file defines
    (a library leaf such as nn.Linear is named through its parent's forward)."""
    path = name
    while True:
        module = model.get_submodule(path)
        try:
            src = inspect.getsourcefile(type(module).forward)
            _lines, start = inspect.getsourcelines(type(module).forward)
        except (OSError, TypeError):
            src, start = None, 0
        if src and Path(src).resolve() == file.resolve():
            inner = f"; first differing output: {name}" if name != path else ""
            return (f"{file}:{start}: {type(module).__name__}.forward of "
                    f"{path or '<root>'}{inner}")
        if not path:
            return f"module {name or '<root>'} ({type(model.get_submodule(name)).__name__})"
        path = path.rpartition(".")[0]


def _optimizers(spec: str, emitted: ModuleType, model: nn.Module, expected: nn.Module,
                rule: Rule) -> tuple[Divergence | None, tuple[torch.optim.Optimizer, ...]]:
    """``mup_param_groups`` against ``param_groups``, then ``mup_optimizer`` against
    ``muprewrite.optimizer``, parameter by parameter; the two optimizers, to step."""
    from ..optim import param_groups
    from ..optimizers import optimizer

    values: dict[str, Any] = {**_VALUES, **(_ADAM_VALUES if rule.optimizer == "muon" else {})}
    try:
        ours = emitted.mup_param_groups(model, **values)
    except Exception as exc:  # the emitted code refuses, e.g. mup_init(self) was deleted
        return Divergence(spec, "optimizer groups", "mup_param_groups", "-", -1, math.inf,
                          f"it raised {type(exc).__name__}: {exc}"), ()
    theirs = param_groups(expected, rule=rule, **values)
    found = _hyperparameters(spec, model, ours, expected, theirs, "mup_param_groups",
                             "param_groups")
    reference = optimizer(expected, rule=rule, **values)
    make = getattr(emitted, "mup_optimizer", None)
    if make is not None:
        mine = make(model, **values)
    else:  # a file emitted before mup_optimizer: the reference's optimizer on its groups
        mine = type(reference)(ours)  # type: ignore[call-arg]
    found = found or _hyperparameters(spec, model, mine.param_groups, expected,
                                      reference.param_groups, "mup_optimizer",
                                      "muprewrite.optimizer")
    return found, (mine, reference)


def _hyperparameters(spec: str, model: nn.Module, ours: list[dict], expected: nn.Module,
                     theirs: list[dict], mine: str, reference: str) -> Divergence | None:
    """Each parameter's hyperparameters in the two lists of groups (every key but the
    bookkeeping: lr, eps, weight decay, the optimizer that steps it, and what torch fills in):
    a factor that moves the loss less than the tolerance in a few steps (eps at 1e-8) still
    shows here, and so does a key only one side sets (an eps on a Muon group changes Muon)."""
    def table(net: nn.Module, groups: list[dict]) -> dict[str, dict[str, Any]]:
        names = {id(p): n for n, p in net.named_parameters()}
        return {names[id(p)]: {k: v for k, v in g.items() if k not in _BOOKKEEPING}
                for g in groups for p in g["params"] if p.requires_grad}
    got_all, expected_all = table(model, ours), table(expected, theirs)
    for name, values in expected_all.items():
        got = got_all.get(name)
        if got is None:
            return Divergence(spec, "optimizer group", name, "-", -1, float("inf"),
                              f"{mine} leaves it out")
        for key in sorted(values.keys() | got.keys(), key=lambda k: (k != "optimizer", k)):
            if key not in got or key not in values:
                where, value = (reference, values[key]) if key in values else (mine, got[key])
                return Divergence(spec, "optimizer group", name, "-", -1, float("inf"),
                                  f"{key} {_shown(value)} only in {where}")
            error = _difference(got[key], values[key])
            if error > RTOL:
                return Divergence(spec, "optimizer group", name, "-", -1, error,
                                  f"{key} {_shown(got[key])} in {mine}, "
                                  f"{_shown(values[key])} in {reference}")
    return None


def _difference(a: Any, b: Any) -> float:
    """The relative difference of two numbers; 0 or inf for other values (equal or not)."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)
    if number(a) and number(b):
        return abs(a - b) / max(abs(b), 1e-30)
    return 0.0 if type(a) is type(b) and a == b else math.inf


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _training(spec: str, model: nn.Module, expected: nn.Module,
              optimizers: tuple[torch.optim.Optimizer, ...], inputs: tuple[tuple, dict],
              steps: int, name: str) -> Divergence | None:
    """``steps`` steps of each optimizer on its model: the losses, then the parameters after
    the last step (which no loss sees)."""
    args, kwargs = inputs
    losses = []
    for net, opt in zip((model, expected), optimizers):
        net.train()
        run = []
        torch.manual_seed(4)
        for _ in range(steps):
            out = _tensors(net(*args, **kwargs))
            loss = sum(o.double().square().mean() for o in out if o.is_floating_point())
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            run.append(float(loss.detach()))  # type: ignore[union-attr]
        losses.append(run)
    for step, (a, b) in enumerate(zip(*losses)):
        error = abs(a - b) / max(abs(b), 1e-30)
        if error > RTOL:
            return Divergence(spec, "training", f"{name} step {step + 1}", "train", 0, error,
                              "mup_optimizer and muprewrite.optimizer give different updates")
    theirs = dict(expected.named_parameters())
    for param, value in model.named_parameters():
        error = _rel(value, theirs[param]) if param in theirs else float("inf")
        if error > RTOL:
            return Divergence(spec, "training", param, "train", 0, error,
                              f"differs after {steps} {name} steps of mup_optimizer and "
                              "muprewrite.optimizer")
    return None
