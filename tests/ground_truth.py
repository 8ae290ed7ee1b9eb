"""Ground truth independent of the analyzer: build a model at two widths, diff parameter
shapes, and read fan axes from the owning module's type (never from the graph)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

__all__ = ["ground_truth_roles", "fan_axes"]


def fan_axes(module: nn.Module, pname: str, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(fan_in, fan_out) of a module's own weight, or None for vector-like parameters."""
    if pname != "weight" or ndim < 2:
        return None
    kind = type(module).__name__
    if isinstance(module, nn.Embedding):
        return (0,), (1,)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return (0,), (1,)
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return (1,), (0,)
    if kind == "Conv1D":  # transformers' GPT-2 layer stores [fan_in, fan_out]
        return (0,), (1,)
    return None


def _owners(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    owners: dict[str, tuple[nn.Module, str]] = {}
    canonical = {id(p): n for n, p in model.named_parameters()}
    for mname, module in model.named_modules(remove_duplicate=False):
        for pname, p in module._parameters.items():
            if p is None:
                continue
            full = f"{mname}.{pname}" if mname else pname
            if canonical.get(id(p)) == full:
                owners.setdefault(full, (module, pname))
    return owners


def ground_truth_roles(model: nn.Module, other: nn.Module,
                       free_fans: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
                       ) -> dict[str, str]:
    """Role of every parameter of ``model`` given the same architecture ``other`` at another width.

    ``free_fans``: (fan_in, fan_out) of parameters owned by no standard layer, keyed by the
    parameter's own attribute name, as recorded by whoever built the model.
    """
    theirs = {n: tuple(p.shape) for n, p in other.named_parameters()}
    owners = _owners(model)
    roles = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        width = {d for d, (a, b) in enumerate(zip(shape, theirs[name])) if a != b}
        module, pname = owners[name]
        fans = fan_axes(module, pname, len(shape))
        if fans is None and free_fans and pname in free_fans:
            fans = free_fans[pname]
        if not width:
            roles[name] = "fixed"
        elif fans is None:
            roles[name] = "hidden" if len(width) >= 2 else "input"
        else:
            wide_in = any(a in width for a in fans[0])
            wide_out = any(a in width for a in fans[1])
            roles[name] = {(True, True): "hidden", (False, True): "input",
                           (True, False): "output"}.get((wide_in, wide_out), "fixed")
    return roles
