"""One call for a working optimizer under a rule: ``muprewrite.optimizer(model, lr=...)`` (this
module is ``muprewrite.training.optimizer``; the package exports the function).

Adam rules get ``torch.optim.AdamW``, SGD rules ``torch.optim.SGD``, and Muon rules
(``mup-muon``, ``mup-muon-rms``) a :class:`MuonWithAdamW`: ``torch.optim.Muon`` on the hidden
2-D weights and ``torch.optim.AdamW`` on everything else, behind one ``torch.optim.Optimizer``.
Every group comes from :func:`muprewrite.param_groups`, so learning-rate schedulers scale
every group alike and the muP ratios between them survive.

>>> import torch, muprewrite
>>> def mlp(w):
...     return torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
...                                torch.nn.ReLU(), torch.nn.Linear(w, 3))
>>> model = muprewrite.apply(mlp(256), torch.randn(2, 8), base=mlp(64), rule="mup-muon")
>>> opt = muprewrite.optimizer(model, lr=0.02, adam_lr=3e-3, weight_decay=0.01)
>>> for g in opt.param_groups:
...     print(g["optimizer"], g["param_names"], g["lr"], g["weight_decay"])
muon ['2.weight'] 0.02 0.01
adamw ['0.weight', '0.bias', '2.bias', '4.weight', '4.bias'] 0.003 0.01
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..analysis.report import Report
from ..errors import MuprewriteError, UsageError
from ..rewrite.attached import plan_of
from ..rules import Rule, load_rule
from ..rules.hparams import HParamsLike
from .param_groups import param_groups

__all__ = ["optimizer", "MuonWithAdamW"]


def optimizer(model: nn.Module, report: Report | None = None, *, rule: str | Rule | None = None,
              lr: float, adam_lr: float | None = None, weight_decay: float = 0.0,
              adam_weight_decay: float | None = None, eps: float = 1e-8,
              betas: tuple[float, float] = (0.9, 0.999), momentum: float | None = None,
              nesterov: bool = True, adjust_lr_fn: str | None = None,
              hparams: HParamsLike = None, no_decay: str | None = None,
              **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer a rule is derived for, over ``param_groups(model, ...)``.

    ``lr``, ``weight_decay`` (and ``adam_lr``, ``adam_weight_decay`` under a Muon rule) are
    the values tuned at base width; the rule scales them per group. ``rule`` and ``report``
    as for :func:`muprewrite.param_groups` (a model from ``apply`` needs neither).
    ``momentum``: SGD's (default 0) or Muon's (default 0.95). ``adjust_lr_fn``: leave it out;
    if given, it must be the one the Muon rule was derived for. ``kwargs`` go to AdamW / SGD
    (e.g. ``fused=True``). ``hparams`` and ``no_decay`` (default None: the rule's weight decay;
    ``"vectors"``: none on biases and norm gains) as for :func:`muprewrite.param_groups`.
    """
    family = _family(model, rule)
    groups = param_groups(model, report, rule=rule, lr=lr, weight_decay=weight_decay, eps=eps,
                          adam_lr=adam_lr, adam_weight_decay=adam_weight_decay, hparams=hparams,
                          no_decay=no_decay)
    if family == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum or 0.0, **kwargs)
    if family == "adam":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)
    muon_groups = [g for g in groups if g["optimizer"] == "muon"]
    wanted = muon_groups[0]["adjust_lr_fn"] if muon_groups else None
    if adjust_lr_fn is not None and wanted is not None and adjust_lr_fn != wanted:
        raise UsageError(f"the rule was derived for Muon's adjust_lr_fn={wanted!r}, not "
                         f"{adjust_lr_fn!r}: the learning rates' width scaling depends on it",
                         fix=f"leave adjust_lr_fn out, or use the rule derived for "
                             f"{adjust_lr_fn!r} (mup-muon: original, mup-muon-rms: "
                             f"match_rms_adamw)")
    _check_unsharded(muon_groups)
    muon = _muon_class()(muon_groups, lr=lr, weight_decay=weight_decay,
                         momentum=0.95 if momentum is None else momentum, nesterov=nesterov,
                         adjust_lr_fn=wanted) if muon_groups else None
    adam_groups = [g for g in groups if g["optimizer"] == "adamw"]
    adamw = torch.optim.AdamW(adam_groups, lr=adam_lr or 0.0, betas=betas, eps=eps,
                              **kwargs) if adam_groups else None
    return MuonWithAdamW(muon, adamw)


def _family(model: nn.Module, rule: str | Rule | None) -> str:
    plan = plan_of(model)
    if plan is not None:
        return plan.optimizer
    if isinstance(rule, Rule):
        return rule.optimizer
    return load_rule(rule or "mup").optimizer


def _muon_class() -> Callable[..., torch.optim.Optimizer]:
    muon = getattr(torch.optim, "Muon", None)
    if muon is None:
        raise MuprewriteError(f"a Muon rule needs torch.optim.Muon (PyTorch >= 2.9); this is "
                              f"torch {torch.__version__}",
                              fix="upgrade torch, or use rule=\"mup\" (AdamW everywhere)")
    return muon  # type: ignore[no-any-return]


def _check_unsharded(groups: list[dict[str, Any]]) -> None:
    """Muon orthogonalises whole matrices: a parameter sharded by FSDP2 is refused."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed
        return
    for group in groups:
        for name, param in zip(group["param_names"], group["params"]):
            if isinstance(param, DTensor) and any(not p.is_replicate()
                                                  for p in param.placements):
                raise UsageError(f"{name!r} is sharded ({param.placements}), and Muon "
                                 "orthogonalises each update as a whole matrix, which a "
                                 "shard is not", fix="train with DDP (each rank holds whole "
                                 "matrices), or use rule=\"mup\" (AdamW) under FSDP2")


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` and ``torch.optim.AdamW`` as one optimizer.

    ``param_groups`` is the Muon groups then the AdamW groups (the very dicts the two step
    with, each with ``group["optimizer"]``), and ``state`` is shared, so LR schedulers,
    ``zero_grad``, ``state_dict`` and ``load_state_dict`` work as on any torch optimizer.
    """

    def __init__(self, muon: torch.optim.Optimizer | None,
                 adamw: torch.optim.Optimizer | None) -> None:
        self._parts = [p for p in (muon, adamw) if p is not None]
        if not self._parts:
            raise UsageError("no parameter to optimize", fix="unfreeze what is to be trained")
        groups = [g for part in self._parts for g in part.param_groups]
        super().__init__(groups, {})
        self.param_groups = groups  # the same dicts the parts step with
        self._link()

    def _link(self) -> None:
        """Point each part at this optimizer's group dicts and state."""
        start = 0
        for part in self._parts:
            count = len(part.param_groups)
            part.param_groups = self.param_groups[start:start + count]
            part.state = self.state
            start += count

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # new group dicts and state: re-link the parts
        self._link()

    def __getstate__(self) -> dict[str, Any]:  # deepcopy and pickle keep the parts
        state = super().__getstate__()
        state["_parts"] = self._parts
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_parts" in self.__dict__:
            self._link()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self._parts:
            part.step()
        return loss

