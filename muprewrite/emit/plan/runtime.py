"""Helpers the emitted file carries verbatim under a depth rule (their source is copied in).

They pair a model with a base of another depth the way the emitted ``mup_init`` does at run
time; the emitter calls the same functions on the meta-device models, so what it checks at
emission is what the file runs. Plain PyTorch, no muprewrite import: each function is
self-contained (``re`` and ``torch`` only).
"""

from __future__ import annotations

import re

import torch

__all__ = ["_mup_blocks", "_mup_kind", "_mup_pair", "SOURCES"]


def _mup_blocks(model: torch.nn.Module, patterns: tuple[str, ...]) -> dict[str, list[str]]:
    """Per block pattern (layer index: *), the modules of ``model`` matching it, in order."""
    out = {}
    for pattern in patterns:
        regex = re.compile(re.escape(pattern).replace(r"\*", r"\d+"))
        out[pattern] = [name for name, _ in model.named_modules() if regex.fullmatch(name)]
    return out


def _mup_kind(module: torch.nn.Module) -> tuple:
    """What a block holds: its parameters' names and numbers of axes."""
    return tuple(sorted((name, p.dim()) for name, p in module.named_parameters()))


def _mup_pair(model: torch.nn.Module, base: torch.nn.Module,
              patterns: tuple[str, ...]) -> dict[str, str]:
    """Each model parameter's partner in the base ("" for none): the same name outside the
    residual blocks; in block i, the same parameter of base block i, or where that block is
    missing or holds other parameters, of the nearest earlier base block that holds the same
    ones (the nearest later one if there is none)."""
    partners = {name: name for name, _ in model.named_parameters()}
    ours, theirs = _mup_blocks(model, patterns), _mup_blocks(base, patterns)
    for pattern in sorted(patterns, key=len):  # a block inside a block: the inner one wins
        kinds = [_mup_kind(base.get_submodule(b)) for b in theirs[pattern]]
        for i, block in enumerate(ours[pattern]):
            kind = _mup_kind(model.get_submodule(block))
            same = [j for j, k in enumerate(kinds) if k == kind]
            j = i if i in same else max((j for j in same if j < i), default=min(same or [-1]))
            for name, _ in kind:
                partners[f"{block}.{name}"] = f"{theirs[pattern][j]}.{name}" if j >= 0 else ""
    return partners


SOURCES = (_mup_blocks, _mup_kind, _mup_pair)  # copied into the emitted file, in this order
