"""``muprewrite check``: does an emitted file train what ``muprewrite.apply`` trains?"""

from __future__ import annotations

import click

from ..errors import MuprewriteError
from .printing import stage_printer

__all__ = ["NOT_EXERCISED", "check_cmd"]

NOT_EXERCISED = 3  # exit status: passed what it ran, some emitted edits no run reached

_HELP = """Check an emitted muP file by running it: exit 1 at the first divergence, 3 when
it passed what it ran but some emitted edits never ran.

\b
  muprewrite check dit_mup.py --model "DiT(hidden_size=256, num_heads=2)" \\
      --model "DiT(hidden_size=512, num_heads=2)"

\b
Builds EMITTED_FILE's model at its base width (read from the file) and at each --model
(under a depth rule, --model may also set another number of blocks),
and the original model (named in the file's header, or --original) rewritten by
muprewrite.apply with the same base. In float64 it compares: the base's structure with
the model's; the parameters after seeding; the output for every input set (--inputs,
repeatable; default the model's example_inputs()) in train and in eval mode; each
parameter's optimizer settings in mup_param_groups and mup_optimizer against
muprewrite.param_groups and muprewrite.optimizer (lr, weight decay, eps, and under a Muon
rule whether Muon or AdamW steps it); and --steps steps of mup_optimizer against
muprewrite.optimizer (AdamW, SGD, or torch.optim.Muon with AdamW), losses and final
parameters. At the base width the expectation is the original model itself, trained as
the rule trains it there (every width factor 1).

\b
A removed readout multiplier, attention factor or residual branch multiplier, a branch
of the forward left unscaled (pass an --inputs that runs it), a changed optimizer factor
or flag (Muon, no weight decay), or a base of another structure fails the check, naming
the emitted file's line, the mode and the size of the error. Paths that no input set
runs are not checked. `muprewrite FILE --check` is the quick, text-only check of the
header (it runs nothing).

\b
Before comparing, both models are moved off their init by the same seeded noise (at init
an adaLN-Zero model outputs zeros and hides every factor); gradients and each parameter
after the first step are compared by name. With one --model (or only powers of two), check
adds widths of its own derived from the specs (1.5x, 3x, ... the base), under a depth rule
two depths other than the base's; what it could not add is printed as "note:". The header
is held against mup_base_model() and MUP_RULE.

\b
Exit status: 0 passed, and every emitted edit ran; 1 a divergence (or the file cannot be
checked); 3 passed what it ran, but N emitted edits no run reached (each named with the
condition guarding it: pass --inputs or --model specs that take that path).

\b
Base hyperparameters: apply gets the values of EMITTED_FILE's MUP_* constants (a file
emitted without --hparams has none: all 1), so a retuned file is checked as retuned.
--hparams CARD first checks that the constants hold the card's values.
"""


@click.command("check", help=_HELP)
@click.argument("emitted_file", type=click.Path(dir_okay=False))
@click.option("--model", "models", multiple=True, required=True, metavar="EXPR",
              help="A width to check at (repeat: two widths above the base are a good check).")
@click.option("--inputs", "inputs", multiple=True, metavar="SPECS",
              help='One input set, e.g. "int(2, 16, high=100)"; repeat for each path.')
@click.option("--original", type=click.Path(dir_okay=False),
              help="The file the emitted one was written from (default: named in its header).")
@click.option("--base", "base", default=None, metavar="EXPR",
              help="The base for apply's reference, when --model sets options (flags) the "
                   "emitted base call lacks; the same widths as that call.")
@click.option("--rule", default=None,
              help="The rule, when a custom rule file was used: path/to/rule.toml.")
@click.option("--hparams", "hparams", type=click.Path(dir_okay=False), metavar="CARD",
              help="The card the file was emitted with: its MUP_* constants must hold its "
                   "values.")
@click.option("--steps", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Optimizer steps compared (mup_optimizer against muprewrite.optimizer).")
@click.option("--no-derive", "no_derive", is_flag=True,
              help="Run only the --model specs given (no widths or depths added).")
def check_cmd(emitted_file: str, models: tuple[str, ...], inputs: tuple[str, ...],
              original: str | None, base: str | None, rule: str | None, hparams: str | None,
              steps: int, no_derive: bool) -> None:
    from ..verify.source_check import check_emitted

    try:
        result = check_emitted(emitted_file, models, inputs=inputs, original=original,
                               rule=rule, steps=steps, base=base, hparams=hparams,
                               progress=stage_printer(), derive=not no_derive)
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    for line in result.compared:
        click.echo(f"ok: {line}")
    for line in result.notes:
        click.echo(f"note: {line}")
    if result.divergence is not None:
        restore = ("restore what the header says there" if result.divergence.what == "header"
                   else "restore the muP factor there")
        raise click.ClickException(
            f"{result.file}: {result.divergence.line()}; fix: regenerate it with `muprewrite "
            f"{result.original.name} --model ... --base ... -o {result.file.name}`, or if the "
            f"edit was yours, {restore}")
    if result.unexercised:
        for line in result.unexercised:
            click.echo(f"not exercised: {line}")
        click.echo(f"{result.file}: passed what it ran, {len(result.unexercised)} edit(s) not "
                   f"exercised (rule {result.rule!r}): pass --inputs or --model specs that "
                   "take those paths")
        raise SystemExit(NOT_EXERCISED)
    click.echo(f"{result.file}: behaves as muprewrite.apply on {result.original.name} "
               f"(rule {result.rule!r})")
