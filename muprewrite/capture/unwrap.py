"""The user's model inside the wrappers that training adds around it."""

from __future__ import annotations

from torch import nn

__all__ = ["unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside ``torch.compile`` (``_orig_mod``) and DDP / DataParallel
    (``module``) wrappers; FSDP2's ``fully_shard`` wraps nothing and keeps every name."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        else:
            return model
