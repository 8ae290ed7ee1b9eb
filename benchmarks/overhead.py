"""Training-step overhead of the rewritten model over the original, compiled or (--eager) not.

    python benchmarks/overhead.py                  # CPU, both models, rules mup and mup-absorbed
    python benchmarks/overhead.py --device cuda    # on a GPU
    python benchmarks/overhead.py --model dit --steps 100
    python benchmarks/overhead.py --eager          # uncompiled: the runtime edit as it runs in eager

Heads and d_head both grow from the base (d_head 32 -> 64), so the attention factor and the
readout multiplier are both in the measured step. One step = forward, backward, AdamW step (the muP model on ``param_groups``, the original on
its parameters), all at the same width. The variants run interleaved in a shuffled order,
round after round, so drift in machine speed hits them alike; the figure is the median over
rounds of each variant's time divided by the original's time in the same round. A second
compiled copy of the original ("control") measures the noise floor: its ratio would be 1 on
a quiet machine. The op count of each variant's captured forward graph (dynamo) is printed
too: it does not depend on the machine. Targets: compiled (issue 3) <= 1.02 for ``mup``,
<= 1.005 for ``mup-absorbed``; eager (issue 20) <= 1.02 for ``mup``.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import muprewrite  # noqa: E402

RULES = ("mup", "mup-absorbed")
COMPARED = ("control", *RULES)


def _gpt(width: int, d_head: int, device: str) -> tuple[nn.Module, tuple[Any, ...]]:
    from examples.gpt import GPT

    model = GPT(n_embd=width, n_head=width // d_head, n_layer=4, block_size=128, vocab_size=4096)
    return model.to(device), (torch.randint(0, 4096, (8, 128), device=device),)


def _dit(width: int, d_head: int, device: str) -> tuple[nn.Module, tuple[Any, ...]]:
    from examples.dit import DiT

    model = DiT(input_size=16, hidden_size=width, num_heads=width // d_head, depth=4).to(device)
    return model, model.example_inputs(batch_size=8)


MODELS: dict[str, Callable[[int, int, str], tuple[nn.Module, tuple[Any, ...]]]] = {
    "gpt": _gpt, "dit": _dit}


def _step_fn(model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[Any, ...],
             sync: Callable[[], None]) -> Callable[[], float]:
    def step() -> float:
        start = time.perf_counter()
        out = model(*batch)
        out.float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start
    return step


def measure(name: str, width: int, base_width: int, device: str, steps: int,
            warmup: int, eager: bool = False) -> dict[str, float]:
    torch.manual_seed(0)
    original, batch = MODELS[name](width, 64, device)
    base, _ = MODELS[name](base_width, 32, device)  # d_head 32 -> 64: attention is rescaled
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    variants: dict[str, Callable[[], float]] = {}
    compiled: Callable[[nn.Module], Any] = (lambda m: m) if eager else torch.compile
    ops: dict[str, int] = {}
    for label in ("original", "control"):
        plain = copy.deepcopy(original)
        ops[label] = _graph_ops(plain, batch)
        variants[label] = _step_fn(compiled(plain), torch.optim.AdamW(
            plain.parameters(), lr=1e-4, weight_decay=0.1), batch, sync)
    for rule in RULES:
        model = muprewrite.apply(copy.deepcopy(original), batch, base=base, rule=rule)
        ops[rule] = _graph_ops(model, batch)
        groups = muprewrite.param_groups(model, lr=1e-4, weight_decay=0.1)
        variants[rule] = _step_fn(compiled(model), torch.optim.AdamW(groups), batch, sync)
    for label, step in variants.items():  # compile, then warm up
        start = time.perf_counter()
        for _ in range(warmup):
            step()
        print(f"  {name}/{label}: compile + {warmup} warm-up steps {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    ratios: dict[str, list[float]] = {label: [] for label in COMPARED}
    times: dict[str, list[float]] = {label: [] for label in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(steps):
        rng.shuffle(order)
        round_times = {label: variants[label]() for label in order}
        for label, t in round_times.items():
            times[label].append(t)
        for label in COMPARED:
            ratios[label].append(round_times[label] / round_times["original"])
    result: dict[str, float] = {"original_ms": statistics.median(times["original"]) * 1e3,
                                "original_ops": ops["original"]}
    for label in COMPARED:
        result[label] = statistics.median(ratios[label])
        q = statistics.quantiles(ratios[label], n=4)
        result[f"{label}_iqr"] = q[2] - q[0]
        result[f"{label}_ms"] = statistics.median(times[label]) * 1e3
        result[f"{label}_ops"] = ops[label]
    return result


def _graph_ops(model: nn.Module, batch: tuple[Any, ...]) -> int:
    """Ops in the forward graph(s) dynamo captures (machine independent)."""
    import torch._dynamo as dynamo

    dynamo.reset()
    explained = dynamo.explain(model)(*batch)
    dynamo.reset()
    return sum(1 for g in explained.graphs for n in g.graph.nodes
               if n.op in ("call_function", "call_method", "call_module"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--base-width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--eager", action="store_true",
                        help="time the models uncompiled (the runtime edit runs as a "
                             "TorchFunctionMode in every attention host's forward)")
    args = parser.parse_args()
    names = list(MODELS) if args.model == "all" else [args.model]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {device_name}, width {args.width} "
          f"(base {args.base_width}), {args.steps} rounds, "
          f"{'eager' if args.eager else 'torch.compile'}")
    print("| model | variant | step (median) | time / original (median, IQR) | forward graph ops |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        r = measure(name, args.width, args.base_width, args.device, args.steps, args.warmup,
                    args.eager)
        print(f"| {name} | original | {r['original_ms']:.1f} ms | 1 | {r['original_ops']:.0f} |")
        for label in COMPARED:
            print(f"| {name} | {label} | {r[label + '_ms']:.1f} ms | {r[label]:.4f} "
                  f"(±{r[label + '_iqr'] / 2:.4f}) | {r[label + '_ops']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
