"""The behavioural check of an emitted file: does it train what ``muprewrite.apply`` trains?

``check_emitted`` builds the emitted model at the base width and at each width it runs, and
the original model (the file the emitted one was written from) the same way, rewritten by
``apply`` with the emitted file's own base. Before anything runs, the header is held against
the code (``check_header``: the base ``mup_base_model()`` builds and ``MUP_RULE``). The sizes
are the user's ``--model`` specs and those ``check_specs`` adds: at least two widths above
the base (one not a power-of-two multiple) and under a depth rule two depths other than the
base's. For every size, every input set and both modes (train, eval) it compares, in float64
(or, for a model that computes in float32 whatever the default dtype, in float32 at
``RTOL_FLOAT32``):

1. the structure: the base the emitted file builds has the model's parameters, with the same
   number of axes; under a depth rule the base may have fewer blocks, paired by position
   (the file's ``mup_partners``);
2. the parameters after seeding (the emitted init against ``apply``'s rescale);
3. then both models are moved off their init by the same seeded noise (``check_perturb``: at
   init an adaLN-Zero model outputs zeros and hides every factor), and it compares the
   forward output; on a divergence, the first module whose output differs is named with the
   emitted file's line of its ``forward``;
4. the optimizer (``check_optim``): per parameter, the hyperparameters of
   ``mup_param_groups`` against ``param_groups`` and of ``mup_optimizer`` against
   ``muprewrite.optimizer``, then ``steps`` steps of the two: each parameter's gradient and
   value after the first step, the losses, and the parameters after the last step.

At the base width the expectation is the original model through ``apply`` against itself.
While the models run, ``check_coverage`` records which of the emitted edits ran; an edit no
run reached is listed in ``SourceCheck.unexercised`` with the condition that guards it (the
CLI exits 3 on a file that passed what it ran). What the sizes could not cover is in
``SourceCheck.notes``.

Base hyperparameters: ``apply`` gets the values of the file's own ``MUP_*`` constants (none:
all 1), so that a retuned file is checked as retuned; given the card (``hparams``), those
values must first be the card's.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..capture.input_sets import InputSets, input_sets
from ..errors import MuprewriteError
from ..files import read_source
from ..rules import Rule, load_rule
from ..rules.hparams import HParams, HParamsLike, as_hparams
from ..spec import build_model, load_module, parse_inputs
from ..spec.project import project_root
from .check_coverage import Edit, edits_of, header_sites, traced, unexercised
from .check_header import base_call, cross_check, original_of, read_header
from .check_optim import NAMES, optimizers, training
from .check_outputs import outputs, parameters, structure
from .check_perturb import perturb
from .check_report import RTOL, RTOL_FLOAT32, CheckError, Divergence, SourceCheck
from .check_specs import plan_sizes
from .check_uninit import copy_uninitialised, nan_for_uninitialised, seed_uninitialised
from .file_hparams import constant_lines, differences, file_hparams

__all__ = ["CheckError", "Divergence", "SourceCheck", "check_emitted", "float64"]


def check_emitted(path: str | Path, models: Sequence[str], *, inputs: Sequence[str] = (),
                  original: str | Path | None = None, rule: str | None = None, steps: int = 5,
                  base: str | None = None, hparams: HParamsLike = None,
                  progress: Callable[[str], None] | None = None,
                  derive: bool = False) -> SourceCheck:
    """Check the emitted file ``path`` at its base width and at each spec in ``models``
    (and, with ``derive``, at the widths and depths ``check_specs`` adds, and a ``--model``
    at the base width alone is refused: ``muprewrite check`` derives unless told not to;
    here the caller chooses the sizes).

    ``base``: the base ``apply`` gets, when the models are built with options (flags) that
    the emitted file's base call lacks; default that call. Same widths, same parameters.
    ``hparams``: the card (or HParams) the file was emitted with: its ``MUP_*`` constants
    must hold those values (default: whatever they hold is what ``apply`` gets).
    """
    path = Path(path)
    text = read_source(path).text
    header = read_header(path, text)
    source = original_of(path, header, original)
    emitted = load_module(path)
    files = [path, *_parts(path)]  # before the original's import forgets the tree's modules
    user = load_module(source)
    written_base = base_call(emitted, path)
    base_text = base or written_base
    result = SourceCheck(path, source, rule or header.rule, hparams=file_hparams(emitted, path))
    result.divergence = cross_check(path, header, emitted, written_base, rule)
    if result.divergence is not None:
        return result
    loaded = load_rule(result.rule)
    if hparams is not None:
        result.divergence = _against_card(result, text, as_hparams(hparams, loaded.id))
        if result.divergence is not None:
            return result
    specs = list(models)
    if derive:
        plan = plan_sizes(user, base_text, specs, loaded.has_depth)
        specs += plan.derived
        result.notes += plan.notes
    edits = [e for f in files for e in _edits(f, path, source)]
    say = progress or (lambda _m: None)
    with traced(files) as seen:
        dtype = _run(result, emitted, user, base_text, [base_text, *specs], len(models) + 1,
                     inputs, steps, loaded, say)
    if dtype is not None:
        result.notes.append(dtype)
    if result.divergence is None:
        result.unexercised = [e.shown() for e in unexercised(edits, seen)]
    return result


def _run(result: SourceCheck, emitted: ModuleType, user: ModuleType, base_text: str,
         specs: list[str], given: int, inputs: Sequence[str], steps: int, rule: Rule,
         say: Callable[[str], None]) -> str | None:
    """Every size in float64; a model that computes in float32 whatever the default dtype
    (it fails in float64 with a dtype error) is run again in float32. Returns the note."""
    kept = len(result.compared)  # the card's line, when one was given
    for dtype, tol in ((torch.float64, RTOL), (torch.float32, RTOL_FLOAT32)):
        del result.compared[kept:]
        try:
            with default_dtype(dtype):
                for n, spec in enumerate(specs):
                    say(f"checking {spec}" + (" (added by check)" if n >= given else ""))
                    found = _check_width(result, emitted, user, spec, base_text, inputs,
                                         steps, rule, tol, derived=n >= given)
                    if found is not None:
                        result.divergence = found
                        break
            return None if dtype == torch.float64 else (
                f"checked in float32 (the model computes in float32 whatever the default "
                f"dtype): relative tolerance {RTOL_FLOAT32:g} instead of {RTOL:g}")
        except RuntimeError as exc:
            if dtype != torch.float64 or not _dtype_error(exc):
                raise
    return None  # pragma: no cover - the loop returns or raises


def _dtype_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "dtype" in text or "scalar type" in text or ("float" in text and "double" in text)


def _parts(path: Path) -> list[Path]:
    """The other emitted files of an ``-o DIR/`` tree that the emitted module imported."""
    from ..emit.write.header import part_of

    here = os.path.realpath(project_root(path))
    out = []
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not os.path.realpath(file).startswith(here + os.sep):
            continue
        if os.path.realpath(file) == os.path.realpath(path) or not file.endswith(".py"):
            continue
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if part_of(Path(file).read_text(encoding="utf-8")) is not None:
                out.append(Path(file))
    return out


def _edits(file: Path, main: Path, source: Path) -> list[Edit]:
    """The edits of one emitted file: by the names they write, and at the lines its header
    lists (mapped from the original file, found beside ``source`` as the file is beside
    ``main``)."""
    text = read_source(file).text
    original = source if file == main else (
        project_root(source) / Path(os.path.realpath(file)).relative_to(
            os.path.realpath(project_root(main))))
    try:
        before = read_source(original).text if original.is_file() else None
    except MuprewriteError:
        before = None
    return edits_of(file, text, header_sites(text, before, original.name))


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


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Default dtype ``dtype`` inside the block, restored after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def float64() -> contextlib.AbstractContextManager[None]:
    """Default dtype float64 inside the block, restored after."""
    return default_dtype(torch.float64)


def _check_width(result: SourceCheck, emitted: ModuleType, user: ModuleType, spec: str,
                 base_text: str, inputs: Sequence[str], steps: int, rule: Rule, tol: float,
                 derived: bool) -> Divergence | None:
    from ..rewrite.apply import apply

    seed = int(getattr(emitted, "MUP_BASE_SEED", 0))
    torch.manual_seed(seed)
    with nan_for_uninitialised():  # torch.empty parameters: NaN, then one seeded value
        base = build_model(user, base_text, "the emitted base", device="cpu")
    seed_uninitialised(base)
    torch.manual_seed(1)
    with nan_for_uninitialised():
        expected = build_model(user, spec, "--model", device="cpu")
    seed_uninitialised(expected)
    found = structure(spec, base, expected, getattr(emitted, "mup_partners", None))
    if found is not None:
        return found
    sets = _input_sets(expected, inputs)
    # every input set captured, as the emitter should have; at the base width apply changes
    # nothing but what the base hyperparameters change (every width factor is 1) and gives the
    # roles the rule's optimizer needs
    expected = apply(expected, InputSets(*sets), base=base, rule=result.rule,
                     hparams=result.hparams)
    torch.manual_seed(1)
    with nan_for_uninitialised():
        model = build_model(emitted, spec, "--model", device="cpu")
    never = copy_uninitialised(model, expected)  # no init to compare: see check_uninit
    found = parameters(spec, model, expected, tol)
    if found is not None:
        return found
    perturb((model, expected), expected)  # off init, alike: see check_perturb
    for i, (args, kwargs) in enumerate(sets):
        for mode in ("train", "eval"):
            found = found or outputs(spec, model, expected, args, kwargs, mode, i, result.file,
                                     tol)
    if found is None:  # the groups are compared always: --steps 0 skips only the steps
        found, pair = optimizers(spec, emitted, model, expected, rule, tol)
        if steps:
            found = found or training(spec, model, expected, pair, sets[0], steps,
                                      NAMES[rule.optimizer], tol)
    if found is None:
        trained = ", optimizer groups" + (f", gradients, {steps} {NAMES[rule.optimizer]} "
                                          "steps" if steps else "")
        added = " (added by check)" if derived else ""
        unset = (f" ({len(never)} parameter(s) the constructor never initialises, e.g. "
                 f"{never[0]}: given one value, their init not compared)") if never else ""
        result.compared.append(f"{spec}{added}: parameters{unset}, off init: {len(sets)} "
                               f"input set(s) x train/eval{trained}: equal")
    return found


def _input_sets(model: nn.Module, inputs: Sequence[str]) -> list[tuple[tuple, dict]]:
    if inputs:  # float specs in the check's dtype, as the models are
        dtype = torch.get_default_dtype()
        return [torch.utils._pytree.tree_map_only(
            torch.Tensor, lambda t: t.to(dtype) if t.is_floating_point() else t,
            parse_inputs(text, device="cpu")) for text in inputs]
    make = getattr(model, "example_inputs", None)
    if not callable(make):
        raise CheckError(f"{type(model).__name__} has no example_inputs() method",
                         fix='pass --inputs, e.g. --inputs "float(2, 4, 32, 32)" (repeat it '
                             "for each path of the forward)")
    torch.manual_seed(2)
    return input_sets(make())
