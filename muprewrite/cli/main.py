"""The ``muprewrite`` command line: the group, its commands (one module each), and ``main``.

This module imports the commands; they import nothing from it (shared printing: printing.py)."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import click

from ..errors import MuprewriteError

__all__ = ["main", "cli"]


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


from .analyze_cmd import analyze_cmd  # noqa: E402 - the group is defined above
from .check_cmd import check_cmd  # noqa: E402
from .coord_cmd import coord_check_cmd  # noqa: E402
from .emit_cmd import emit_cmd  # noqa: E402
from .rules_cmd import rules_group  # noqa: E402
from .spectra_cmd import spectra_cmd  # noqa: E402
from .transfer_cmd import transfer_cmd  # noqa: E402
from .tune_cmd import tune_cmd  # noqa: E402

cli.add_command(analyze_cmd)
cli.add_command(rules_group)
cli.add_command(check_cmd)
cli.add_command(coord_check_cmd)
cli.add_command(emit_cmd)
cli.add_command(spectra_cmd)
cli.add_command(tune_cmd)
cli.add_command(transfer_cmd)


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
