"""Tune once on a proxy: a character-level GPT on Python's own documentation.

The corpus is the text of the Python reference topics that every CPython install ships
(``pydoc_data.topics``, ~465 k characters, 103 distinct ones): no download. The model is the
examples' GPT (``examples/gpt.py``: tied embeddings, pre-LN blocks), 2 layers, 4 heads
(the head size grows with width), context 64.

``train(run)`` is the trial function ``muprewrite tune`` calls: it trains ``run.model`` with
``run.optimizer`` for ``run.steps`` steps on batches drawn with ``run.seed``, reports the
held-out loss every ``EVAL_EVERY`` steps (so that the pruner can stop a bad trial early) and
returns the final held-out loss. The same function trains every width.

    muprewrite tune examples/gpt.py --model "GPT(vocab_size=103, block_size=64, n_layer=2, \\
        n_head=4, n_embd=32)" --train examples/tune_chargpt.py:train --steps 200 \\
        --lr 1e-4:1e-1 --trials 64 --workers 2 -o card.toml
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpt import GPT  # noqa: E402

BLOCK, BATCH, EVAL_EVERY, EVAL_BATCHES = 64, 16, 25, 8


@functools.cache
def corpus() -> tuple[torch.Tensor, torch.Tensor, int]:
    """(train ids, held-out ids, vocabulary size): the last 10 % of the text is held out."""
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics))
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(chars)


def build(width: int = 32) -> GPT:
    """The char-GPT at ``width`` (4 heads: the head size grows with the width)."""
    return GPT(vocab_size=corpus()[2], block_size=BLOCK, n_layer=2, n_head=4, n_embd=width)


def batch(ids: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(ids) - BLOCK - 1, (BATCH,), generator=gen)
    x = torch.stack([ids[s:s + BLOCK] for s in starts.tolist()])
    y = torch.stack([ids[s + 1:s + BLOCK + 1] for s in starts.tolist()])
    return x, y


def held_out_loss(model: torch.nn.Module) -> float:
    """Mean loss on a fixed set of held-out batches (the same for every trial)."""
    _, val, _ = corpus()
    gen = torch.Generator().manual_seed(1234)
    model.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                  for x, y in (batch(val, gen) for _ in range(EVAL_BATCHES))]
    model.train()
    return sum(losses) / len(losses)


def train(run) -> float:  # noqa: ANN001 - a muprewrite.training.tuning.TrialRun
    """Train ``run.steps`` AdamW steps (10 % warm-up, then cosine to 10 %); the held-out loss."""
    ids, _, _ = corpus()
    gen = torch.Generator().manual_seed(run.seed)
    warm = max(1, run.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda s: min(
        (s + 1) / warm, 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / run.steps)))))
    loss = math.inf
    for step in range(1, run.steps + 1):
        x, y = batch(ids, gen)
        loss = F.cross_entropy(run.model(x).flatten(0, 1), y.flatten())
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        sched.step()
        if step % EVAL_EVERY == 0 or step == run.steps:
            loss = held_out_loss(run.model)
            run.report(step, loss)
    return float(loss)
