"""``muprewrite transfer``: check a tuned card at the target width (regret and cost)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import MuprewriteError

__all__ = ["transfer_cmd"]

_HELP = """Check that the setting in CARD (written by `muprewrite tune`) is still the best at
the target width: train it and its one-at-a-time neighbours on the target, and report
the regret (its loss minus the best loss found) and what the check cost.

\b
  muprewrite transfer card.toml model.py --target "GPT(n_embd=1024, n_head=16)" \\
      --train train.py:train_trial --steps 300 --target-steps 50000

\b
The neighbours: the learning rate and each hyperparameter the sweep tuned (or --vary
NAME, repeatable) times each of --factors (default 0.5,2), so 1 + 2 x (tuned ones)
runs of --steps steps, all from the same seed. The target is rewritten against --base
(default: the card's base, the proxy the card was tuned on). A regret near 0 means the
optimum transferred, within the grid's resolution; the cost is the check's training
steps over --target-steps (same model, so FLOPs per step cancel).

Writes -o (JSON with every run); not over CARD, MODEL_FILE, the train file or a file
they import, and not over an existing file without --force.
"""


def _factors(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        factors = tuple(float(f) for f in value.split(",") if f.strip())
    except ValueError:
        raise click.BadParameter("comma-separated numbers, e.g. 0.5,2") from None
    if not factors or any(f <= 0 for f in factors):
        raise click.BadParameter("positive numbers, e.g. 0.5,2")
    return factors


@click.command("transfer", help=_HELP)
@click.argument("card_path", metavar="CARD", type=click.Path(dir_okay=False))
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--target", "target_spec", required=True, metavar="SPEC",
              help='The target model, e.g. "GPT(n_embd=1024, n_head=16)".')
@click.option("--base", "base_spec", metavar="SPEC", help="Default: the card's base.")
@click.option("--train", "train_ref", required=True, metavar="FILE.py:FUNCTION",
              help="The sweep's train function.")
@click.option("--steps", type=click.IntRange(1), required=True, help="Steps per run.")
@click.option("--target-steps", type=click.IntRange(1), help="Steps of one target run (for the cost).")
@click.option("--vary", multiple=True, metavar="NAME", help="What to vary (default: what was tuned).")
@click.option("--factors", callback=_factors, default="0.5,2", show_default=True)
@click.option("--inputs", "inputs_expr", metavar="SPECS",
              help="The target's example inputs (default: example_inputs()).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--trial-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS")
@click.option("--device", default="cpu", show_default=True)
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default="transfer.json",
              show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def transfer_cmd(card_path: str, model_file: str, target_spec: str, base_spec: str | None,
                 train_ref: str, steps: int, target_steps: int | None, vary: tuple[str, ...],
                 factors: tuple[float, ...], inputs_expr: str | None, seed: int,
                 trial_timeout: float | None, device: str, out: str, force: bool) -> None:
    from ..files import check_distinct, check_output, write_file
    from ..rules.hparams import load_card
    from ..spec import parse_inputs
    from ..training.tuning.refs import FunctionRef, SpecBuilder, module_of
    from ..training.tuning.transfer import verify_transfer
    from .tune_cmd import imported_files

    try:
        card = load_card(card_path)
        base_text = base_spec or card.base
        if not base_text:
            raise click.BadParameter("the card names no base spec", param_hint="--base")
        train = FunctionRef.parse(train_ref, model_file)
        inputs = [card_path, model_file, train.path]
        check_distinct([("-o", Path(out))], [("input", Path(p)) for p in inputs])
        check_output(out, force=force)
        module_of(model_file)
        imported = imported_files(model_file)
        train.resolve()
        check_distinct([("-o", Path(out))], [("input", Path(p)) for p in
                                             imported + imported_files(train.path)])
        check = verify_transfer(
            card, SpecBuilder(model_file, target_spec, "--target"), train,
            base=SpecBuilder(model_file, base_text, "--base"), steps=steps,
            inputs=parse_inputs(inputs_expr, device="cpu") if inputs_expr else None,
            target_steps=target_steps, names=list(vary) or None, factors=factors, seed=seed,
            timeout=trial_timeout, device=device)
        write_file(out, json.dumps(check.to_dict(), indent=1).encode(), force=force)
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    click.echo(check.summary())
    click.echo(f"wrote {out}")
