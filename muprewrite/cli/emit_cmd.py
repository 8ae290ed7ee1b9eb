"""``muprewrite model.py --model ... --base ...``: write the muP version of a model file."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import click

from ..emit.write.emission import Emission, EmittedFile
from ..emit.write.outputs import Output, check_tree, is_folder, outputs, tree_target
from ..errors import MuprewriteError, printable
from ..files import (
    check_distinct,
    check_folder,
    check_output,
    read_source,
    split_lines,
    write_files,
)
from .printing import stage_printer

__all__ = ["emit_cmd"]

_HELP = """Write the muP version of the model defined in MODEL_FILE, as plain PyTorch.

\b
  muprewrite examples/dit.py --model "DiT(hidden_size=1152, num_heads=16)" \\
      --base "DiT(hidden_size=288, num_heads=4)" -o dit_mup.py

\b
--base is the same architecture at the width where you tune learning rate,
weight decay and init; the emitted file works at every width and needs no
muprewrite at run time. What changes (every other line keeps its bytes):
  - a block after the imports: MUP_* constants, mup_init(), mup_param_groups()
    and mup_optimizer();
  - the model's __init__ ends with mup_init(self) (init scale, multipliers);
  - the output multiplier at every readout call and the attention scale on
    every scaled_dot_product_attention call (scale=) or q @ k^T product under
    a softmax, in every method of the classes concerned: paths the capture
    did not run (a generate branch, a non-fused attention) are edited by
    pattern, and the header lists them;
  - under a depth rule (--rule completep / depth-mup; --base may then have
    fewer blocks): every residual add becomes x + self.mup_branch_multiplier
    * f(x), set to m_L^-alpha by mup_init, m_L = blocks / base blocks counted
    at run time, so the file also works at every depth;
  - a header comment naming the rule;
  - with --hparams CARD (base hyperparameters tuned on the proxy, e.g. by
    `muprewrite tune -o card.toml`): all nine as MUP_* constants in the block
    (MUP_OUTPUT_MULTIPLIER = 2.5, ...; edit them to retune), each parameter's
    class (MUP_CLASSES), a forward multiplier at every input and output
    weight's use (a tied embedding's lookups too) and MUP_ATTENTION_MULTIPLIER
    at every attention, applied as muprewrite.apply(..., hparams=CARD) does.
    Without --hparams the file has no such constants (as if each were 1).
A use that cannot be edited with certainty (the readout returned or passed
on, getattr(self, name), a softmax over something other than q @ k^T) is
refused at FILE:LINE; muprewrite.apply(model, ...) is the runtime fallback.
Train with mup_optimizer(model, lr=..., weight_decay=...): AdamW, or SGD under
an SGD rule; under a Muon rule (--rule mup-muon) torch.optim.Muon on the hidden
matrices and AdamW on the rest, mup_optimizer(model, lr=..., adam_lr=...). Or
hand mup_param_groups(model, lr=..., weight_decay=...) to an optimizer of yours.

A readout or attention defined in another file of your project (blocks.py next
to the model file, a module of its package: `from .layers import Attention`) is
edited there; those files get only their edits, the class defaults and head
size constants they use, and a header naming MODEL_FILE, which keeps the MUP_*
block, mup_init, mup_param_groups and mup_optimizer. One in an installed library is refused
at FILE:LINE (fix: a local subclass, or muprewrite.apply at runtime).

