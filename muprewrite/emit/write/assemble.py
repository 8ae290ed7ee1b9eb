"""Stage 6c — the new text of every file that changes, in that file's own encoding.

The main file (the one given on the command line, which defines the root model class) gets
its edits, ``mup_init(self)`` ending the root's ``__init__``, the muP block and the header.
Every other file of the project that holds an edit gets only its edits, the class defaults of
its multipliers, the head size constants its edits use (defined in that file: importing them
from the main file would be circular, the main file imports it) and a header that names the
main file. Each header carries the marker, so that rewriting any of them again is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ...files import SourceText, split_lines
from ...rules import Rule
from ..errors import EmitError
from ..find.project import Parsed, Project
from ..find.sites import BRANCH_ATTRIBUTE, Sites
from ..plan.edits import Edits
from .block import render_constants
from .emission import EmittedFile
from .header import emitted_rule, render_header, render_part_header
from .transform import SourceEdits, rewrite

__all__ = ["assemble"]

_ATTENTION = ("sdpa", "logits")

# the main file's block from (constants defined there, (constant, size, file) elsewhere)
BlockFor = Callable[[Mapping[str, int], Sequence[tuple[str, int, str]]], str]


def assemble(project: Project, edits: Mapping[Path, Edits], sites: Sites, *, root: str,
             rule: Rule, base_call: str, block: BlockFor, rescaled: int,
             tuned: str | None = None) -> tuple[tuple[EmittedFile, ...], tuple[str, ...]]:
    """Every changed file (the main one first) and the main file's list of changes.
    ``tuned``: the line of changes that says which base hyperparameters the file holds."""
    names = {file: project.relative(file) for file in edits}
    used = {file: sorted({e.factor for e in fe.nodes.values() if e.kind in _ATTENTION
                          and e.factor}) for file, fe in edits.items()}
    _refuse_constants_elsewhere(project, edits)
    changes = _main_changes(project, edits, sites, root, rescaled, rule, tuned)
    out = []
    for file, fe in edits.items():
        parsed = project.parsed(file)
        here = {name: sites.d_head[name] for name in used[file]}
        if file == project.main:
            elsewhere = _elsewhere(used, sites.d_head, names, project.main)
            header = render_header(names[file], rule.id, rule.title, changes, base_call)
            text = rewrite(parsed.wrapper, SourceEdits(fe, root, str(parsed.path)),
                           block(here, elsewhere), header)
        else:
            _refuse_emitted(parsed)
            main = names[project.main]
            header = render_part_header(names[file], main, rule.id, rule.title,
                                        _part_changes(fe, here, main), base_call)
            text = rewrite(parsed.wrapper, SourceEdits(fe, None, str(parsed.path)),
                           render_constants(rule.id, main, here), header)
        out.append(_checked(parsed, names[file], text))
    return tuple(out), tuple(changes)


def _elsewhere(used: Mapping[Path, list[str]], d_head: Mapping[str, int],
               names: Mapping[Path, str], main: Path) -> list[tuple[str, int, str]]:
    here = set(used.get(main, ()))
    return [(name, d_head[name], names[file]) for file, consts in used.items()
            if file != main for name in consts if name not in here]


def _refuse_constants_elsewhere(project: Project, edits: Mapping[Path, Edits]) -> None:
    """An edit in another file may not take a base hyperparameter's constant: it lives in the
    main file, which that file cannot import (the main file imports it)."""
    for file, fe in edits.items():
        taken = [e for e in fe.nodes.values() if e.multiplier] if file != project.main else []
        if taken:
            raise EmitError(f"the attention at {taken[0].where} would take "
                            f"{taken[0].multiplier}, a constant of {project.main.name}, which "
                            f"{file.name} cannot import ({project.main.name} imports it)",
                            where=taken[0].where,
                            fix=f"define that attention's class in {project.main.name}, or "
                                "use muprewrite.apply(model, ..., hparams=...) at runtime")


def _refuse_emitted(parsed: Parsed) -> None:
    done = emitted_rule(parsed.text.text)
    if done is not None:
        raise EmitError(f"{parsed.path} was written by muprewrite (rule {done!r}); editing it "
                        "again would apply muP twice",
                        fix="restore the original files of the project and emit again")


def _checked(parsed: Parsed, relative: str, text: str) -> EmittedFile:
    """``text`` encoded as the file was, and compiled (as bytes: the coding comment and BOM
    are checked too)."""
    data = _encode(parsed.path, parsed.text, text)
    try:
        compile(data, str(parsed.path), "exec")
    except SyntaxError as exc:  # a bug here, never the user's
        raise EmitError(f"internal error: the emitted code of {relative} does not compile "
                        f"({exc})", fix="please report it with the model file") from None
    return EmittedFile(parsed.path, relative, parsed.text.text, text, parsed.text.encoding)


def _encode(path: Path, original: SourceText, source: str) -> bytes:
    """``source`` in the input's encoding; EmitError if the added code does not fit in it."""
    try:
        return original.encode(source)
    except UnicodeEncodeError as exc:
        line = len(split_lines(source[:exc.start] + "x"))
        raise EmitError(f"{path} is encoded as {original.encoding}, which cannot hold "
                        f"{exc.object[exc.start:exc.end]!r} in the muP code at line {line} "
                        "of the output",
                        fix="save the file as UTF-8 (and make its coding comment utf-8), or "
                            "use only ASCII in --base and the file name") from None


