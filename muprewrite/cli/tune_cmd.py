"""``muprewrite tune``: the proxy sweep on Optuna, written as a card (and a figure)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import MuprewriteError

__all__ = ["tune_cmd", "imported_files"]

_HELP = """Tune the learning rate and muP's base multipliers once, on a small proxy of
MODEL_FILE's model, with Optuna; write the best setting as a card for the wide model.

\b
  muprewrite tune model.py --model "GPT(n_embd={width}, n_head={width} // 32)" --width 64 \\
      --train train.py:train_trial --lr 1e-4:1e-1 --trials 30 --steps 200 \\
      --target-width 2048 --target-steps 50000 -o card.toml --plot sweep.png
then, for the wide model:
  model = muprewrite.apply(GPT(n_embd=2048, n_head=64), inputs,
                           base=GPT(n_embd=64, n_head=2), hparams="card.toml")
  opt = muprewrite.optimizer(model, lr=muprewrite.load_card("card.toml").lr)

\b
The proxy is --model (a spec; {width} is filled with --width) rewritten into muP
against --base (default: the proxy itself, so the card's numbers are the proxy's own).
--train names a function, file.py:function (or a function of MODEL_FILE), that gets
a muprewrite.training.tuning.TrialRun and returns the final validation loss:
  def train_trial(run):   # run.model, run.optimizer, run.lr, run.hparams, run.steps, run.seed
      for step in range(1, run.steps + 1):
          ...                                  # one training step
          if step % 20 == 0:
              run.report(step, val_loss())     # the pruner may stop the trial here
      return val_loss()
A trial whose function raises, returns NaN, inf or a non-number, reports a non-finite
loss, or runs past --trial-timeout fails alone: its error is kept on the trial (user
attribute "error") and the sweep goes on (it stops after --trials failures).

\b
Search space: --lr LOW:HIGH, and by default output_multiplier, input_multiplier,
attention_multiplier (models with attention), hidden_init and lr_hidden over
2^-4..2^4 (branch_multiplier too under a depth rule), all sampled log-uniformly.
--space (repeatable) replaces that list: --space output_multiplier=0.25:4
--space input_multiplier (default range) --space weight_decay=1e-4:1e-1
--space hidden_init=2 (held fixed).

\b
The ledger prices the sweep: sum over trials of (proxy FLOPs/step x steps the trial
ran) / (target FLOPs/step x --target-steps), FLOPs counted by torch's FlopCounterMode
over one forward and backward on the example inputs (the target on the meta device,
so it is never allocated). "tuning cost: 3.1 % of one target run" is printed and
stored in the card's [ledger] table. --target is a spec, or --target-width fills
{width} of --model.

