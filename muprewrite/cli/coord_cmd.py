"""``muprewrite coord-check``: activation size against width (or depth), as a figure, JSON and
verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InputSpecError, MuprewriteError
from ..files import check_distinct, check_output, write_file
from ..spec import build_model, load_module, parse_inputs
from .inputs import named_inputs, project_inputs

__all__ = ["coord_check_cmd"]

_HELP = """Coordinate check: does every activation keep its size as MODEL_FILE's model widens
(or, with --depths, deepens)?

\b
--model is a template with {width} where the width goes; arithmetic is allowed:
  muprewrite coord-check examples/dit.py \\
      --model "DiT(depth=2, hidden_size={width}, num_heads={width} // 32)" \\
      --widths 64,128,256,512,1024 --rule mup --rule sp

\b
Across depth at one width: {depth} in the template, --depths, and one width (or none):
  muprewrite coord-check examples/gpt.py \\
      --model "GPT(n_layer={depth}, n_embd=256, n_head=2)" \\
      --depths 2,4,8,16 --rule completep --rule mup --steps 20 --lr 1e-3
The shallowest model is the base under a depth rule (completep, depth-mup); a width-only
rule (mup, sp) refuses a base of another depth, so there each depth is its own base. The
slope is then against depth, and blocks are compared at the same relative depth (block j
of the shallowest model with the last block of the j-th group of the deeper one).

\b
At each width (the narrowest is the base) the model is rewritten with the rule, trained
for --steps Adam steps on one fixed batch, and the RMS of every module's output is
recorded at every step, averaged over --seeds initialisations. Per rule it prints the
slope of log2 RMS against log2 width at the last step and flags modules whose slope is
above the threshold (0.25: more than 2x growth over a 16x width range). Under muP
nothing should be flagged; under sp (the standard parametrization) the output is.

