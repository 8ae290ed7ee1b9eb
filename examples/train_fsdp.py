"""Train the examples' DiT under muP with FSDP2, on CPU (gloo) or GPUs (nccl).

    torchrun --standalone --nproc_per_node 2 examples/train_fsdp.py            # 2 CPU processes
    torchrun --standalone --nproc_per_node 2 examples/train_fsdp.py --meta     # build on the meta device
    torchrun --standalone --nproc_per_node 8 examples/train_fsdp.py --width 1152 --device cuda

The order that keeps muP intact:

1. build the model (real, or on the meta device when it does not fit one host) and the
   base model (the small proxy the hyperparameters were tuned on, on the CPU);
2. ``muprewrite.apply(model, inputs, base=base)``: the rewrite, and the init targets read
   from base;
3. shard or wrap: ``fully_shard`` per block and at the root (or DDP);
4. meta only: ``model.to_empty(device=...)``, the model's own init, then
   ``muprewrite.rescale_init(model)``;
5. ``muprewrite.param_groups(model, lr=...)``, then the optimizer (it steps the sharded
   parameters); ``torch.compile`` may go around the sharded model.

Rank 0 prints the loss; every rank trains on its own slice of each batch.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import muprewrite  # noqa: E402
from examples.dit import DiT  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3, help="tuned at the base width")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--meta", action="store_true", help="build on the meta device")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(args.device, int(os.environ.get("LOCAL_RANK", 0))) \
        if args.device == "cuda" else torch.device("cpu")

    def dit(width: int) -> DiT:
        return DiT(hidden_size=width, num_heads=width // 32, depth=4, class_dropout_prob=0.0)

    torch.manual_seed(0)  # the same init on every rank
    base = dit(args.base_width)
    with torch.device("meta" if args.meta else device):
        model = dit(args.width)
    model = muprewrite.apply(model, base=base)  # inputs: model.example_inputs()

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    if args.meta:
        model.to_empty(device=device)
        model.initialize_weights()  # the model's own init, on the shards
        muprewrite.rescale_init(model)

    opt = torch.optim.AdamW(muprewrite.param_groups(model, lr=args.lr, weight_decay=0.01))
    step_model = torch.compile(model) if args.compile else model
    gen = torch.Generator().manual_seed(1)
    for step in range(args.steps):
        x = torch.randn(8, 4, 16, 16, generator=gen)
        t = torch.randint(0, 1000, (8,), generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        noise = torch.randn(8, 8, 16, 16, generator=gen)
        part = slice(rank * 8 // world, (rank + 1) * 8 // world)  # this rank's slice
        out = step_model(x[part].to(device), t[part].to(device), y[part].to(device))
        loss = (out - noise[part].to(device)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.detach().clone()
        dist.all_reduce(value)
        if rank == 0:
            print(f"step {step}: loss {value.item() / world:.4f}", flush=True)
    # Free cyclic garbage holding gloo work while the group is alive, and let no rank tear
    # down while another still talks to it: torch 2.13 can abort at exit otherwise.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
