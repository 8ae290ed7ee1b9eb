"""``apply(model, example_inputs, base=..., rule="mup")``: the model, rewritten into muP.

>>> import torch
>>> import muprewrite
>>> def mlp(w):
...     return torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
...                                torch.nn.ReLU(), torch.nn.Linear(w, 3))
>>> model = muprewrite.apply(mlp(256), torch.randn(2, 8), base=mlp(64))
>>> opt = torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-3))
>>> muprewrite.plan_of(model)["4.weight"].multiplier  # the readout's forward multiplier
0.25
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..analysis.analyze import analyze_with_capture
from ..analysis.attention import HeadsConvention
from ..analysis.report import Report
from ..capture.export import aliases
from ..capture.unwrap import unwrap
from ..errors import MuprewriteError, UsageError
from ..rewrite.attached import plan_of
from ..rules import Rule, load_rule
from ..rules.hparams import HParamsLike, as_hparams
from . import init_targets, install, make_plan, rescale_to_targets
from .fingerprint import record
from .hosts import INIT_ATTR, PENDING_ATTR

__all__ = ["apply", "rescale_init"]


def apply(model: nn.Module, example_inputs: Any = None, *, base: nn.Module,
          rule: str | Rule = "mup", init: bool = True, compile: bool = False,
          heads: HeadsConvention = "grow", hparams: HParamsLike = None,
          progress: Callable[[str], None] | None = None) -> nn.Module:
    """Rewrite ``model`` in place into the parametrization ``rule`` and return it.

    ``base``: the same architecture at the width the hyperparameters were tuned at. Every
    factor is relative to it, and with ``init=True`` its parameters give the init scale to
    follow (build it on the CPU; only its shapes are read where nothing grows).
    After the call:

    - parameters are rescaled per the rule (``init=False`` keeps them as they are). A model
      built on the meta device is rescaled later: ``model.to_empty(device=...)``, your own
      init, then ``muprewrite.rescale_init(model)``;
    - readout multipliers and attention logit factors are in effect in ``forward`` (and in
      every method that calls it), through ``torch.compile`` too. The logit factor reaches
      every attention call of a host module's forward on any path, not only the one
      captured (SDPA, explicit ``softmax(q @ k.T)``, ``nn.MultiheadAttention``), keyed by
      head size; an attention the edit cannot scale raises ``MuprewriteError`` at that call
      (or here, for a forward that calls flash-attn's or xformers' kernels);
    - ``param_groups(model, lr=...)`` gives the optimizer groups.

    Parameters frozen at this call (``requires_grad=False``: a pretrained base under LoRA
    adapters, a fixed position table) keep the function they compute: no init rescale, no
    forward multiplier (tied or not), no logit factor at an attention whose query or key
    they project, no optimizer group; ``plan_of(model).diagnostics`` lists what a trained
    one would have got. Freeze and unfreeze before ``apply``, as it will be in training.

    ``hparams``: the base hyperparameters tuned on the proxy (output, input and attention
    multipliers, hidden init scale, per-class learning rates, branch multiplier; see
    :mod:`muprewrite.rules.hparams`): a ``muprewrite.HParams``, a mapping of their names to
    values, or the path of a card written by ``muprewrite tune -o card.toml``. Default: all
    1, the rule alone. They are width-invariant: pass the same values at every width.

    ``state_dict`` keys do not change. Applying twice raises. ``compile=True`` returns
    ``torch.compile(model)``.
    """
    if base is None:
        raise UsageError("apply needs base=: the model at the width the hyperparameters were "
                         "tuned at", fix="muprewrite.apply(model, inputs, base=MyModel(width=64))")
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be an nn.Module, got {type(model).__name__}",
                         fix="muprewrite.apply(MyModel(width=256), inputs, base=...)")
    done = plan_of(model)
    if done is not None:
        raise MuprewriteError(f"{type(model).__name__} is already rewritten (rule "
                              f"{done.rule!r}); applying again would scale it twice",
                              fix="apply to a freshly built model; plan_of(model) shows the "
                                  "plan in effect")
    rule = rule if isinstance(rule, Rule) else load_rule(rule)
    tuned = as_hparams(hparams, rule.id)
    wrapper, model = model, unwrap(model)  # torch.compile / DDP: rewrite the model inside
    report, cap = analyze_with_capture(model, example_inputs, base=unwrap(base), heads=heads,
                                       progress=progress)
    if progress:
        progress(f"planning rule {rule.id!r}")
    plan = make_plan(report, cap.graph, rule, aliases(model), tuned)
    _warn_unused(report, base)
    if init:
        targets = init_targets(model, base, plan)
        object.__setattr__(model, INIT_ATTR, targets)
        if any(p.is_meta for p in model.parameters()):
            object.__setattr__(model, PENDING_ATTR, True)
        else:
            rescale_to_targets(model, targets)
    install(model, plan)
    record(model)  # param_groups refuses a planned module replaced after this
    if compile:
        compiled: nn.Module = torch.compile(wrapper)  # type: ignore[assignment]  # an OptimizedModule
        return compiled
    return wrapper


def _warn_unused(report: Report, base: nn.Module) -> None:
    """A trainable parameter that grows with width but that no captured op used gets no
    factor: say so, since the forward may use it on a path the capture did not run."""
    base_shapes = {n: tuple(p.shape) for n, p in unwrap(base).named_parameters()}
    names = report.uncaptured(base_shapes)
    if names:
        warnings.warn(f"muprewrite: {len(names)} trainable parameter(s) that grow with width are "
                      f"used by no captured op and get no muP factor: {', '.join(names[:10])}. "
                      "If forward uses them on another path (a generate branch, a flag), pass "
                      "one input set per path: muprewrite.InputSets(set_1, set_2); if they "
                      "are dead, freeze them "
                      "(requires_grad=False)", stacklevel=3)


def rescale_init(model: nn.Module) -> dict[str, float]:
    """Rescale a rewritten model's parameters to the rule's init scale, in place.

    ``apply`` does this itself for a model with real parameters. For one built on the meta
    device, call it after ``model.to_empty(device=...)`` and your own init (sharded FSDP2
    parameters are fine). Idempotent. Returns the factor applied to each parameter.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"rescale_init needs the model (an nn.Module), got "
                         f"{type(model).__name__}", fix="muprewrite.rescale_init(model)")
    model = unwrap(model)
    if plan_of(model) is None:
        raise MuprewriteError(f"{type(model).__name__} was not rewritten by muprewrite.apply",
                              fix="model = muprewrite.apply(model, inputs, base=...) first")
    targets = getattr(model, INIT_ATTR, None)
    if targets is None:
        raise MuprewriteError("apply was called with init=False: there is no init to follow",
                              fix="apply(..., init=True) with base on a real device")
    applied = rescale_to_targets(model, targets)
    object.__setattr__(model, PENDING_ATTR, False)
    return applied
