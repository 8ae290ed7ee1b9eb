"""``muprewrite spectra``: spectral norms of weights and updates against width, as a figure, JSON
and verdict per rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import MuprewriteError
from ..files import check_distinct, check_folder, check_output, write_files
from ..spec import build_model, inputs_for, load_module
from .coord_cmd import _sizes
from .inputs import named_inputs, project_inputs

__all__ = ["spectra_cmd"]

_HELP = """Spectral check: do MODEL_FILE's weight matrices and their updates keep the size feature
learning needs as the model widens?

\b
--model is a template with {width} where the width goes; arithmetic is allowed:
  muprewrite spectra examples/gpt.py \\
      --model "GPT(n_layer=2, n_embd={width}, n_head={width} // 32)" \\
      --widths 64,128,256,512 --rule mup --rule sp
  muprewrite spectra examples/gpt.py --model "GPT(n_embd={width}, n_head=2)" \\
      --widths 64,128,256 --rule mup-muon --lr 0.02 --adam-lr 3e-3

\b
"A Spectral Condition for Feature Learning" (Yang, Simon & Bernstein 2023): every
weight matrix W (fan_out x fan_in) needs ||W|| and each update ||dW|| of order
sqrt(fan_out / fan_in), in spectral norm (the largest singular value). At each width
(the narrowest is the base) the model is rewritten with the rule, trained for --steps
steps on one fixed batch with muprewrite.optimizer (AdamW, SGD, or Muon on the hidden
matrices and AdamW elsewhere, as the rule says), and the spectral norm of every matrix
(times its forward multiplier; conv kernels as (out, in*k*k)) and of every update is
divided by sqrt(fan_out / fan_in).

\b
Per role (input, hidden, output) it prints the geometric mean of those ratios at each
width and the slope of log2 ratio against log2 width. Flagged when the slope is above
the threshold (0.25) in size: every role's update ratio and the hidden weight ratio
(they must stay flat); the input and output weight ratios only when they grow (a
readout may start below the condition, e.g. zero-initialised; an input matrix reads
right only once the width is well above its fan-in). A matrix stepped by Muon at some
widths and not at others is flagged too. Under muP nothing should be flagged; under sp
the hidden update ratio grows with width.