\b
The study is an Optuna study in --storage: a journal file (default
STUDY_NAME.journal) or a database URL (sqlite:///tune.db, postgresql://...).
Running the same command again resumes it (and rewrites the card); --workers N
runs N processes on it, and more machines may join with the same command on a
shared storage. A worker killed mid-trial loses no finished trial; its trial is
marked failed and retried once. Browse the trials with
  optuna-dashboard STUDY_NAME.journal   (pip install 'muprewrite[tune]')

\b
Writes -o (the card) and, with --plot, a figure (loss against each hyperparameter)
and its JSON beside it. An existing card is replaced only if it came from this study,
or with --force; no output may be MODEL_FILE, the train file, a file they import or the
--rule file, even with --force.
"""


def _range_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    return None if value is None else _range(value, param.opts[0])


def _range(text: str, option: str) -> tuple[float, float] | float:
    try:
        if ":" in text:
            low, high = text.split(":")
            return float(low), float(high)
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: LOW:HIGH or one number, e.g. 1e-4:1e-1",
                                 param_hint=option) from None


def _space_option(ctx: click.Context, param: click.Parameter,
                  value: tuple[str, ...]) -> dict[str, Any] | None:
    if not value:
        return None
    space: dict[str, Any] = {}
    for item in value:
        name, _, text = item.partition("=")
        space[name.strip()] = _range(text, "--space") if text else None
    return space


def _fill(template: str | None, width: int | None, option: str) -> str | None:
    if template is None or "{width}" not in template:
        return template
    if width is None:
        raise click.BadParameter(f"the spec has {{width}}: pass {'--width' if option != '--target' else '--target-width'}",
                                 param_hint=option)
    return template.replace("{width}", str(width))


@click.command("tune", help=_HELP)
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--model", "template", required=True, metavar="SPEC",
              help='The proxy, e.g. "GPT(n_embd={width}, n_head=2)" with --width 64.')
@click.option("--width", type=click.IntRange(1), help="Fills {width} in --model and --base.")
@click.option("--base", "base_spec", metavar="SPEC",
              help="The base the proxy is rewritten against (default: the proxy itself).")
@click.option("--train", "train_ref", required=True, metavar="FILE.py:FUNCTION",
              help="The train function: TrialRun -> final validation loss.")
@click.option("--lr", callback=_range_option, metavar="LOW:HIGH",
              help="The learning rate's range (or one value, held fixed).")
@click.option("--space", "space", multiple=True, callback=_space_option,
              metavar="NAME[=LOW:HIGH]", help="Tune NAME (repeatable; replaces the default list).")
@click.option("--trials", type=click.IntRange(1), default=20, show_default=True,
              help="Finished trials (complete or pruned) in the study, across workers.")
@click.option("--steps", type=click.IntRange(1), required=True,
              help="The proxy's budget of optimizer steps per trial.")
@click.option("--target", "target_spec", metavar="SPEC", help="The target model, for the ledger.")
@click.option("--target-width", type=click.IntRange(1), help="Fills {width} of --target (or of --model).")
@click.option("--target-steps", type=click.IntRange(1), help="Steps of one target run.")
@click.option("--inputs", "inputs_expr", metavar="SPECS",
              help='The proxy\'s example inputs, e.g. "float(32, 64)" (default: example_inputs()).')
@click.option("--target-inputs", "target_inputs_expr", metavar="SPECS",
              help="The target's inputs for the FLOP count (default: the proxy's).")
@click.option("--rule", default="mup", show_default=True, help="Parametrization, by name or rule.toml.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Worker processes on this machine.")
@click.option("--storage", help="Journal file or database URL [default: STUDY_NAME.journal].")
@click.option("--study-name", default="muprewrite-tune", show_default=True)
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(["hyperband", "halving", "none"]),
              default="hyperband", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Sampler seed; trial N seeds torch with seed + N (see --trial-seeds).")
@click.option("--trial-seeds", type=click.Choice(["per-trial", "same"]), default="per-trial",
              show_default=True,
              help="'same': every trial seeds torch (init, and batches drawn with run.seed) "
                   "with --seed, so trials differ only in their hyperparameters (less noise "
                   "for the sampler and the pruner).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="Weight decay when it is not tuned.")
@click.option("--trial-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Fail a trial that runs longer (a hang in one C call ends when it returns).")
@click.option("--device", default="cpu", show_default=True, help="Where trials train.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default="card.toml",
              show_default=True, help="The card to write.")
@click.option("--plot", "plot", type=click.Path(dir_okay=False),
              help="Also draw loss against each hyperparameter (PNG, JSON beside it).")
@click.option("--force", is_flag=True, help="Replace existing output files.")
def tune_cmd(model_file: str, template: str, width: int | None, base_spec: str | None,
             train_ref: str, lr: Any, space: dict[str, Any] | None, trials: int, steps: int,
             target_spec: str | None, target_width: int | None, target_steps: int | None,
             inputs_expr: str | None, target_inputs_expr: str | None, rule: str, workers: int,
             storage: str | None, study_name: str, sampler: str, pruner: str, seed: int,
             trial_seeds: str, weight_decay: float, trial_timeout: float | None, device: str,
             out: str,
             plot: str | None, force: bool) -> None:
    from ..training.tuning.refs import FunctionRef, SpecBuilder, module_of

    proxy_spec = _fill(template, width, "--model")
    base_text = _fill(base_spec, width, "--base")
    if target_spec is None and target_width is not None and "{width}" in template:
        target_spec = template
    target_text = _fill(target_spec, target_width, "--target")
    if target_text is not None and target_steps is None:
        raise click.BadParameter("the ledger needs the target's steps", param_hint="--target-steps")
    storage = storage or f"{study_name}.journal"
    try:
        train = FunctionRef.parse(train_ref, model_file)
        outputs = _Outputs(Path(out), Path(plot) if plot else None, storage, study_name)
        outputs.check([model_file, train.path, *([rule] if rule.endswith(".toml") else [])],
                      force)
        module_of(model_file)  # import the files now: fail here, not in every trial
        imported = imported_files(model_file)
        train.resolve()
        outputs.check(imported + imported_files(train.path), force)
        proxy = SpecBuilder(model_file, proxy_spec or template)
        base = SpecBuilder(model_file, base_text, "--base") if base_text else None
        target = SpecBuilder(model_file, target_text, "--target", "meta") if target_text else None
        result = _run(proxy, base, target, train, lr, space, inputs_expr, target_inputs_expr,
                      dict(steps=steps, n_trials=trials, target_steps=target_steps, rule=rule,
                           workers=workers, storage=storage, study_name=study_name,
                           sampler=sampler, pruner=pruner, seed=seed, weight_decay=weight_decay,
                           timeout=trial_timeout, device=device, trial_seeds=trial_seeds))
        outputs.write(result, force)
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    click.echo(f"wrote {out}" + (f", {plot} and {outputs.plot_json}" if plot else ""))
    click.echo(f"study {study_name!r} in {storage}: run the same command to resume it; "
               f"browse it with: optuna-dashboard {storage}")


def _run(proxy: Any, base: Any, target: Any, train: Any, lr: Any, space: Any,
         inputs_expr: str | None, target_inputs_expr: str | None,
         settings: dict[str, Any]) -> Any:
    from ..spec import parse_inputs
    from ..training.tuning import tune

    inputs = parse_inputs(inputs_expr, device="cpu") if inputs_expr else None
    target_inputs = parse_inputs(target_inputs_expr, device="meta") if target_inputs_expr \
        else None
    return tune(proxy, train, lr=lr, space=space, inputs=inputs, base=base, target=target,
                target_inputs=target_inputs, **settings)


class _Outputs:
    """The card, the figure and its JSON: checked before any trial, written after."""

    def __init__(self, card: Path, plot: Path | None, storage: str, study_name: str) -> None:
        self.card, self.plot = card, plot
        self.plot_json = plot.with_suffix(".json") if plot else None
        self.storage, self.study_name = storage, study_name

    def check(self, inputs: list[str], force: bool) -> None:
        from ..files import check_distinct, check_output
        from ..training.tuning.storage import storage_file

        named = [("-o", self.card)] + ([("--plot", self.plot), ("--plot JSON", self.plot_json)]
                                       if self.plot and self.plot_json else [])
        journal = storage_file(self.storage)
        check_distinct(named + ([("--storage", journal)] if journal else []),
                       [("input", Path(p)) for p in inputs])
        for label, path in named:
            check_output(path, force=force, may_exist=self._ours(path), option=label)
        if journal:  # resumed, so it may exist; optuna writes it, through no link out
            check_output(journal, force=True, may_exist=True, option="--storage")
        if self.plot is not None:
            from ..files.figures import image_format

            try:
                image_format(self.plot)
            except ImportError:
                raise click.ClickException("--plot draws with matplotlib, which is not "
                                           "installed; fix: pip install matplotlib") from None

    def _ours(self, path: Path) -> bool:
        """Whether ``path`` was written for this very study (so resuming may replace it)."""
        if path == self.plot and self.plot_json is not None:
            path = self.plot_json
        try:
            if path.suffix == ".toml":
                from ..rules.hparams import load_card

                proxy = load_card(path).extra.get("proxy", {})
            else:
                proxy = json.loads(path.read_text())
        except (OSError, ValueError, MuprewriteError):
            return False
        return isinstance(proxy, dict) and proxy.get("study_name") == self.study_name \
            and proxy.get("storage") == self.storage

    def write(self, result: Any, force: bool) -> None:
        from ..files import write_file

        write_file(self.card, result.card.to_toml().encode(), force=force)
        if self.plot is not None:
            from ..training.tuning.plots import plot_tuning

            best = result.study.best_params
            plot_tuning([(result.card.extra["proxy"]["model"], result)], self.plot,
                        mark=best, json_path=self.plot_json, force=force,
                        study_name=self.study_name, storage=self.storage)


def imported_files(path: str) -> list[str]:
    """The files of ``path``'s project that are imported now (after loading it)."""
    from ..spec.project import is_project_file, project_root

    root = project_root(Path(path))
    files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
    return [f for f in files if f and is_project_file(f, root)]
