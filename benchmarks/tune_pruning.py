"""What pruning costs and saves: the same trials on the proxy, run in full and pruned.

A random sampler with a fixed seed draws the same ``--trials`` settings for every pruner, and
every trial sees the same init and batches, so the runs differ only in which trials the
pruner stops early. For each pruner it reports the
best held-out loss found, its gap to the unpruned search's best, and the proxy FLOPs spent
as a share of the unpruned search's. Studies are journal files in the output folder (a
rerun resumes); the summary goes to ``{out}.json``.

    python benchmarks/tune_pruning.py gpt --workers 2
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from muprewrite.training.tuning import tune  # noqa: E402

LR = (1e-4, 3e-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["gpt", "dit"])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pruners", default="none,hyperband,halving")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tune_pruning")
    args = parser.parse_args()
    out = Path(f"{args.out}_{args.model}")
    folder = out.parent / (out.name + "_studies")
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.model == "gpt":
        import tune_chargpt as mod
    else:
        import tune_dit as mod
    inputs = mod.inputs() if args.model == "dit" else None
    rows = {}
    for pruner in args.pruners.split(","):
        result = tune(functools.partial(mod.build, args.width), mod.train, steps=args.steps,
                      lr=LR, inputs=inputs, n_trials=args.trials, sampler="random",
                      pruner=pruner, seed=args.seed, workers=args.workers,
                      storage=str(folder / f"{args.model}-{pruner}.journal"),
                      study_name=f"{args.model}-pruning-{pruner}", progress=False,
                      trial_seeds="same")
        print(f"[{pruner}] {result.summary()}", file=sys.stderr)
        rows[pruner] = {"best_value": result.best_value,
                        "proxy_flops": result.ledger.proxy_flops,
                        "proxy_steps": result.ledger.proxy_steps}
    full = rows["none"]
    for row in rows.values():
        row["gap_percent"] = 100 * (row["best_value"] / full["best_value"] - 1)
        row["flops_percent"] = 100 * row["proxy_flops"] / full["proxy_flops"]
    summary = {"model": args.model, "width": args.width, "steps": args.steps,
               "trials": args.trials, "sampler": "random", "trial_seeds": "same",
               "seed": args.seed, "pruners": rows}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