\b
Writes OUT/spectra_<rule>.png (one panel per role) and OUT/spectra_<rule>.json (every
number) per rule, and exits with status 1 when something is flagged. Existing files are
not overwritten without --force; the outputs are checked before anything is computed, and
never replace MODEL_FILE, a file it imports or a rule file, nor write through a symlink
that leads out of OUT, even with --force.
"""


@click.command("spectra", help=_HELP)
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--model", "template", required=True, metavar="TEMPLATE",
              help='Constructor call with {width}, e.g. "GPT(n_embd={width}, n_head=2)".')
@click.option("--widths", callback=_sizes, default="64,128,256,512,1024", show_default=True,
              help="Comma-separated widths (two or more); the narrowest is the base.")
@click.option("--rule", "rules", multiple=True, default=("mup",), show_default=True,
              help="Parametrization(s) to check, by name or path/to/rule.toml; repeat for "
                   "several (--rule mup --rule sp).")
@click.option("--inputs", "inputs_expr", metavar="SPECS", multiple=True,
              help='Example inputs, e.g. "float(8, 4, 32, 32), int(8, high=1000)" (default: '
                   "model.example_inputs()); repeat for each path of the forward (the first "
                   "trains).")
@click.option("--steps", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Optimizer steps per width.")
@click.option("--lr", type=float, default=3e-3, show_default=True,
              help="Learning rate at base width (under a Muon rule: Muon's).")
@click.option("--adam-lr", type=float, default=None,
              help="Under a Muon rule: AdamW's learning rate at base width (default: --lr). "
                   "Other rules ignore it.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="Weight decay at base width (the rule scales it).")
@click.option("--seeds", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Initialisations averaged per width.")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Folder for spectra_<rule>.png and .json (made if missing).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--all", "show_all", is_flag=True, help="Print the ratios of every matrix.")
def spectra_cmd(model_file: str, template: str, widths: list[int], rules: tuple[str, ...],
                inputs_expr: tuple[str, ...], steps: int, lr: float, adam_lr: float | None,
                weight_decay: float, seeds: int, out: str, force: bool, show_all: bool) -> None:
    from ..verify import spectral_check

    if "{width}" not in template:
        raise click.BadParameter('the template needs {width}, e.g. "GPT(n_embd={width})"',
                                 param_hint="--model")
    if len(widths) < 2:
        raise click.BadParameter("at least two widths, e.g. 64,128,256", param_hint="--widths")
    muon_rule = _check_outputs(model_file, rules, Path(out), force)
    try:
        module = load_module(model_file)
        _check_imports(model_file, rules, Path(out), [rule_id for _, rule_id in muon_rule])

        def build(width: int) -> Any:
            return build_model(module, template.replace("{width}", str(width)), "--model",
                               device="cpu")

        def inputs(model: Any) -> Any:
            given = inputs_for(model, inputs_expr, device="cpu")  # refuses a model without
            return model.example_inputs() if given is None else given  # example_inputs()

        results = []
        for (rule, _), muon in muon_rule.items():
            with click.progressbar(length=len(widths) * seeds, label=f"{rule}: widths x seeds",
                                   file=sys.stderr) as bar:
                def advance(done: int, _total: int, bar: Any = bar) -> None:
                    bar.update(done - bar.pos)

                results.append(spectral_check(
                    build, widths, inputs=inputs, rule=rule, steps=steps, lr=lr,
                    adam_lr=adam_lr if muon else None,
                    weight_decay=weight_decay, seeds=seeds, progress=advance))
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    _write(results, model_file, rules, template, Path(out), force, show_all)


def _outputs(out: Path, rule_ids: list[str]) -> list[tuple[str, Path]]:
    return [("--out", out / f"spectra_{rule_id}.{ext}") for rule_id in rule_ids
            for ext in ("png", "json")]


def _check_imports(model_file: str, rules: tuple[str, ...], out: Path,
                   rule_ids: list[str]) -> None:
    """Refuse an output that is a file the model imports (known once it is loaded)."""
    check_distinct(_outputs(out, rule_ids), project_inputs(model_file, rules=rules))


def _write(results: list[Any], model_file: str, rules: tuple[str, ...], template: str,
           out: Path, force: bool, show_all: bool) -> None:
    """Print each summary and verdict, write every figure and JSON (all or none), and fail
    when something is flagged."""
    from ..verify.spectral_plots import spectra_image

    items = []
    for spectra in results:
        click.echo(spectra.summary(per_matrix=show_all))
        click.echo(spectra.verdict())
        title = (f"{Path(model_file).name}: {template}, rule {spectra.rule!r}, {spectra.steps} "
                 f"steps of {spectra.optimizer}, lr {spectra.lr:g}")
        name = f"spectra_{spectra.rule}"
        items += [(out / f"{name}.png", spectra_image(spectra, title)),
                  (out / f"{name}.json", json.dumps(spectra.to_dict(), indent=1).encode())]
    try:
        _check_imports(model_file, rules, out, [s.rule for s in results])
        write_files(items, force=force, make_folders=True)
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    click.echo(f"wrote {', '.join(str(path) for path, _ in items)}")
    bad = [s.rule for s in results if not s.ok()]
    if bad:
        raise click.ClickException(
            f"the spectral condition is not met under rule(s) {', '.join(map(repr, bad))} "
            "(see FLAGGED above); fix: under sp this is expected (use mup); under another "
            "rule, scale the flagged role's learning rate (update ratio) or init (weight "
            "ratio) with width until its slope is flat, and have one optimizer step each "
            "matrix at every width (--all shows every matrix)")


def _check_outputs(model_file: str, rules: tuple[str, ...], out: Path,
                   force: bool) -> dict[tuple[str, str], bool]:
    """Refuse, before any compute, an unknown rule and outputs that clash with an input or
    each other or cannot be written. Returns (rule, id) -> whether it is a Muon rule."""
    from ..files.figures import image_format
    from ..rules import load_rule

    try:
        loaded = {(rule, load_rule(rule).id): load_rule(rule).optimizer == "muon"
                  for rule in rules}
        outputs = _outputs(out, [rule_id for _, rule_id in loaded])
        check_distinct(outputs, named_inputs(model_file, rules=rules))
        check_folder(out, option="--out")
        if out.is_dir():
            for _, path in outputs:
                check_output(path, force=force, option="--out")
        image_format(outputs[0][1])
    except ImportError:
        raise click.ClickException("spectra draws its figures with matplotlib, which is not "
                                   "installed; fix: pip install matplotlib") from None
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    return loaded
