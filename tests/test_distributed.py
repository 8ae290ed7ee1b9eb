"""Beyond one process: FSDP2 and DDP (gloo, 2 CPU processes), meta-device construction,
checkpoints and EMA keep muP intact.

The distributed runs split one fixed batch between the ranks; with equal halves, the mean
of the ranks' losses is the full-batch loss and the averaged gradient is the full-batch
gradient, so the losses must match a single-process run of the same model.
"""

from __future__ import annotations

import copy
import gc
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import muprewrite

STEPS = 5
# float32, different reduction orders (reduce-scatter vs one backward): measured max relative
# difference 1.2e-7 (torch 2.13, CPU); 1e-5 leaves room for other versions and thread counts
RTOL = 1e-5


def _dit(width: int, device: str = "cpu", depth: int = 2) -> torch.nn.Module:
    from examples.dit import DiT

    with torch.device(device):
        return DiT(hidden_size=width, num_heads=2, depth=depth, class_dropout_prob=0.0)


def _batch() -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(8, 4, 16, 16, generator=gen)
    t = torch.randint(0, 1000, (8,), generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    return (x, t, y), torch.randn(8, 8, 16, 16, generator=gen)


def _model(rule: str = "mup") -> torch.nn.Module:
    """Under mup, 2x width; under completep also 2x depth (the branch multiplier hooks)."""
    torch.manual_seed(0)
    depth = 4 if rule == "completep" else 2
    model, base = _dit(64, depth=depth), _dit(32)
    inputs, _ = _batch()
    return muprewrite.apply(model, inputs, base=base, rule=rule)


def _train(model: torch.nn.Module, rank: int = 0, world: int = 1,
           steps: int = STEPS) -> list[float]:
    plan = muprewrite.plan_of(model)
    if plan is not None and plan.optimizer == "muon":  # Muon on hidden matrices, AdamW on the rest
        opt = muprewrite.optimizer(model, lr=0.02, adam_lr=1e-3, weight_decay=0.1)
    else:
        opt = torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-3, weight_decay=0.1))
    (x, t, y), target = _batch()
    part = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    losses = []
    for _ in range(steps):
        loss = (model(x[part], t[part], y[part]) - target[part]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.detach().clone()
        if world > 1:
            dist.all_reduce(value)
            value /= world
        losses.append(float(value))
    return losses


def _worker(rank: int, world: int, init_file: str, mode: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.set_num_threads(1)
        mode, _, rule = mode.partition("@")
        model = _model(rule or "mup")
        if mode.startswith("fsdp"):
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
        else:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model)
        if mode.endswith("compile"):
            model = torch.compile(model)
        losses = _train(model, rank, world)
        if rank == 0:
            Path(out).write_text(json.dumps(losses))
        gc.collect()  # as in examples/train_fsdp.py: no gloo work left to cycles at exit
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(mode: str) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "losses.json")
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), mode, out), nprocs=2)
        return json.loads(Path(out).read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def single_process_losses() -> list[float]:
    return _train(_model())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp2", "ddp"])
def test_distributed_losses_match_single_process(mode: str,
                                                 single_process_losses: list[float]) -> None:
    losses = _spawn(mode)
    assert losses == pytest.approx(single_process_losses, rel=RTOL)
    assert single_process_losses[-1] < single_process_losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp-compile", "fsdp2-compile"])
def test_compiled_distributed_losses_match(mode: str, single_process_losses: list[float]) -> None:
    losses = _spawn(mode)
    assert losses == pytest.approx(single_process_losses, rel=RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp2", "ddp-compile"])
def test_depth_rule_distributed_losses_match(mode: str) -> None:
    """CompleteP's branch multipliers (forward hooks) under FSDP2, and under DDP compiled."""
    single = _train(_model("completep"))
    losses = _spawn(f"{mode}@completep")
    assert losses == pytest.approx(single, rel=RTOL)
    assert single[-1] < single[0]


@pytest.mark.slow
def test_muon_under_ddp_matches_single_process() -> None:
    """mup-muon's optimizer on a DDP model: each rank holds whole matrices, so Muon
    orthogonalises the same averaged gradient as one process does (bf16 inside Muon: the
    all-reduce's summation order can round differently, hence RTOL)."""
    single = _train(_model("mup-muon"))
    losses = _spawn("ddp@mup-muon")
    assert losses == pytest.approx(single, rel=RTOL)
    assert single[-1] < single[0]


def test_param_groups_see_through_wrappers() -> None:
    from torch.nn.parallel import DataParallel

    model = _model()
    plain = muprewrite.param_groups(model, lr=1e-3)
    for wrapped in (DataParallel(model), torch.compile(model)):
        groups = muprewrite.param_groups(wrapped, lr=1e-3)
        assert [g["param_names"] for g in groups] == [g["param_names"] for g in plain]
        assert muprewrite.plan_of(wrapped) is muprewrite.plan_of(model)


def _role_rms(model: torch.nn.Module) -> dict[str, float]:
    plan = muprewrite.plan_of(model)
    assert plan is not None
    sums: dict[str, list[float]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad and p.any():
            sums.setdefault(plan.report[name].role, []).append(float(p.square().mean().sqrt()))
    return {role: sum(v) / len(v) for role, v in sums.items()}


def test_meta_construction_then_materialise() -> None:
    """meta -> apply -> to_empty -> the model's own init -> rescale_init -> train."""
    torch.manual_seed(0)
    eager = _model()
    torch.manual_seed(0)
    model = _dit(64, "meta")
    inputs, _ = _batch()
    model = muprewrite.apply(model, tuple(t.to("meta") for t in inputs), base=_dit(32))
    with pytest.warns(UserWarning, match="rescale_init"):
        muprewrite.param_groups(model, lr=1e-3)
    with pytest.raises(muprewrite.MuprewriteError, match="meta device"):
        muprewrite.rescale_init(model)
    model.to_empty(device="cpu")
    model.initialize_weights()  # the model's own init path
    applied = muprewrite.rescale_init(model)
    assert applied and muprewrite.rescale_init(model) == pytest.approx(
        {n: 1.0 for n in applied})  # idempotent
    targets = model._muprewrite_init_rms
    for name, p in model.named_parameters():
        if name in targets and p.any():
            assert float(p.square().mean().sqrt()) == pytest.approx(targets[name], rel=1e-5)
    for role, rms in _role_rms(eager).items():
        assert _role_rms(model)[role] == pytest.approx(rms, rel=0.1), role
    losses = _train(model, steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_checkpoint_resume_and_ema() -> None:
    model = _model()
    opt = torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-3, weight_decay=0.1))
    (x, t, y), target = _batch()

    def step(m: torch.nn.Module, o: torch.optim.Optimizer) -> float:
        loss = (m(x, t, y) - target).square().mean()
        o.zero_grad()
        loss.backward()
        o.step()
        return loss.item()

    for _ in range(3):
        step(model, opt)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    ema = copy.deepcopy(model)
    expected = [step(model, opt) for _ in range(3)]

    buffer.seek(0)
    state = torch.load(buffer)
    torch.manual_seed(123)  # a different init: the checkpoint must overwrite all of it
    fresh = muprewrite.apply(_dit(64), (x, t, y), base=_dit(32))
    fresh.load_state_dict(state["model"])
    fresh_opt = torch.optim.AdamW(muprewrite.param_groups(fresh, lr=1e-3, weight_decay=0.1))
    fresh_opt.load_state_dict(state["opt"])
    assert [step(fresh, fresh_opt) for _ in range(3)] == expected

    with torch.no_grad():  # an EMA update, then the EMA copy must still run the muP forward
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 0.5)
    check = muprewrite.apply(_dit(64), (x, t, y), base=_dit(32))
    check.load_state_dict(ema.state_dict())
    assert torch.equal(ema(x, t, y), check(x, t, y))


def _torchrun(*args: str) -> list[float]:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(root / "examples" / "train_fsdp.py"), "--steps", "3", *args],
        capture_output=True, text=True, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return [float(line.split("loss")[1]) for line in result.stdout.splitlines()
            if line.startswith("step")]


@pytest.mark.slow
def test_train_fsdp_example_eager_and_meta_agree() -> None:
    """examples/train_fsdp.py under torchrun: built for real, or on meta and initialised on
    the shards, the same seed gives the same losses."""
    eager, meta = _torchrun(), _torchrun("--meta")
    assert len(eager) == 3 and eager == pytest.approx(meta, rel=1e-4)
