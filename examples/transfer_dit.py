"""Learning-rate transfer on real data: a small DiT trained as a diffusion model on the 8x8
handwritten digits that ship with scikit-learn, at widths 32 to 256, under the standard
parametrization (sp) and under muP; or, with --depths, at depths 2 to 16 under CompleteP and
under mup (standard residuals).

    python examples/transfer_dit.py                # ~16 minutes on a 2-core CPU; docs/
    python examples/transfer_dit.py --seeds 1      # ~8 minutes
    python examples/transfer_dit.py --replot       # redraw docs/transfer_dit.png from the JSON
    python examples/transfer_dit.py --depths 2,4,8,16 --steps 120 --log2-lrs=-10:-4
                                                   # depth at width 64, ~23 minutes: docs/
    python examples/transfer_dit.py --depths 2,4,8,16 --steps 120 --replot
    python examples/transfer_dit.py --optimizer muon   # Muon: mup-muon beside sp-muon; docs/

For each rule and width, the model (examples/dit.py, rewritten by muprewrite.apply with the
width-32 model as base) is trained with AdamW at every learning rate of a factor-2 grid, and
scored by its diffusion loss on held-out digits. The figure shows loss against log2 LR, one
line per width; the printout says how many grid steps the best LR moves between widths.
muP's promise is that it stays put.

Across depth (--depths, at --width): under completep the depth-2 model is the base, so
every residual branch of a depth-L model is scaled by 2/L; mup refuses a base of another
depth, so under mup each depth is its own base (standard residuals, the LR reaches AdamW as
is): the sweep shows where the optimum goes when depth grows without a depth rule.

With --optimizer muon, the hidden matrices are stepped by torch.optim.Muon at the swept LR
and everything else by AdamW at --adam-ratio times it, under mup-muon and, beside it, under
sp-muon (Muon and AdamW at the same LRs at every width, no muP).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import muprewrite  # noqa: E402
from examples.dit import DiT  # noqa: E402
from muprewrite.verify import Sweep, lr_sweep, lr_sweep_depth  # noqa: E402
from muprewrite.verify.plots import plot_sweeps  # noqa: E402

T = 200  # diffusion steps (linear beta schedule)


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, held-out images, held-out labels), pixels in [-1, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # (N,1,8,8)
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return images[:1400], labels[:1400], images[1400:], labels[1400:]


def build(width: int, depth: int = 2) -> DiT:
    return DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=width, depth=depth,
               num_heads=width // 16, num_classes=10, learn_sigma=False)


class AtWidth:
    """``AtWidth(64)(depth)``: the digits DiT at a fixed width (a depth sweep's ``build``)."""

    def __init__(self, width: int) -> None:
        self.width = width

    def __call__(self, depth: int) -> DiT:
        return build(self.width, depth)


class Trainer:
    """``trainer(model, lr)``: AdamW on muP param groups, returns the held-out loss."""

    def __init__(self, steps: int, batch: int = 64, adam_ratio: float | None = None) -> None:
        self.adam_ratio = adam_ratio  # Muon: AdamW's lr over Muon's (None: AdamW only)
        self.x, self.y, self.val_x, self.val_y = digits()
        self.steps, self.batch = steps, batch
        betas = torch.linspace(1e-4, 0.02, T)
        self.abar = torch.cumprod(1 - betas, 0)
        gen = torch.Generator().manual_seed(1)  # a fixed held-out draw of (t, noise)
        self.val_t = torch.randint(0, T, (len(self.val_y),), generator=gen)
        self.val_noise = torch.randn(self.val_x.shape, generator=gen)

    def loss(self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(model(xt, t, y), noise)

    def __call__(self, model: torch.nn.Module, lr: float) -> float:
        return self.fit(model, self.make_optimizer(model, lr))

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        if self.adam_ratio is None:
            return torch.optim.AdamW(muprewrite.param_groups(model, lr=lr, weight_decay=0.0))
        # Muon on the hidden matrices, AdamW on the rest
        return muprewrite.optimizer(model, lr=lr, adam_lr=lr * self.adam_ratio)

    def fit(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> float:
        """Train ``steps`` steps (20 warm-up, then constant); the held-out loss."""
        sched = torch.optim.lr_scheduler.LambdaLR(  # short warm-up, then constant
            opt, lambda step: min(1.0, (step + 1) / 20))
        model.train()
        for _ in range(self.steps):
            idx = torch.randint(0, len(self.y), (self.batch,))
            t = torch.randint(0, T, (self.batch,))
            loss = self.loss(model, self.x[idx], self.y[idx], t, torch.randn(self.batch, 1, 8, 8))
            if not torch.isfinite(loss):
                return math.inf
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            return self.loss(model, self.val_x, self.val_y, self.val_t, self.val_noise).item()


WIDTH_RULES, DEPTH_RULES, MUON_RULES = ("sp", "mup"), ("completep", "mup"), ("sp-muon", "mup-muon")
INPUTS = (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="32,64,128,256")
    parser.add_argument("--depths", help="sweep depth at --width instead, e.g. 2,4,8,16")
    parser.add_argument("--width", type=int, default=64, help="the width of a depth sweep")
    parser.add_argument("--log2-lrs", default="-12:-4", help="inclusive range of log2 LRs")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw",
                        help="muon: Muon on hidden matrices (rules mup-muon, sp-muon)")
    parser.add_argument("--adam-ratio", type=float, default=0.25,
                        help="with --optimizer muon: AdamW's lr over Muon's")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="docs", help="folder for the PNG and JSON")
    parser.add_argument("--rules", help="run only these rules (comma-separated), e.g. to run "
                        "each in its own process; then --replot draws the figure")
    parser.add_argument("--replot", action="store_true",
                        help="redraw the figure from the JSON files in --out, no training")
    args = parser.parse_args()
    out = Path(args.out)
    muon = args.optimizer == "muon"
    if muon and args.depths:
        parser.error("--optimizer muon sweeps width; leave --depths out")
    stem = "transfer_dit_depth" if args.depths else "transfer_dit_muon" if muon else "transfer_dit"
    every = DEPTH_RULES if args.depths else MUON_RULES if muon else WIDTH_RULES
    rules = every
    if args.rules and not args.replot:
        unknown = set(args.rules.split(",")) - set(rules)
        if unknown:
            parser.error(f"--rules: {', '.join(sorted(unknown))} not in {', '.join(rules)}")
        rules = tuple(r for r in rules if r in args.rules.split(","))
    if args.replot:
        sweeps = [Sweep.load_json(out / f"{stem}_{rule}.json") for rule in rules]
        for sweep in sweeps:
            print(sweep.summary())
        print(f"wrote {_plot(sweeps, out / f'{stem}.png', args.width, args.steps, muon)}")
        return
    lo, hi = (int(v) for v in args.log2_lrs.split(":"))
    lrs = [2.0 ** k for k in range(lo, hi + 1)]
    trainer = Trainer(args.steps, adam_ratio=args.adam_ratio if muon else None)
    out.mkdir(parents=True, exist_ok=True)
    sweeps: list[Sweep] = []
    begin = time.perf_counter()
    for rule in rules:
        start = time.perf_counter()

        def progress(done: int, total: int, rule: str = rule) -> None:
            print(f"\r{rule}: {done}/{total} runs", end="", file=sys.stderr, flush=True)

        if args.depths:
            depths = [int(d) for d in args.depths.split(",")]
            sweep = lr_sweep_depth(AtWidth(args.width), depths, lrs, train=trainer,
                                   inputs=INPUTS, rule=rule, seeds=args.seeds,
                                   metric="held-out diffusion loss", progress=progress)
        else:
            widths = [int(w) for w in args.widths.split(",")]
            sweep = lr_sweep(build, widths, lrs, train=trainer, inputs=INPUTS, rule=rule,
                             seeds=args.seeds, metric="held-out diffusion loss",
                             progress=progress)
        print(f"\n{sweep.summary()}  [{time.perf_counter() - start:.0f} s]", flush=True)
        sweep.save_json(out / f"{stem}_{rule}.json")
        sweeps.append(sweep)
    if rules != every:
        print(f"total {time.perf_counter() - begin:.0f} s; the figure needs every rule: run "
              "the others, then --replot")
        return
    print(f"total {time.perf_counter() - begin:.0f} s; wrote "
          f"{_plot(sweeps, out / f'{stem}.png', args.width, args.steps, muon)}")


def _plot(sweeps: list[Sweep], path: Path, width: int, steps: int, muon: bool = False) -> Path:
    """The figure; a depth sweep's title names its width and steps (--replot: pass the ones
    the sweep ran with)."""
    first = sweeps[0]
    if first.axis == "depth":
        title = (f"DiT on sklearn digits, depths {first.sizes[0]}-{first.sizes[-1]} at width "
                 f"{width}, {steps} AdamW steps: held-out diffusion loss "
                 f"(mean of {first.seeds} seed(s))")
    else:
        title = (f"DiT on sklearn digits, widths {first.sizes[0]}-{first.sizes[-1]}"
                 f"{', Muon (x-axis: Muon LR)' if muon else ''}: held-out diffusion loss "
                 f"(mean of {first.seeds} seed(s))")
    return plot_sweeps(sweeps, path, title=title)


if __name__ == "__main__":
    main()