def _lines(project: Project, edits: Mapping[Path, Edits], kind: str) -> str:
    """The edited lines of ``kind``: plain numbers in the main file, ``file:line`` elsewhere."""
    out = []
    for file, fe in edits.items():
        prefix = "" if file == project.main else f"{project.relative(file)}:"
        out += [f"{prefix}{line}" for line in fe.lines.get(kind, ())]
    return ", ".join(out)


def _main_changes(project: Project, edits: Mapping[Path, Edits], sites: Sites, root: str,
                  rescaled: int, rule: Rule, tuned: str | None = None) -> list[str]:
    out = [f"{root}.__init__ ends with mup_init(self) (init scale of {rescaled} parameters, "
           "forward multipliers)"]
    if sites.readouts:
        where = sorted({f"{s.host_class}.{s.callee or s.param_attr}" for s in sites.readouts})
        what = "forward multiplier (output and input weights)" if tuned else "output multiplier"
        out.append(f"{what} at {', '.join(where)} (line(s) "
                   f"{_lines(project, edits, 'readout')})")
    if any(fe.lines.get("attention") for fe in edits.values()):
        out.append(f"attention logit scale at line(s) {_lines(project, edits, 'attention')}")
    if any(fe.lines.get("branch") for fe in edits.values()):
        out.append("residual branch multiplier m_L^-alpha (mup_branch_multiplier) at the add(s) "
                   f"of line(s) {_lines(project, edits, 'branch')}")
    out += [u for fe in edits.values() for u in fe.unverified]
    if tuned:
        out.append(tuned)
    if rule.optimizer == "muon":
        out.append("added MUP_* constants, mup_init, mup_param_groups(model, lr, adam_lr, "
                   "weight_decay) and mup_optimizer(model, lr, adam_lr, weight_decay) "
                   "(torch.optim.Muon on the hidden matrices, AdamW on the rest)")
    else:
        optimizer = "SGD" if rule.optimizer == "sgd" else "AdamW"
        out.append("added MUP_* constants, mup_init, mup_param_groups(model, lr, weight_decay) "
                   f"and mup_optimizer(model, lr, weight_decay) ({optimizer})")
    others = [project.relative(file) for file in edits if file != project.main]
    if others:
        out.append(f"muP edits also in {', '.join(others)} (each headed by a muprewrite "
                   "comment)")
    return out


def _part_changes(fe: Edits, constants: Mapping[str, int], main: str) -> list[str]:
    out = []
    if fe.lines.get("readout"):
        defaults = ", ".join(f"{a} = 1.0 in {cls}" for cls, attrs in fe.defaults.items()
                             for a in attrs if a != BRANCH_ATTRIBUTE)
        out.append(f"output multiplier at line(s) {', '.join(map(str, fe.lines['readout']))} "
                   f"(class default {defaults}; mup_init in {main} sets it per instance)")
    if fe.lines.get("branch"):
        out.append("residual branch multiplier at the add(s) of line(s) "
                   f"{', '.join(map(str, fe.lines['branch']))} (mup_init in {main} sets it)")
    if fe.lines.get("attention"):
        defined = f" ({', '.join(constants)} defined here)" if constants else ""
        out.append("attention logit scale at line(s) "
                   f"{', '.join(map(str, fe.lines['attention']))}{defined}")
    return out + list(fe.unverified)
