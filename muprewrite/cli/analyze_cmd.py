"""``muprewrite analyze``: print the muP role of every parameter of a model."""

from __future__ import annotations

import click

from ..errors import MuprewriteError
from ..spec import build_model, inputs_for, load_module
from .printing import stage_printer

__all__ = ["analyze_cmd"]

_ANALYZE_HELP = """Print the muP role of every parameter of a model defined in MODEL_FILE.

\b
MODEL_FILE is imported, as Python runs it (its top-level code runs; its prints go to
stderr). The model is built on the meta device (no memory is allocated) from --model,
a spec in the grammar of `muprewrite --help` (parsed, never evaluated):
  muprewrite analyze examples/dit.py --model "DiT(depth=4, hidden_size=256, num_heads=4)"

\b
Width evidence: with --base (the same architecture at another width) every tensor
axis is measured by diffing two captures; without it, one capture is analysed and
--heads says whether width grows by adding heads (grow, default) or by widening
them (fixed).

\b
Example inputs come from the model's example_inputs() method if it has one;
otherwise pass --inputs, e.g. --inputs "float(2, 4, 32, 32), int(2, high=1000)".

Nothing is written to disk.
"""



@click.command("analyze", help=_ANALYZE_HELP)
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--model", "model_expr", required=True, metavar="EXPR",
              help='Constructor call, e.g. "DiT(depth=4, hidden_size=256, num_heads=4)".')
@click.option("--base", "base_expr", metavar="EXPR",
              help="The same architecture at another width, e.g. \"DiT(hidden_size=128, num_heads=2)\".")
@click.option("--inputs", "inputs_expr", metavar="SPECS", multiple=True,
              help='Example inputs, e.g. "float(2, 4, 32, 32), int(2, high=1000)" (default: '
                   "model.example_inputs()). Repeat it for each path of the forward (with and "
                   "without targets, a flag): every set is captured.")
@click.option("--heads", type=click.Choice(["grow", "fixed"]), default="grow", show_default=True,
              help="Without --base: grow = more heads at fixed d_head; fixed = d_head grows.")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="Where to build the model: meta allocates nothing; cpu for constructors that "
                   "need real values (.item() in __init__).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--all", "show_all", is_flag=True,
              help="List every parameter (default: merge rows that differ only in a layer index).")
@click.option("--hparams", "hparams_text", metavar="CARD|NAME=VALUE,...",
              help="Base hyperparameters (a card from `muprewrite tune -o card.toml`, or "
                   "e.g. output_multiplier=2,lr_hidden=0.5): list them and the parameters "
                   "each one reaches in this model.")
def analyze_cmd(model_file: str, model_expr: str, base_expr: str | None, inputs_expr: tuple[str, ...],
                heads: str, device: str, as_json: bool, show_all: bool,
                hparams_text: str | None) -> None:
    from ..analysis.analyze import analyze
    from ..analysis.hparams_view import render_hparams_reach
    from ..rules.hparams import from_option

    try:
        module = load_module(model_file)
        model = build_model(module, model_expr, "--model", device=device)
        base = build_model(module, base_expr, "--base", device=device) if base_expr else None
        inputs = inputs_for(model, inputs_expr, device=device)
        hparams = from_option(hparams_text) if hparams_text else None
        report = analyze(model, inputs, base=base, heads=heads,  # type: ignore[arg-type]
                         progress=stage_printer())
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    if as_json:
        click.echo(report.to_json())
        return
    click.echo(report.table(collapse=not show_all))
    if hparams is not None:
        click.echo("\n" + render_hparams_reach(report, hparams, hparams_text or ""))
