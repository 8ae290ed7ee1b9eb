"""Coordinate checks for issue 3: activation RMS of every module after 3 Adam steps at widths
64..1024, under `mup` and `sp`, with plots.

    python benchmarks/coord_check.py                 # all models, figures in benchmarks/figures/
    python benchmarks/coord_check.py examples.gpt    # one
    python benchmarks/coord_check.py --muon examples.gpt examples.dit
                                                     # Muon: mup-muon beside sp-muon

Prints, per model and rule, the module whose RMS varies most across widths (max/min) and
the growth of the model output from width 64 to 1024.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

WIDTHS = [64, 128, 256, 512, 1024]
LR = 3e-3  # Adam, the same at every width; 3 seeds per width
MUON_LR = 0.02  # --muon: Muon's lr on the hidden matrices (Adam keeps LR on the rest)


def _example_gpt(width: int) -> nn.Module:
    from examples.gpt import GPT

    return GPT(n_embd=width, n_head=2)  # d_head grows: exercises the attention factor


def _example_dit(width: int) -> nn.Module:
    from examples.dit import DiT

    return DiT(hidden_size=width, num_heads=width // 32)


def _diffusers_dit(width: int) -> nn.Module:
    from zoo_library import HEAD_DIM, _dit

    return _dit(width // (2 * HEAD_DIM))


def _diffusers_inputs(model: nn.Module) -> Any:
    from zoo_library import _dit_inputs

    return _dit_inputs(model)


MODELS: dict[str, tuple[Callable[[int], nn.Module], Callable[[nn.Module], Any]]] = {
    "examples.gpt": (_example_gpt, lambda m: m.example_inputs()),
    "examples.dit": (_example_dit, lambda m: m.example_inputs()),
    "diffusers.DiTTransformer2DModel": (_diffusers_dit, _diffusers_inputs),
}


def main(names: list[str], muon: bool = False) -> None:
    from muprewrite.verify import coord_check
    from muprewrite.verify.plots import plot_coord_checks

    out = HERE / "figures"
    out.mkdir(exist_ok=True)
    print("| model | rule | most varying module | max/min RMS | output RMS 1024 / 64 | "
          "output slope | flagged | time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        build, inputs = MODELS[name]
        checks = []
        for rule in ("mup-muon", "sp-muon") if muon else ("mup", "sp"):
            start = time.perf_counter()
            check = coord_check(build, WIDTHS, inputs=inputs, rule=rule,
                                lr=MUON_LR if muon else LR, adam_lr=LR)
            checks.append(check)
            module, spread = check.worst(1)[0]
            print(f"| {name} | {rule} | {module or 'output'} | {spread:.2f} | "
                  f"{check.growth(''):.2f} | {check.slope(''):+.2f} | "
                  f"{len(check.flagged())} / {len(check.rms)} | "
                  f"{time.perf_counter() - start:.0f} s |", flush=True)
        stem = f"coord_{name.split('.')[-1].lower()}" + ("_muon" if muon else "")
        steps = f"3 Muon (lr {MUON_LR:g}) + Adam" if muon else "3 Adam"
        plot_coord_checks(checks, out / f"{stem}.png",
                          title=f"{name}: {steps} steps, lr {LR:g}, mean of 3 seeds")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--muon"]
    main(args or list(MODELS), muon="--muon" in sys.argv[1:])
