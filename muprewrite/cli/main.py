"""The ``muprewrite`` command line."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

import click

from ..errors import MuprewriteError
from ..spec import build_model, inputs_for, load_module

__all__ = ["main", "cli"]

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


class _Main(click.Group):
    """``muprewrite model.py ...`` is ``muprewrite emit model.py ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0].endswith(".py"):
            args = ["emit", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="muprewrite")
def cli() -> None:
    """muprewrite: put a PyTorch model into muP (maximal update parametrization).

    \b
    muprewrite model.py --model "DiT(...)" --base "DiT(...)" -o model_mup.py
        writes the muP version of your model file (same as `muprewrite emit ...`).

    \b
    MODEL_FILE is imported as Python runs it: its top-level code runs, with stdout
    sent to stderr and sys.argv = [MODEL_FILE]; a file inside a package (folder with
    __init__.py) is imported as a module of its package, so relative imports work.

    \b
    Specs (--model, --base, --inputs, coord-check templates) are parsed, never
    evaluated. A spec is a call of a class or function that MODEL_FILE defines or
    imports from your project (files under its folder, or above its package):
      "GPT(GPTConfig(n_embd=256, n_head=256 // 64), dropout=0.0)"
    Arguments are literals (numbers, strings, tuples, lists, dicts, True/False/None),
    nested calls of the same, and + - * / // % ** on numbers; integers stay within
    +-2**63 and floats finite. No attribute access into libraries, no *args/**kwargs,
    no keyword twice. --inputs uses tensor specs: "float(2, 8), t=int(2, high=1000)".

    \b
    Exit status: 0 done, 1 error (one "Error:" line with a fix), 130 interrupted.
    """


@cli.command("analyze", help=_ANALYZE_HELP)
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
    from ..analysis.hparams_view import render_hparams_reach
    from ..analyzer import analyze
    from ..hparams import from_option

    try:
        module = load_module(model_file)
        model = build_model(module, model_expr, "--model", device=device)
        base = build_model(module, base_expr, "--base", device=device) if base_expr else None
        inputs = inputs_for(model, inputs_expr, device=device)
        hparams = from_option(hparams_text) if hparams_text else None
        report = analyze(model, inputs, base=base, heads=heads,  # type: ignore[arg-type]
                         progress=_stage_printer())
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    if as_json:
        click.echo(report.to_json())
        return
    click.echo(report.table(collapse=not show_all))
    if hparams is not None:
        click.echo("\n" + render_hparams_reach(report, hparams, hparams_text or ""))


from .check_cmd import check_cmd  # noqa: E402 - the group is defined above
from .coord_cmd import coord_check_cmd  # noqa: E402
from .emit_cmd import emit_cmd  # noqa: E402
from .rules_cmd import rules_group  # noqa: E402
from .spectra_cmd import spectra_cmd  # noqa: E402
from .transfer_cmd import transfer_cmd  # noqa: E402
from .tune_cmd import tune_cmd  # noqa: E402

cli.add_command(rules_group)
cli.add_command(check_cmd)
cli.add_command(coord_check_cmd)
cli.add_command(emit_cmd)
cli.add_command(spectra_cmd)
cli.add_command(tune_cmd)
cli.add_command(transfer_cmd)


def _stage_printer() -> Callable[[str], None] | None:
    """Stage messages on stderr, only when a person is watching (stderr is a terminal)."""
    if not sys.stderr.isatty():
        return None
    start = time.perf_counter()

    def say(message: str) -> None:
        click.echo(f"[{time.perf_counter() - start:5.1f}s] {message}...", err=True)

    return say


class Terminated(BaseException):
    """SIGTERM, raised where the program stands so that ``finally`` blocks clean up."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: exit 0 on success, 1 with one ``Error:`` line, 130 on Ctrl-C, 143 on SIGTERM.

    Temporary files are removed on every way out (writes clean up in ``finally``).
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = cli.main(args=argv, prog_name="muprewrite", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Interrupted; nothing was left half-written.", err=True)
        sys.exit(130)
    except Terminated:
        sys.exit(143)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MuprewriteError as exc:
        click.echo(f"Error: {exc.one_line()}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, traceback on request
        if os.environ.get("MUPREWRITE_TRACEBACK"):
            raise
        click.echo(f"Error: internal error: {type(exc).__name__}: {exc}; fix: please report it "
                   "(MUPREWRITE_TRACEBACK=1 shows the traceback)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