\b
Output: -o FILE, default MODEL_FILE's name with _mup, when only MODEL_FILE
changes. -o DIR/ (a folder; a trailing slash makes a new one) writes every
changed file at its place in the project under DIR (DIR/model.py,
DIR/blocks.py; DIR/pkg/model.py for a package) and copies the project's other
Python files the model imports, unchanged, so DIR imports on its own (put DIR
on sys.path); a file under DIR that an emission of another model wrote is never
replaced. --in-place rewrites the changed files themselves, all or none; it
refuses to edit a file that other files of the project import (another model
sharing blocks.py would change too), naming them, unless --in-place-shared.
An existing output is kept unless --force; an output is never an input (MODEL_FILE,
a file it imports, --rule, --hparams), and a symlink is written through only
when its target stays in the output's folder, even with --force.
--diff prints one unified diff per changed file instead. --check exits 1
unless MODEL_FILE is already muP (for CI).
Each output keeps its file's encoding, BOM and line endings; a symlink is
written through, an existing file keeps its mode, a read-only one needs
--force. On any error nothing is written.
"""


@click.command("emit", help=_HELP)
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--model", "model_expr", metavar="EXPR",
              help='Constructor call, e.g. "DiT(hidden_size=1152, num_heads=16)".')
@click.option("--base", "base_expr", metavar="EXPR",
              help='The model at the base (tuning) width, e.g. "DiT(hidden_size=288, num_heads=4)".')
@click.option("--rule", default="mup", show_default=True,
              help="Parametrization: a name from `muprewrite rules list`, or path/to/rule.toml.")
@click.option("--inputs", "inputs_expr", metavar="SPECS", multiple=True,
              help='Example inputs, e.g. "float(2, 4, 32, 32), int(2, high=1000)" (default: '
                   "model.example_inputs()). Repeat it for each path of the forward (with and "
                   "without targets, a flag): every set is captured.")
@click.option("--heads", type=click.Choice(["grow", "fixed"]), default="grow", show_default=True,
              hidden=True)
@click.option("--hparams", "hparams", type=click.Path(dir_okay=False), metavar="CARD",
              help="A card of base hyperparameters tuned on the proxy (card.toml), written "
                   "into the file as MUP_* constants.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the base model's init draw that the emitted init matches.")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="Where to build the models for analysis (cpu for constructors that need "
                   "real values, e.g. .item() in __init__).")
@click.option("-o", "--output", type=click.Path(),
              help="Where to write: a file, or a folder (DIR/) for the muP project tree.")
@click.option("--diff", "show_diff", is_flag=True, help="Print unified diffs; write nothing.")
@click.option("--in-place", is_flag=True, help="Overwrite the changed files of the project.")
@click.option("--in-place-shared", "shared", is_flag=True,
              help="With --in-place: also edit a project file that other files of the project "
                   "import (another model importing the same blocks.py changes too).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--check", is_flag=True, help="Exit 1 unless MODEL_FILE is already muP.")
def emit_cmd(model_file: str, model_expr: str | None, base_expr: str | None, rule: str,
             inputs_expr: tuple[str, ...], heads: str, hparams: str | None, seed: int,
             device: str, output: str | None, show_diff: bool, in_place: bool, shared: bool,
             force: bool, check: bool) -> None:
    from ..emit import emit

    path = Path(model_file)
    if check:
        _check(path)
        return
    if not model_expr or not base_expr:
        missing = "--model" if not model_expr else "--base"
        raise click.UsageError(f"{missing} is required, e.g. --model \"DiT(hidden_size=1152, "
                               "num_heads=16)\" --base \"DiT(hidden_size=288, num_heads=4)\"")
    if in_place and output:
        raise click.UsageError("--in-place writes the model's files themselves; leave -o out")
    if shared and not in_place:
        raise click.UsageError("--in-place-shared is a permission for --in-place; pass both")
    where = _Where(path, output, in_place)
    if not show_diff:
        _check_target(where, rule, hparams, force=force)
    try:
        emission = emit(path, model_expr, base_expr, rule=rule, inputs_expr=inputs_expr,
                        seed=seed, heads=heads, device=device, hparams=hparams,  # type: ignore[arg-type]
                        progress=stage_printer())
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    if show_diff:
        for f in emission.files:
            click.echo(_diff(f.original, f.source, str(f.path), str(where.label(f))), nl=False)
        return
    try:
        planned = outputs(emission, target=where.target, folder=where.folder,
                          what=f"-o {where.target}" if output else f"the default {where.target}")
        _check_all(planned, emission, where, rule, hparams, force=force, shared=shared)
        write_files([(o.target, o.data) for o in planned], force=force,
                    make_folders=where.folder is not None, inside=where.inside(emission))
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    _report(emission, planned)


class _Where:
    """The outputs asked for: ``folder`` (-o DIR/), ``target`` (-o FILE or the default), or
    neither (--in-place); ``main`` is where MODEL_FILE's muP version goes."""

    def __init__(self, path: Path, output: str | None, in_place: bool) -> None:
        self.path = path
        self.folder = Path(output) if output and is_folder(output) else None
        self.target = None if in_place or self.folder else Path(output) if output else (
            path.with_name(f"{path.stem}_mup{path.suffix}"))
        self.main = path if in_place else self.target or tree_target(self.folder or Path(), path)

    def inside(self, emission: Emission) -> Path | None:
        """The folder no output may leave through a symlink: DIR for a tree, the project
        for --in-place, the output's own folder (None) for -o FILE."""
        return self.folder if self.folder is not None else (
            emission.root if self.target is None else None)

    def label(self, file: EmittedFile) -> Path:
        """Where ``file`` would be written (for --diff)."""
        if self.folder is not None:
            return self.folder / file.relative
        same = os.path.realpath(file.path) == os.path.realpath(self.path)
        return self.target if same and self.target is not None else file.path


