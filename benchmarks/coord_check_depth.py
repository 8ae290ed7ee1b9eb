"""Coordinate checks across depth: activation RMS of every module of the examples' GPT and
DiT at depths 2 to 16 and one width, under `completep` (the depth-2 model is the base) and
under `mup` (which refuses a base of another depth: each depth is its own base, so the
residual branches are added as the model writes them), with plots.

    python benchmarks/coord_check_depth.py                # both models; benchmarks/figures/
    python benchmarks/coord_check_depth.py examples.gpt   # one

Prints, per model and rule, the final block's output RMS (the residual stream after the last
block) at the shallowest and the deepest model, the output's slope and the modules flagged
(slope of log2 RMS against log2 depth above 0.25). Writes coord_depth_<model>.png and .json.
Blocks are compared at the same relative depth: block 0 of the 2-block base is paired with
block L/2 - 1 of a model of L blocks, block 1 with block L - 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEPTHS = [2, 4, 8, 16]
WIDTH = 256
LR, STEPS, SEEDS = 1e-3, 20, 2  # Adam, the same at every depth
RULES = ("completep", "mup")


def gpt_at(width: int) -> Callable[[int], nn.Module]:
    def build(depth: int) -> nn.Module:
        from examples.gpt import GPT

        return GPT(n_embd=width, n_head=2, n_layer=depth)
    return build


def dit_at(width: int) -> Callable[[int], nn.Module]:
    def build(depth: int) -> nn.Module:
        from examples.dit import DiT

        return DiT(hidden_size=width, num_heads=max(1, width // 32), depth=depth)
    return build


# name -> (build at a width, the final block's module name in the 2-block base)
MODELS: dict[str, tuple[Callable[[int], Callable[[int], nn.Module]], str]] = {
    "examples.gpt": (gpt_at, "transformer.h.1"),
    "examples.dit": (dit_at, "blocks.1"),
}


def inputs(model: nn.Module) -> Any:
    return model.example_inputs()  # type: ignore[operator]


def main(names: list[str]) -> None:
    from muprewrite.verify import coord_check_depth
    from muprewrite.verify.plots import plot_coord_checks

    out = HERE / "figures"
    out.mkdir(exist_ok=True)
    print(f"| model | rule | final block RMS, depth {DEPTHS[0]} / {DEPTHS[-1]} | "
          "final block slope | output slope | flagged | time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        at, last = MODELS[name]
        checks = []
        for rule in RULES:
            start = time.perf_counter()
            check = coord_check_depth(at(WIDTH), DEPTHS, inputs=inputs, rule=rule, lr=LR,
                                      steps=STEPS, seeds=SEEDS)
            checks.append(check)
            flagged = check.flagged()
            shown = ", ".join(f"`{m}`" for m, _ in flagged[:3]) + (" ..." if len(flagged) > 3 else "")
            final = check.at(last)
            print(f"| {name} | {rule} | {final[0]:.3f} / {final[-1]:.3f} | "
                  f"{check.slope(last):+.2f} | {check.slope(''):+.2f} | "
                  f"{len(flagged)} / {len(check.rms)}{': ' + shown if flagged else ''} | "
                  f"{time.perf_counter() - start:.0f} s |", flush=True)
        stem = f"coord_depth_{name.split('.')[-1].lower()}"
        plot_coord_checks(checks, out / f"{stem}.png",
                          title=f"{name} at width {WIDTH}, depths {DEPTHS[0]}-{DEPTHS[-1]}: "
                                f"{STEPS} Adam steps, lr {LR:g}, mean of {SEEDS} seeds")
        (out / f"{stem}.json").write_text(json.dumps({c.rule: c.to_dict() for c in checks},
                                                     indent=1))


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODELS))
