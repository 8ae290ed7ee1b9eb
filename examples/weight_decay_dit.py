"""Weight-decay transfer on real data: the digits DiT of examples/transfer_dit.py, trained with
AdamW long enough for the weights to reach the steady state that weight decay sets, at
widths 32 to 256, sweeping the weight decay tuned at base width under each preset rule.

    python examples/weight_decay_dit.py                   # every preset, ~1 hour on 2 cores
    python examples/weight_decay_dit.py --rules mup       # one preset (run each in its own
                                                          # process, then --replot)
    python examples/weight_decay_dit.py --replot          # redraw docs/ from the JSON

Each preset maps the base weight decay to every group at every width:
  mup              lr*wd constant (hidden wd x m; Tensor Programs V, the mup package)
  mup-wd-sqrt      hidden wd x sqrt(m), vector-like parameters wd = 0 (Fan et al. 2025)
  mup-wd-constant  wd as tuned at base, so the hidden lr*wd falls as 1/m (the baseline)
(mup-wd-timescale has mup's table across width, and mup-wd-independent trains exactly as mup
with wd = lr*wd_mup; tests/test_weight_decay_rules.py shows the second.)

The learning rate is fixed at its base-width optimum (--lr). AdamW's weights settle after a
few timescales 1/(lr*wd) steps: with --steps 300 and lr 2^-6, wd >= 1 gives >= 4.7 of them
at base (the hidden lr falls with width, and so, under mup-wd-constant and mup-wd-sqrt, does
lr*wd). For every run the script records each hidden matrix's top singular value, the
paper's diagnostic: a preset that keeps sublayer gains invariant has them match across
widths. The figures show the loss against log2 wd per preset, and the hidden matrices' top
singular value against width at every wd.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import muprewrite  # noqa: E402
from examples.transfer_dit import INPUTS, Trainer, build  # noqa: E402
from muprewrite.files import write_file  # noqa: E402
from muprewrite.verify import Sweep, lr_sweep  # noqa: E402
from muprewrite.verify.coordcheck import slope  # noqa: E402
from muprewrite.verify.plots import sweeps_image  # noqa: E402

PRESETS = ("mup", "mup-wd-sqrt", "mup-wd-constant")


class DecayTrainer(Trainer):
    """``trainer(model, wd)``: AdamW at a fixed lr and the swept weight decay; records the
    geometric mean over hidden matrices of their top singular value after training."""

    def __init__(self, steps: int, lr: float) -> None:
        super().__init__(steps)
        self.lr = lr
        self.sigma: dict[tuple[int, float], list[float]] = {}

    def __call__(self, model: torch.nn.Module, wd: float) -> float:  # type: ignore[override]
        loss = self.fit(model, muprewrite.optimizer(model, lr=self.lr, weight_decay=wd))
        plan = muprewrite.plan_of(model)
        assert plan is not None
        logs = [math.log(float(torch.linalg.matrix_norm(p.detach().double(), ord=2)))
                for n, p in model.named_parameters()
                if p.ndim == 2 and plan.report[n].role == "hidden"]
        width = model.x_embedder.proj.out_channels  # type: ignore[union-attr]
        self.sigma.setdefault((width, wd), []).append(math.exp(sum(logs) / len(logs)))
        return loss


def _table(sweep: Sweep, sigma: list[list[float]]) -> dict[str, Any]:
    """Best wd per width, drift and spread, and the slope of the hidden matrices' top
    singular value over width at the base-optimal wd and at every wd."""
    j = sweep.best_index(0)
    at = [row[j] for row in sigma]
    return {"rule": sweep.rule, "best_wd": "/".join(f"2^{math.log2(sweep.best_lr(i)):g}"
                                                    for i in range(len(sweep.sizes))),
            "drift": sweep.drift(), "spread": sweep.spread(),
            "sigma_slope": slope(sweep.sizes, at),
            "sigma_ratio": at[-1] / at[0],
            "sigma_slope_by_wd": {str(wd): slope(sweep.sizes, [row[k] for row in sigma])
                                  for k, wd in enumerate(sweep.lrs)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="32,64,128,256")
    parser.add_argument("--log2-wds", default="-2:4", help="inclusive range of log2 wd")
    parser.add_argument("--lr", type=float, default=2.0 ** -6, help="AdamW lr at base width")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--rules", help=f"comma-separated subset of {', '.join(PRESETS)}")
    parser.add_argument("--replot", action="store_true", help="redraw from the JSON files")
    args = parser.parse_args()
    out = Path(args.out)
    rules = PRESETS if not args.rules else tuple(args.rules.split(","))
    unknown = set(rules) - set(PRESETS)
    if unknown:
        parser.error(f"--rules: {', '.join(sorted(unknown))} not in {', '.join(PRESETS)}")
    if not args.replot:
        lo, hi = (int(v) for v in args.log2_wds.split(":"))
        wds = [2.0 ** k for k in range(lo, hi + 1)]
        widths = [int(w) for w in args.widths.split(",")]
        out.mkdir(parents=True, exist_ok=True)
        for rule in rules:
            start = time.perf_counter()
            trainer = DecayTrainer(args.steps, args.lr)

            def progress(done: int, total: int, rule: str = rule) -> None:
                print(f"\r{rule}: {done}/{total} runs", end="", file=sys.stderr, flush=True)

            sweep = lr_sweep(build, widths, wds, train=trainer, inputs=INPUTS, rule=rule,
                             seeds=args.seeds, metric="held-out diffusion loss",
                             progress=progress, hyper="weight decay")
            sigma = [[sum(trainer.sigma[(w, wd)]) / len(trainer.sigma[(w, wd)]) for wd in wds]
                     for w in widths]
            data = {"sweep": sweep.to_dict(), "sigma_hidden": sigma, "lr": args.lr,
                    "steps": args.steps, **_table(sweep, sigma)}
            write_file(out / f"weight_decay_dit_{rule}.json", json.dumps(data, indent=1).encode(),
                       force=True)
            print(f"\n{sweep.summary()}  [{time.perf_counter() - start:.0f} s]", flush=True)
        if set(rules) != set(PRESETS):
            print("the figure needs every preset: run the others, then --replot")
            return
    _report(out)


STEADY = ("1.0", "4.0")  # base wd with >= 4.7 timescales 1/(lr*wd) in 300 steps at lr 2^-6


def _report(out: Path) -> None:
    loaded = [json.loads((out / f"weight_decay_dit_{r}.json").read_text()) for r in PRESETS]
    sweeps = [Sweep.load_json_dict(d["sweep"]) for d in loaded]
    print("| preset | best wd at width " + " / ".join(map(str, sweeps[0].sizes)) +
          " | moves (spread) | best loss, widths " + " / ".join(map(str, sweeps[0].sizes)) +
          " | hidden sigma_max slope at wd " + ", ".join(STEADY) + " |")
    print("| --- | --- | --- | --- | --- |")
    for d, sweep in zip(loaded, sweeps):
        best = " / ".join(f"{min(row):.4f}" for row in sweep.loss)
        steady = ", ".join(f"{d['sigma_slope_by_wd'][wd]:+.2f}" for wd in STEADY
                           if wd in d["sigma_slope_by_wd"])
        print(f"| {d['rule']} | {d['best_wd']} | {d['drift']} ({d['spread']}) | {best} | "
              f"{steady} |")
    title = (f"DiT on sklearn digits, AdamW lr {loaded[0]['lr']:.3g} for {loaded[0]['steps']} "
             "steps: held-out diffusion loss against the base weight decay")
    write_file(out / "weight_decay_dit.png", sweeps_image(sweeps, title), force=True)
    write_file(out / "weight_decay_dit_sigma.png", _sigma_image(loaded, sweeps), force=True)
    print(f"wrote {out / 'weight_decay_dit.png'} and {out / 'weight_decay_dit_sigma.png'}")


def _sigma_image(loaded: list[dict], sweeps: list[Sweep]) -> bytes:
    """One panel per preset: the hidden matrices' top singular value (geometric mean)
    against width, one line per base weight decay; flat lines are matched gains."""
    from muprewrite.files.figures import figure_bytes, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(loaded), figsize=(4.2 * len(loaded), 3.4), sharey=True,
                             squeeze=False)
    cmap = plt.get_cmap("plasma")
    for ax, d, sweep in zip(axes[0], loaded, sweeps):
        for k, wd in enumerate(sweep.lrs):
            col = [row[k] for row in d["sigma_hidden"]]
            if min(col) <= 0:
                continue  # decayed to zero: no point on a log axis
            ax.plot(sweep.sizes, col, marker="o", ms=3, color=cmap(k / len(sweep.lrs)),
                    label=f"wd 2^{math.log2(wd):g}: {d['sigma_slope_by_wd'][str(wd)]:+.2f}")
        ax.set(xscale="log", yscale="log", xlabel="width", title=d["rule"])
        ax.set_xticks(sweep.sizes, [str(s) for s in sweep.sizes])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    axes[0][0].set_ylabel("top singular value, hidden (geo. mean)")
    fig.suptitle("the paper's diagnostic: flat lines = sublayer gains matched across widths "
                 "(legend: slope)", fontsize=10)
    fig.tight_layout()
    return figure_bytes(fig, plt, "png")


if __name__ == "__main__":
    main()