def _inputs(rule: str, hparams: str | None) -> list[tuple[str, str | Path]]:
    """The files besides the model's that emission reads: a rule file, a card."""
    out: list[tuple[str, str | Path]] = [("--rule", Path(rule))] if rule.endswith(".toml") else []
    return out + ([("--hparams", Path(hparams))] if hparams else [])


def _check_target(where: _Where, rule: str, hparams: str | None, *, force: bool) -> None:
    """Refuse, before any analysis, an output that is an input or cannot be written."""
    path, main = where.path, where.main
    in_place = where.target is None and where.folder is None
    if not in_place and os.path.realpath(main) == os.path.realpath(path):
        what = "the output" if where.folder is None else f"{main} (in -o {where.folder})"
        raise click.UsageError(f"{what} is MODEL_FILE itself: pass --in-place to overwrite "
                               "it, or another -o")
    inputs = ([] if in_place else [("MODEL_FILE", path)]) + _inputs(rule, hparams)
    try:
        if where.folder is not None:
            check_folder(where.folder)
        check_distinct([("-o", main)], inputs)
        if where.folder is None or main.parent.is_dir():
            from ..spec.project import project_root

            check_output(main, force=force, may_exist=in_place,
                         inside=project_root(path) if in_place else where.folder)
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None


def _check_all(planned: list[Output], emission: Emission, where: _Where, rule: str,
               hparams: str | None, *, force: bool, shared: bool) -> None:
    """Every output, now that they are known: none is an input, none replaces another
    model's tree or (in place) a file other project files import, each can be written."""
    in_place = where.target is None and where.folder is None
    if where.folder is not None:
        check_tree(planned, emission, where.folder)
    if in_place and not shared:
        _check_unshared(emission)
    inputs: list[tuple[str, str | Path]] = []
    if not in_place:
        inputs = [("MODEL_FILE" if i == 0 else "project file", f.path)
                  for i, f in enumerate(emission.files)]
        inputs += [("project file", p) for p in emission.imports]
    inputs += _inputs(rule, hparams)
    check_distinct([("-o", o.target) for o in planned], inputs)
    for o in planned:
        if o.target.parent.is_dir():
            check_output(o.target, force=force, may_exist=in_place,
                         inside=where.inside(emission))


def _check_unshared(emission: Emission) -> None:
    """Refuse to edit in place a project file that files outside the model's imports import."""
    from ..emit.errors import EmitError
    from ..emit.find.importers import other_importers

    assert emission.root is not None
    found = other_importers([f.path for f in emission.files], main=emission.files[0].path,
                            chain=emission.imports, root=emission.root)
    for file, others in found.items():
        names = ", ".join(str(p.relative_to(emission.root.resolve())) for p in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        raise EmitError(f"--in-place would edit {file}, which {names}{more} also import(s) "
                        "outside this model's files: they would get this model's muP edits "
                        "too", fix="pass -o DIR/ (a muP tree beside the originals), or "
                                   "--in-place-shared if every importer should change")


def _report(emission: Emission, planned: list[Output]) -> None:
    for change in emission.changes:
        click.echo(f"  - {printable(change)}", err=True)
    for o in planned:
        if o.file is not None:
            click.echo(f"wrote {o.target}", err=True)
    copied = [str(o.target) for o in planned if o.file is None]
    if copied:
        click.echo(f"copied {len(copied)} unchanged project file(s) the muP files import: "
                   f"{', '.join(copied)}", err=True)


def _diff(before: str, after: str, old_name: str, new_name: str) -> str:
    """A unified diff of the decoded texts; a changed line ending is a changed line."""
    lines = difflib.unified_diff(split_lines(before), split_lines(after), old_name, new_name)
    return "".join(line if line.endswith(("\n", "\r")) else
                   f"{line}\n\\ No newline at end of file\n" for line in lines)


def _check(path: Path) -> None:
    from ..emit import emitted_rule
    from ..emit.write.header import part_of

    try:
        text = read_source(path).text
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    rule = emitted_rule(text)
    if rule is None:
        click.echo(f"{path}: not muP (no muprewrite header); run "
                   f"`muprewrite {path} --model ... --base ... -o ...`", err=True)
        raise SystemExit(1)
    main = part_of(text)
    if main is not None:
        click.echo(f"{path}: muP edits (rule {rule!r}) of the muP version of {main}, which "
                   "holds mup_init; check that file")
        return
    if "mup_init(self)" not in text or "def mup_param_groups" not in text:
        click.echo(f"{path}: has a muprewrite header but mup_init(self) or mup_param_groups "
                   "is gone; regenerate it from the original file", err=True)
        raise SystemExit(1)
    click.echo(f"{path}: muP (rule {rule!r})")
