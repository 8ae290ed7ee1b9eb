"""Emit a style file, check it, check each of its mutants: the mutation score of ``check``.

Both commands run through ``muprewrite.cli.main.main``, in this process (what the shell runs,
without a new interpreter per mutant); each mutant is written into a fresh copy of the emitted
tree, with bytecode caching off, so that no import sees a stale file. A mutant's verdict:

- ``caught``: ``muprewrite check`` exits 1 (a divergence, or the emitted code raised);
- ``crashed``: it exits 1 with "internal error" (caught, but not by a named comparison);
- ``not-exercised``: it exits 3 and names the mutant's line (passed what it ran);
- ``survived``: it exits 0, or 3 without naming the mutant's line;
- ``equivalent``: an edit of the tables that leaves every factor, init and multiplier the same
  at the base and every size checked (an exponent of an axis that does not grow, a flag whose
  exponents are 0), found by the probe below; not counted in the score.

The probe also says whether a code mutant behaves differently from the file (outputs of the
model moved off its init, at every checked size), and is reported beside the verdict.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from muprewrite.cli.main import main
from muprewrite.spec import build_model, load_module

from .mutator import Mutant, mutants
from .styles import Style

__all__ = ["Emitted", "Verdict", "emit", "run_cli", "check", "judge", "TABLE_KINDS", "STEPS"]

# optimizer steps compared: one (the check's cheapest setting; a mutant it catches with one
# step it catches with more)
STEPS = 1
# edits that reach the model only through mup_factors, mup_init and the multipliers it sets
TABLE_KINDS = {"exponent-changed", "quantity-deleted", "entry-deleted", "in-branch-flipped"}


@dataclass
class Emitted:
    style: Style
    root: Path  # the folder the emission was written into
    main: Path  # the emitted file check is given
    texts: dict[str, str] = field(default_factory=dict)  # path under root -> emitted text
    originals: dict[str, str | None] = field(default_factory=dict)  # -> original text

    def mutants(self) -> list[Mutant]:
        return [m for rel, text in sorted(self.texts.items())
                for m in mutants(rel, text, self.originals[rel])]


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    verdict: str  # caught, crashed, not-exercised, survived, equivalent
    exit_code: int | None
    message: str  # the check's last line, or why the mutant is equivalent
    differs: str | None  # the probe: the first difference it saw (None: none seen)


def run_cli(args: list[str]) -> tuple[int, str]:
    """``muprewrite ARGS`` in this process: (exit status, stdout and stderr)."""
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), _no_bytecode():
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code in (130, 143):  # the CLI's Ctrl-C and SIGTERM: stop here, no verdict
        raise KeyboardInterrupt(f"muprewrite {' '.join(args[:2])} was interrupted ({code})")
    return code, out.getvalue()


@contextlib.contextmanager
def _no_bytecode() -> Iterator[None]:
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = previous


def emit(style: Style, folder: Path) -> Emitted:
    """Emit ``style`` into ``folder`` (a file, or the project tree for ``-o DIR/``)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = f"{folder}/" if style.tree else str(folder / f"{style.path.stem}_mup.py")
    args = [str(style.path), "--model", style.model, "--base", style.base, "-o", target,
            "--force"]
    if style.rule != "mup":
        args += ["--rule", style.rule]
    code, output = run_cli(args)
    if code != 0:
        raise RuntimeError(f"emission of {style.name} failed ({code}): {output}")
    emitted = Emitted(style, folder, Path(target))
    if style.tree:
        files = sorted(p for p in folder.rglob("*.py"))
        main_rel = next(p.relative_to(folder) for p in files
                        if style.path.as_posix().endswith(p.relative_to(folder).as_posix()))
        emitted.main = folder / main_rel
        project = style.path.parents[len(main_rel.parts) - 1]
        for p in files:
            rel = p.relative_to(folder).as_posix()
            emitted.texts[rel] = p.read_text()
            source = project / rel
            emitted.originals[rel] = source.read_text() if source.is_file() else None
    else:
        emitted.texts[emitted.main.name] = emitted.main.read_text()
        emitted.originals[emitted.main.name] = style.path.read_text()
    return emitted


def write_mutant(emitted: Emitted, mutant: Mutant | None, folder: Path) -> Path:
    """A fresh copy of the emitted tree in ``folder`` with ``mutant`` applied; its main file."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for rel, text in emitted.texts.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(mutant.source if mutant is not None and mutant.file == rel else text)
    return folder / emitted.main.relative_to(emitted.root)


def check(emitted: Emitted, main_file: Path, steps: int = STEPS) -> tuple[int, str]:
    """``muprewrite check`` of ``main_file`` against the style's original, at its sizes."""
    args = ["check", str(main_file), "--original", str(emitted.style.path), "--steps", str(steps)]
    for spec in emitted.style.checks:
        args += ["--model", spec]
    return run_cli(args)


