"""Tune once on the proxy, train the target once: does it beat tuning the target directly?

For the char-level GPT (``examples/tune_chargpt.py``) or the digits DiT
(``examples/tune_dit.py``), with a proxy of width ``--proxy`` and a target of width
``--target`` (8x by default), it runs five Optuna sweeps through ``muprewrite.tune`` and
then trains the target once per setting and seed:

  a       muP, lr + base multipliers tuned on the proxy (Hyperband pruning), card carried over
  a-full  the same sweep without pruning (for the pruning figure: best value and proxy FLOPs)
  b       muP, the learning rate alone tuned on the proxy (multipliers all 1)
  c       SP (standard parametrization), the learning rate tuned at the target
  d       muP, lr + multipliers tuned directly at the target: same space, same trial count,
          same pruner (what (a) tries to reach at a fraction of its cost)

The table compares (a)-(d) at the target (mean and spread over ``--seeds``), and the ledger
gives each sweep's cost as a share of one target run. Every study is a journal file in the
output folder: a rerun resumes where it stopped. Writes ``{out}.json`` and ``{out}.png``
(loss against each hyperparameter, proxy and target, transferred point marked).

    python benchmarks/tune_transfer.py gpt --workers 2      # ~20 min on 2 CPU cores
    python benchmarks/tune_transfer.py dit --workers 2
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import muprewrite  # noqa: E402
from muprewrite.rules.hparams import Card  # noqa: E402
from muprewrite.training.tuning import TrialRun, tune  # noqa: E402

LR = (1e-4, 3e-1)


def _model(name: str) -> Any:
    if name == "gpt":
        import tune_chargpt as mod
    else:
        import tune_dit as mod
    return mod


def _inputs(name: str, mod: Any) -> Any:
    return mod.inputs() if name == "dit" else None


def sweep(args: argparse.Namespace, key: str, *, width: int, rule: str, space: Any,
          trials: int, pruner: str) -> tuple[Card, dict[str, Any]]:
    """One study (resumed from its journal if it exists); its card and a record."""
    mod = _model(args.model)
    started = time.time()
    result = tune(functools.partial(mod.build, width), mod.train, steps=args.steps, lr=LR,
                  base=functools.partial(mod.build, args.proxy), rule=rule, space=space,
                  inputs=_inputs(args.model, mod), n_trials=trials, pruner=pruner,
                  target=functools.partial(mod.build, args.target),
                  target_steps=args.steps, workers=args.workers, seed=args.seed,
                  storage=str(args.out_dir / f"{args.model}-{key}.journal"),
                  study_name=f"{args.model}-{key}", progress=not args.quiet,
                  trial_seeds=args.trial_seeds)
    print(f"[{key}] {result.summary()}", file=sys.stderr)
    trials_done = [t for t in result.study.get_trials(deepcopy=False)
                   if t.state.name in ("COMPLETE", "PRUNED")]
    record = {"width": width, "rule": rule, "pruner": pruner, "best_value": result.best_value,
              "lr": result.card.lr, "hparams": result.card.hparams.changed(),
              "ledger": result.ledger.to_table(), "seconds": time.time() - started,
              "trials": [{"params": t.params, "value": t.value, "state": t.state.name,
                          "steps": t.user_attrs.get("steps_run")} for t in trials_done]}
    return result.card, record


def train_target(args: argparse.Namespace, card: Card, rule: str, seed: int) -> float:
    """The target trained once from the card (no pruning), with ``seed``."""
    mod = _model(args.model)
    torch.manual_seed(seed)
    model, base = mod.build(args.target), mod.build(args.proxy)
    model = muprewrite.apply(model, _inputs(args.model, mod), base=base, rule=rule,
                             hparams=card.hparams)
    assert card.lr is not None
    opt = muprewrite.optimizer(model, lr=card.lr)
    run = TrialRun(model=model, optimizer=opt, lr=card.lr, weight_decay=0.0,
                   hparams=card.hparams, steps=args.steps, seed=seed, number=-1,
                   inputs=_inputs(args.model, mod))
    return float(mod.train(run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["gpt", "dit"])
    parser.add_argument("--proxy", type=int, default=32)
    parser.add_argument("--target", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--lr-trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--trial-seeds", choices=["per-trial", "same"], default="same",
                        help="'same': every trial of a sweep sees the same init and batches")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tune_transfer")
    args = parser.parse_args()
    args.out = Path(f"{args.out}_{args.model}" + ("_per-trial-seeds" if args.trial_seeds ==
                                                  "per-trial" else ""))
    args.out_dir = args.out.parent / (args.out.name + "_studies")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    lr_only: dict[str, Any] = {}  # the learning rate alone (its range: LR)
    cards, records = {}, {}
    plan = [("a", args.proxy, "mup", None, args.trials, "hyperband"),
            ("a-full", args.proxy, "mup", None, args.trials, "none"),
            ("b", args.proxy, "mup", lr_only, args.lr_trials, "hyperband"),
            ("c", args.target, "sp", lr_only, args.lr_trials, "hyperband"),
            ("d", args.target, "mup", None, args.trials, "hyperband")]
    for key, width, rule, space, trials, pruner in plan:
        cards[key], records[key] = sweep(args, key, width=width, rule=rule, space=space,
                                         trials=trials, pruner=pruner)
    rules = {"a": "mup", "b": "mup", "c": "sp", "d": "mup"}
    finals: dict[str, list[float]] = {}
    for key, rule in rules.items():
        finals[key] = [train_target(args, cards[key], rule, seed) for seed in range(args.seeds)]
        print(f"[{key} at the target] {finals[key]}", file=sys.stderr)
    out = _summary(args, records, finals)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"summary": out, "sweeps": records, "finals": finals}, indent=1))
    _plot(args, records)
    print(json.dumps(out, indent=1))


def _summary(args: argparse.Namespace, records: dict[str, Any],
             finals: dict[str, list[float]]) -> dict[str, Any]:
    mean = {k: statistics.fmean(v) for k, v in finals.items()}
    spread = {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in finals.items()}
    cost = {k: r["ledger"].get("cost") for k, r in records.items()}
    return {
        "model": args.model, "proxy": args.proxy, "target": args.target, "steps": args.steps,
        "trials": args.trials, "seeds": args.seeds,
        "target_loss_mean": mean, "target_loss_std": spread,
        "a_minus_c": mean["a"] - mean["c"],
        "a_over_d_percent": 100 * (mean["a"] / mean["d"] - 1),
        "cost_share_of_one_target_run": cost,
        "a_cost_over_d_cost_percent": 100 * cost["a"] / cost["d"] if cost["d"] else None,
        "pruning": {"best_pruned": records["a"]["best_value"],
                    "best_full": records["a-full"]["best_value"],
                    "gap_percent": 100 * (records["a"]["best_value"]
                                          / records["a-full"]["best_value"] - 1),
                    "flops_share_percent": 100 * records["a"]["ledger"]["proxy_flops"]
                    / records["a-full"]["ledger"]["proxy_flops"]},
        "cards": {k: {"lr": records[k]["lr"], **records[k]["hparams"]} for k in rules_of()},
    }


def rules_of() -> tuple[str, ...]:
    return ("a", "b", "c", "d")


def _plot(args: argparse.Namespace, records: dict[str, Any]) -> None:
    """Loss against each tuned hyperparameter: the proxy's sweep (a) and the target's (d),
    each trial a dot, the best of each marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for key in ("a", "d") for t in records[key]["trials"] for n in t["params"]})
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), sharey=True,
                             squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes, names):
        for key, color, label in (("a", "tab:blue", f"proxy (width {args.proxy})"),
                                  ("d", "tab:red", f"target (width {args.target})")):
            pts = [(t["params"][name], t["value"]) for t in records[key]["trials"]
                   if t["state"] == "COMPLETE" and name in t["params"]]
            if pts:
                ax.scatter(*zip(*pts), s=9, alpha=0.5, color=color, label=label)
            best = records[key]["lr"] if name == "lr" else records[key]["hparams"].get(name, 1.0)
            ax.axvline(best, color=color, lw=1, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel(name)
    first = axes[0]
    first.set_ylabel("held-out loss (completed trials)")
    first.legend(fontsize=7)
    lows = [t["value"] for key in ("a", "d") for t in records[key]["trials"]
            if t["state"] == "COMPLETE"]
    if lows:
        lo = min(lows)
        first.set_ylim(lo - 0.02 * abs(lo), lo + 0.25 * abs(lo) + 0.05)
    fig.suptitle(f"{args.model}: tuned on the proxy (blue) vs at the target (red); dashed: best")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    main()
