"""``muprewrite model.py --model ... --base ...``: write the muP version of a model file."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import click

from ..errors import MuprewriteError
from ..files import check_distinct, check_output, read_source, split_lines, write_file

__all__ = ["emit_cmd"]

_HELP = """Write the muP version of the model defined in MODEL_FILE, as plain PyTorch.

\b
  muprewrite examples/dit.py --model "DiT(hidden_size=1152, num_heads=16)" \\
      --base "DiT(hidden_size=288, num_heads=4)" -o dit_mup.py

\b
--base is the same architecture at the width where you tune learning rate,
weight decay and init; the emitted file works at every width and needs no
muprewrite at run time. What changes (every other line keeps its bytes):
  - a block after the imports: MUP_* constants, mup_init(), mup_param_groups();
  - the model's __init__ ends with mup_init(self) (init scale, multipliers);
  - the output multiplier at every readout call and the attention scale on
    every scaled_dot_product_attention call (scale=) or q @ k^T product under
    a softmax, in every method of the classes concerned: paths the capture
    did not run (a generate branch, a non-fused attention) are edited by
    pattern, and the header lists them;
  - a header comment naming the rule.
A use that cannot be edited with certainty (the readout returned or passed
on, getattr(self, name), a softmax over something other than q @ k^T) is
refused at FILE:LINE; muprewrite.apply(model, ...) is the runtime fallback.
Train with torch.optim.AdamW(mup_param_groups(model, lr=..., weight_decay=...)).

\b
Output: -o FILE, default MODEL_FILE's name with _mup (an existing file is kept
unless --force); --diff prints a unified diff instead; --in-place rewrites
MODEL_FILE itself. --check exits 1 unless MODEL_FILE is already muP (for CI).
The output keeps MODEL_FILE's encoding, BOM and line endings; a symlink is written
through, an existing file keeps its mode, a read-only one needs --force. On any
error nothing is written.
"""


@click.command("emit", help=_HELP)
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--model", "model_expr", metavar="EXPR",
              help='Constructor call, e.g. "DiT(hidden_size=1152, num_heads=16)".')
@click.option("--base", "base_expr", metavar="EXPR",
              help='The model at the base (tuning) width, e.g. "DiT(hidden_size=288, num_heads=4)".')
@click.option("--rule", default="mup", show_default=True,
              help="Parametrization: a name from `muprewrite rules list`, or path/to/rule.toml.")
@click.option("--inputs", "inputs_expr", metavar="SPECS",
              help='Example inputs, e.g. "float(2, 4, 32, 32), int(2, high=1000)" (default: model.example_inputs()).')
@click.option("--heads", type=click.Choice(["grow", "fixed"]), default="grow", show_default=True,
              hidden=True)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the base model's init draw that the emitted init matches.")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="Where to build the models for analysis (cpu for constructors that need "
                   "real values, e.g. .item() in __init__).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write.")
@click.option("--diff", "show_diff", is_flag=True, help="Print a unified diff; write nothing.")
@click.option("--in-place", is_flag=True, help="Overwrite MODEL_FILE.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--check", is_flag=True, help="Exit 1 unless MODEL_FILE is already muP.")
def emit_cmd(model_file: str, model_expr: str | None, base_expr: str | None, rule: str,
             inputs_expr: str | None, heads: str, seed: int, device: str, output: str | None,
             show_diff: bool, in_place: bool, force: bool, check: bool) -> None:
    from ..emit import emit
    from .main import _stage_printer

    path = Path(model_file)
    if check:
        _check(path)
        return
    if not model_expr or not base_expr:
        missing = "--model" if not model_expr else "--base"
        raise click.UsageError(f"{missing} is required, e.g. --model \"DiT(hidden_size=1152, "
                               "num_heads=16)\" --base \"DiT(hidden_size=288, num_heads=4)\"")
    if in_place and output:
        raise click.UsageError("--in-place writes MODEL_FILE itself; leave -o out")
    target = path if in_place else Path(output) if output else path.with_name(
        f"{path.stem}_mup{path.suffix}")
    if not show_diff:
        _check_target(path, target, rule, in_place=in_place, force=force)
    try:
        emission = emit(path, model_expr, base_expr, rule=rule, inputs_expr=inputs_expr,
                        seed=seed, heads=heads, device=device, progress=_stage_printer())  # type: ignore[arg-type]
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    if show_diff:
        click.echo(_diff(emission.original, emission.source, str(path), str(target)), nl=False)
        return
    try:
        write_file(target, emission.data, force=force)
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    for change in emission.changes:
        click.echo(f"  - {change}", err=True)
    click.echo(f"wrote {target}", err=True)


def _check_target(path: Path, target: Path, rule: str, *, in_place: bool, force: bool) -> None:
    """Refuse, before any analysis, an output that is an input or cannot be written."""
    if not in_place and os.path.realpath(target) == os.path.realpath(path):
        raise click.UsageError("the output is MODEL_FILE itself: pass --in-place to "
                               "overwrite it, or another -o")
    inputs = [] if in_place else [("MODEL_FILE", path)]
    if rule.endswith(".toml"):
        inputs.append(("--rule", Path(rule)))
    try:
        check_distinct([("-o", target)], inputs)
        check_output(target, force=force, may_exist=in_place)
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None


def _diff(before: str, after: str, old_name: str, new_name: str) -> str:
    """A unified diff of the decoded texts; a changed line ending is a changed line."""
    lines = difflib.unified_diff(split_lines(before), split_lines(after), old_name, new_name)
    return "".join(line if line.endswith(("\n", "\r")) else
                   f"{line}\n\\ No newline at end of file\n" for line in lines)


def _check(path: Path) -> None:
    from ..emit import emitted_rule

    try:
        text = read_source(path).text
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    rule = emitted_rule(text)
    if rule is None:
        click.echo(f"{path}: not muP (no muprewrite header); run "
                   f"`muprewrite {path} --model ... --base ... -o ...`", err=True)
        raise SystemExit(1)
    if "mup_init(self)" not in text or "def mup_param_groups" not in text:
        click.echo(f"{path}: has a muprewrite header but mup_init(self) or mup_param_groups "
                   "is gone; regenerate it from the original file", err=True)
        raise SystemExit(1)
    click.echo(f"{path}: muP (rule {rule!r})")