def judge(emitted: Emitted, mutant: Mutant, folder: Path, reference: Path) -> Verdict:
    """The verdict of ``muprewrite check`` on ``mutant`` (written under ``folder``);
    ``reference``: the unmutated file's main file, written by ``write_mutant(emitted, None)``."""
    main_file = write_mutant(emitted, mutant, folder)
    differs = probe(emitted.style, reference, main_file, tables_only=mutant.kind in TABLE_KINDS)
    if differs is None and mutant.kind in TABLE_KINDS:
        return Verdict(mutant, "equivalent", None, "same factors, init and multipliers at "
                       "every size checked", None)
    main_file = write_mutant(emitted, mutant, folder)  # a fresh tree for the check itself
    code, output = check(emitted, main_file)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    if code == 0:
        verdict = "survived"
    elif code == 3:
        named = re.search(rf"{re.escape(Path(mutant.file).name)}:{mutant.line}\b", output)
        verdict = "not-exercised" if named else "survived"
    else:
        verdict = "crashed" if "internal error" in output else "caught"
    return Verdict(mutant, verdict, code, last, differs)


def probe(style: Style, reference: Path, mutated: Path, *, tables_only: bool) -> str | None:
    """The first difference between the file and the mutant at the base and every checked
    size: parameters after init, muP factors and multipliers, and (code mutants) the outputs
    of both models moved off their init alike, in train and eval mode. None: none seen.
    Each file is imported again before its model is built (a spec's names are looked up in
    the project's modules as imported last)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for spec in (style.base, *style.checks):
            theirs = _built(reference, spec)  # the file itself builds
            try:
                ours = _built(mutated, spec)
            except Exception as exc:  # noqa: BLE001 - a mutant may not even build
                return f"{spec}: building raised {type(exc).__name__}"
            found = _compare_state(spec, ours, theirs)
            if found is None and not tables_only:
                found = _compare_outputs(spec, ours, theirs)
            if found is not None:
                return found
        return None
    finally:
        torch.set_default_dtype(previous)


def _built(path: Path, spec: str) -> torch.nn.Module:
    with _no_bytecode():
        module = load_module(path)
        torch.manual_seed(1)
        return build_model(module, spec, "--model", device="cpu")


def _compare_state(spec: str, ours: torch.nn.Module, theirs: torch.nn.Module) -> str | None:
    a, b = ours.state_dict(), theirs.state_dict()
    for name in a.keys() | b.keys():
        if name not in a or name not in b or not torch.equal(a[name], b[name]):
            return f"{spec}: {name} after init"
    if _used_factors(ours) != _used_factors(theirs):
        return f"{spec}: mup_factors"
    for (name, m), (_n, r) in zip(ours.named_modules(), theirs.named_modules()):
        # set on either instance: a mutant that no longer sets one (its MUP_MULTIPLIERS or
        # MUP_BRANCH_HOSTS entry deleted) reads the class default, 1.0
        for attr in sorted(k for k in {*vars(m), *vars(r)}
                           if k.startswith("mup_") and k != "mup_factors"):
            if getattr(m, attr, None) != getattr(r, attr, None):
                return f"{spec}: {name}.{attr}"
    return None


def _used_factors(model: torch.nn.Module) -> dict[str, dict[str, float]]:
    """The factors that reach training: the init factor shows in the parameters after init
    (a zero-initialised parameter stays zero whatever its factor), the rest are read here."""
    factors = getattr(model, "mup_factors", None) or {}
    return {name: {q: v for q, v in f.items() if q != "init"} for name, f in factors.items()}


def _compare_outputs(spec: str, ours: torch.nn.Module, theirs: torch.nn.Module) -> str | None:
    for net in (ours, theirs):
        torch.manual_seed(5)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(2)
    inputs = theirs.example_inputs()
    for mode in (True, False):
        ours.train(mode)
        theirs.train(mode)
        outs = []
        for net in (ours, theirs):
            torch.manual_seed(3)
            try:
                with torch.no_grad():
                    outs.append(_flat(net(*inputs)))
            except Exception as exc:  # noqa: BLE001 - the mutant's forward may raise
                return f"{spec}: forward raised {type(exc).__name__}"
        if len(outs[0]) != len(outs[1]) or any(
                x.shape != y.shape or not torch.allclose(x, y, rtol=1e-9, atol=1e-12)
                for x, y in zip(*outs)):
            return f"{spec}: output ({'train' if mode else 'eval'} mode)"
    return None


def _flat(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    return []