\b
Writes a PNG (one row per rule, one panel per step, one line per module) and a JSON
file with every number. Existing files are not overwritten without --force; both outputs
are checked before anything is computed (they must be writable, distinct, and neither
MODEL_FILE, a file it imports, nor a rule file, even with --force; a symlink is written
through only when it stays in its own folder).
"""


def _sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int]:
    if value is None:
        return []
    try:
        sizes = sorted({int(w) for w in value.split(",") if w.strip()})
    except ValueError:
        raise click.BadParameter("comma-separated integers, e.g. 64,128,256") from None
    if not sizes or sizes[0] < 1:
        raise click.BadParameter("positive integers, e.g. 64,128,256")
    return sizes


def _axis(template: str, widths: list[int], depths: list[int]) -> str:
    """"width" or "depth": the one axis that varies; BadParameter with the fix otherwise."""
    if depths:
        if "{depth}" not in template:
            raise click.BadParameter('with --depths the template needs {depth}, e.g. '
                                     '"GPT(n_layer={depth}, n_embd=256)"', param_hint="--model")
        if len(depths) < 2:
            raise click.BadParameter("at least two depths, e.g. 2,4,8,16",
                                     param_hint="--depths")
        if "{width}" in template and len(widths) != 1:
            raise click.BadParameter("a check across depth runs at one width: pass one, e.g. "
                                     "--widths 256 (or write the width into the template)",
                                     param_hint="--widths")
        return "depth"
    if "{depth}" in template:
        raise click.BadParameter("the template has {depth}: pass --depths, e.g. 2,4,8,16",
                                 param_hint="--model")
    if "{width}" not in template:
        raise click.BadParameter('the template needs {width}, e.g. "DiT(hidden_size={width})" '
                                 '(or {depth} with --depths)', param_hint="--model")
    if len(widths) < 2:
        raise click.BadParameter("at least two widths, e.g. 64,128,256", param_hint="--widths")
    return "width"


@click.command("coord-check", help=_HELP)
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--model", "template", required=True, metavar="TEMPLATE",
              help='Constructor call with {width} (or {depth}), e.g. "DiT(hidden_size={width}, num_heads=2)".')
@click.option("--widths", callback=_sizes, default="64,128,256,512,1024", show_default=True,
              help="Comma-separated widths; the narrowest is the base (with --depths: one).")
@click.option("--depths", callback=_sizes, default=None,
              help="Comma-separated depths for {depth}: check across depth at one width.")
@click.option("--rule", "rules", multiple=True, default=("mup",), show_default=True,
              help="Parametrization(s) to check, by name or path/to/rule.toml; repeat for side by side (--rule mup --rule sp).")
@click.option("--inputs", "inputs_expr", metavar="SPECS",
              help='Example inputs, e.g. "float(8, 4, 32, 32), int(8, high=1000)" (default: model.example_inputs()).')
@click.option("--steps", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Adam steps per width (or depth).")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate (at base width); under a Muon rule, Muon's.")
@click.option("--adam-lr", type=float, default=None,
              help="Under a Muon rule (mup-muon): AdamW's learning rate on the parameters Muon does not step (default: --lr).")
@click.option("--seeds", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Initialisations averaged per width (or depth).")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default="coord_check.png",
              show_default=True, help="The PNG to write.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="The JSON to write (default: the PNG's name with .json).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--all", "show_all", is_flag=True, help="Print the slope of every module.")
def coord_check_cmd(model_file: str, template: str, widths: list[int], depths: list[int],
                    rules: tuple[str, ...], inputs_expr: str | None, steps: int, lr: float,
                    adam_lr: float | None, seeds: int, out: str, json_path: str | None,
                    force: bool, show_all: bool) -> None:
    from ..files.figures import image_format
    from ..rules import load_rule
    from ..verify import coord_check, coord_check_depth
    from ..verify.plots import coord_checks_image

    png = Path(out)
    data = Path(json_path) if json_path else png.with_suffix(".json")
    _check_outputs(model_file, rules, png, data, force)
    axis = _axis(template, widths, depths)
    if adam_lr is not None and axis == "depth":
        raise click.UsageError("--adam-lr is for Muon rules, which transfer across width; "
                               "leave it out of a --depths check")
    sizes = depths if axis == "depth" else widths
    check = coord_check_depth if axis == "depth" else coord_check
    try:
        for rule in rules:
            load_rule(rule)
        module = load_module(model_file)
        outputs = [("-o", png), ("--json", data)]
        check_distinct(outputs, project_inputs(model_file, rules=rules))

        def build(size: int) -> Any:
            filled = (template.replace("{width}", str(widths[0])).replace("{depth}", str(size))
                      if axis == "depth" else template.replace("{width}", str(size)))
            return build_model(module, filled, "--model", device="cpu")

        def inputs(model: Any) -> Any:
            if inputs_expr:
                return parse_inputs(inputs_expr, device="cpu")
            if not callable(getattr(model, "example_inputs", None)):
                raise InputSpecError(f"{type(model).__name__} has no example_inputs() method",
                                     fix='pass --inputs, e.g. --inputs "float(8, 3, 32, 32)"')
            return model.example_inputs()

        checks = []
        total = len(sizes) * seeds
        for rule in rules:
            with click.progressbar(length=total, label=f"{rule}: {axis}s x seeds",
                                   file=sys.stderr) as bar:
                def advance(done: int, _total: int, bar: Any = bar) -> None:
                    bar.update(done - bar.pos)

                extra = {"adam_lr": adam_lr} if axis == "width" else {}
                checks.append(check(build, sizes, inputs=inputs, rule=rule, steps=steps,
                                    lr=lr, seeds=seeds, progress=advance, **extra))
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    for result in checks:
        click.echo(result.verdict())
        if show_all:
            for name in result.rms:
                click.echo(f"  {name or '<output>'}: slope {result.slope(name):+.2f}")
    shown = template.replace("{width}", str(widths[0])) if axis == "depth" else template
    title = f"{Path(model_file).name}: {shown}, {steps} Adam steps, lr {lr:g}"
    try:
        image = coord_checks_image(checks, title=title, fmt=image_format(png))
        check_distinct(outputs, project_inputs(model_file, rules=rules))  # imported since
        write_file(png, image, force=force)
        write_file(data, json.dumps({c.rule: c.to_dict() for c in checks}, indent=1).encode(),
                   force=force)
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    click.echo(f"wrote {png} and {data}")


def _check_outputs(model_file: str, rules: tuple[str, ...], png: Path, data: Path,
                   force: bool) -> None:
    """Refuse, before any compute, outputs that clash with an input or each other, cannot be
    written, or name an image format matplotlib lacks."""
    from ..files.figures import image_format

    try:
        check_distinct([("-o", png), ("--json", data)], named_inputs(model_file, rules=rules))
        check_output(png, force=force, option="-o")
        check_output(data, force=force, option="--json")
        image_format(png)
    except ImportError:
        raise click.ClickException("coord-check draws its figure with matplotlib, which is not "
                                   "installed; fix: pip install matplotlib") from None
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
