"""The optimizer part of the emitted block: ``mup_param_groups`` and ``mup_optimizer`` for the
rule's optimizer family (AdamW, SGD, or Muon on the hidden matrices and AdamW on the rest), and
the flags in ``MUP_PARAMS`` they read. Emitted files are standalone: the Muon class here is a
short copy of ``muprewrite.training.optimizer.MuonWithAdamW``, not an import of it."""

from __future__ import annotations

from dataclasses import dataclass

from ..plan.entries import MUON_FLAG, NO_DECAY_FLAG

__all__ = ["Training", "flag_comments", "optimizer_functions"]


@dataclass(frozen=True)
class Training:
    """How the rule trains: what ``mup_param_groups`` and ``mup_optimizer`` are emitted as."""

    optimizer: str = "adam"  # the rule's family: "adam", "sgd" or "muon"
    adjust_lr_fn: str | None = None  # a Muon rule's (its Muon groups carry it)
    independent: bool = False  # weight_decay_coupling "independent": torch gets wd / lr
    vector_decay: bool = True  # False: vector-like parameters (NO_DECAY_FLAG) get none


def flag_comments(training: Training) -> list[str]:
    """What the flags in ``MUP_PARAMS`` mean, for the rules that use them."""
    out = []
    if training.optimizer == "muon":
        out += [f'# "{MUON_FLAG}": a hidden matrix, stepped by torch.optim.Muon (lr and weight_decay: '
                "the rule's [muon]", "# row); AdamW steps the rest"]
    if not training.vector_decay:
        out.append(f'# "{NO_DECAY_FLAG}": weight decay 0 (vector-like: input and output weights, '
                   "biases, norm gains)")
    return out


def optimizer_functions(training: Training) -> list[str]:
    """``mup_param_groups`` and ``mup_optimizer``, and under a Muon rule the class that steps
    Muon and AdamW as one optimizer; ``_mup_model`` (the model mup_init saw, or a refusal) and
    ``_mup_decay`` (the weight decay factor, with the ``no_decay`` policy) before them."""
    flag = "" if training.vector_decay else f'"{NO_DECAY_FLAG}" in f or '
    shared = _MODEL + "\n\n" + _DECAY.format(flag=flag) + "\n\n"
    helper = shared + (_INDEPENDENT if training.independent else "")
    if training.optimizer == "muon":
        call = "            _mup_independent_decay(group, name)\n" if training.independent else ""
        groups = _MUON_GROUPS.format(flag=MUON_FLAG, independent=call,
                                     adjust=_string(training.adjust_lr_fn), policy=_POLICY)
        return [helper + groups, _MUON_CLASS, _MUON_OPTIMIZER]
    eps = ', "eps": eps * key[2]' if training.optimizer == "adam" else ""
    group = ('            groups[key] = {"params": [], "lr": lr * key[0], '
             f'"weight_decay": weight_decay * key[1]{eps}}}')
    if training.independent:
        group += "\n            _mup_independent_decay(groups[key], name)"
    return [helper + _GROUPS.format(group=group, policy=_POLICY), _OPTIMIZER[training.optimizer]]


def _string(value: str | None) -> str:
    return "None" if value is None else f'"{value}"'


_POLICY = '''no_decay="vectors": weight decay 0 on every parameter with fewer than 2 dimensions
    (biases, norm gains; nanoGPT's convention); None (default): the rule's weight decay on
    every parameter.'''

_MODEL = '''def _mup_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside torch.compile / DDP wrappers, refused unless it has the parameters
    mup_init saw: one added or reshaped since (a layer a subclass adds after __init__, a new
    head) would get no factor."""
    global _MUP_BUILDING_BASE
    while not hasattr(model, "mup_factors"):  # inside torch.compile / DDP wrappers
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            raise ValueError("muP: the model has no mup_factors; its __init__ must end with "
                             "mup_init(self) (or call mup_init(model) once it is built)")
        model = inner
    _MUP_BUILDING_BASE = True
    try:
        base = mup_base_model()
    finally:
        _MUP_BUILDING_BASE = False
    try:
        now = mup_factors(model, base)
    except ValueError as error:
        raise ValueError(f"muP: the model changed since mup_init(model), and a parameter with "
                         f"no partner in the base has no muP factor: {str(error)[5:]}; put the "
                         "layer in the class this file was emitted for, and emit it again") from None
    changed = sorted(n for n in now.keys() | model.mup_factors.keys()
                     if now.get(n) != model.mup_factors.get(n))
    if changed:
        raise ValueError(f"muP: the factors of {', '.join(changed[:10])} changed since "
                         "mup_init(model) (a parameter reshaped, or MUP_* constants set after "
                         "the model was built); call mup_init(model) again after the edit")
    return model
'''

_DECAY = '''def _mup_decay(f: dict, param: torch.nn.Parameter, no_decay: str | None) -> float:
    """The factor on the weight decay of a parameter with factors ``f``."""
    if no_decay not in (None, "vectors"):
        raise ValueError(f"muP: no_decay={{no_decay!r}}: pass None (the rule's weight decay) or "
                         "\\"vectors\\" (none on parameters with fewer than 2 dimensions)")
    if {flag}no_decay == "vectors" and param.dim() < 2:
        return 0.0
    return f.get("weight_decay", 1.0)
'''

_GROUPS = '''def mup_param_groups(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                     eps: float = 1e-8, no_decay: str | None = None) -> list[dict]:
    """Optimizer groups from the values tuned at base width, e.g.
    torch.optim.AdamW(mup_param_groups(model, lr=3e-4, weight_decay=0.1)).
    {policy}"""
    model = _mup_model(model)
    groups: dict[tuple, dict] = {{}}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        f = model.mup_factors.get(name, {{}})
        key = (f.get("lr", 1.0), _mup_decay(f, param, no_decay), f.get("eps", 1.0))
        if key not in groups:
{group}
        groups[key]["params"].append(param)
    return list(groups.values())
'''

_INDEPENDENT = '''def _mup_independent_decay(group: dict, name: str) -> None:
    """The rule's weight decay is the decay per step, independent of the lr: torch's optimizers
    decay by lr * weight_decay, so they get weight_decay / lr (a schedule scales both)."""
    if group["weight_decay"]:
        if not group["lr"]:
            raise ValueError(f"muP: {name}'s weight decay (independent of the lr) is handed to "
                             "torch as weight_decay / lr, and its lr is 0; pass a positive lr")
        group["weight_decay"] /= group["lr"]


'''

_OPTIMIZER = {
    "adam": '''def mup_optimizer(model: torch.nn.Module, lr: float, adam_lr: float | None = None,
                  weight_decay: float = 0.0, adam_weight_decay: float | None = None,
                  eps: float = 1e-8, no_decay: str | None = None,
                  **kwargs) -> torch.optim.Optimizer:
    """torch.optim.AdamW over mup_param_groups, from the values tuned at base width, e.g.
    mup_optimizer(model, lr=3e-4, weight_decay=0.1); kwargs go to AdamW (betas=, fused=).
    adam_lr and adam_weight_decay are for Muon rules: this rule steps everything with AdamW.
    no_decay as for mup_param_groups."""
    if adam_lr is not None or adam_weight_decay is not None:
        raise ValueError(f'muP rule "{MUP_RULE}" steps every parameter with AdamW: pass its '
                         "lr= and weight_decay=, not adam_lr= or adam_weight_decay=")
    groups = mup_param_groups(model, lr, weight_decay, eps, no_decay)
    return torch.optim.AdamW(groups, lr=lr, eps=eps, **kwargs)
''',
    "sgd": '''def mup_optimizer(model: torch.nn.Module, lr: float, adam_lr: float | None = None,
                  weight_decay: float = 0.0, adam_weight_decay: float | None = None,
                  eps: float = 1e-8, no_decay: str | None = None,
                  **kwargs) -> torch.optim.Optimizer:
    """torch.optim.SGD over mup_param_groups, from the values tuned at base width, e.g.
    mup_optimizer(model, lr=0.1, momentum=0.9); kwargs go to SGD. eps (Adam's), adam_lr and
    adam_weight_decay (Muon rules') do not apply: this rule steps everything with SGD.
    no_decay as for mup_param_groups."""
    if adam_lr is not None or adam_weight_decay is not None:
        raise ValueError(f'muP rule "{MUP_RULE}" steps every parameter with SGD: pass its '
                         "lr= and weight_decay=, not adam_lr= or adam_weight_decay=")
    return torch.optim.SGD(mup_param_groups(model, lr, weight_decay, no_decay=no_decay), lr=lr,
                           **kwargs)
''',
}

_MUON_GROUPS = '''def mup_param_groups(model: torch.nn.Module, lr: float, adam_lr: float | None = None,
                     weight_decay: float = 0.0, adam_weight_decay: float | None = None,
                     eps: float = 1e-8, no_decay: str | None = None) -> list[dict]:
    """Optimizer groups from the values tuned at base width: torch.optim.Muon's for the hidden
    matrices (lr, weight_decay), torch.optim.AdamW's for the rest (adam_lr, adam_weight_decay,
    default weight_decay, and eps); group["optimizer"] says which. mup_optimizer(model,
    lr=0.02, adam_lr=3e-3) builds the pair.
    {policy}"""
    if adam_lr is None:
        raise ValueError(f'muP rule "{{MUP_RULE}}" steps the hidden matrices with Muon (lr=) and '
                         "the rest with AdamW, whose learning rate adam_lr= is missing")
    if adam_weight_decay is None:
        adam_weight_decay = weight_decay
    model = _mup_model(model)
    groups: dict[tuple, dict] = {{}}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        f = model.mup_factors.get(name, {{}})
        muon = "{flag}" in f  # a hidden matrix
        key = (muon, f.get("lr", 1.0), _mup_decay(f, param, no_decay), f.get("eps", 1.0))
        if key not in groups:
            if muon:
                group = {{"params": [], "lr": lr * key[1], "weight_decay": weight_decay * key[2],
                         "optimizer": "muon", "adjust_lr_fn": {adjust}}}
            else:
                group = {{"params": [], "lr": adam_lr * key[1],
                         "weight_decay": adam_weight_decay * key[2], "optimizer": "adamw",
                         "eps": eps * key[3]}}
{independent}            groups[key] = group
        groups[key]["params"].append(param)
    return list(groups.values())
'''

_MUON_CLASS = '''class MupMuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon and torch.optim.AdamW as one optimizer: param_groups are the two's
    groups (the very dicts they step with) and state is shared, so LR schedulers, zero_grad,
    state_dict and load_state_dict work as on any torch optimizer."""

    def __init__(self, *parts: torch.optim.Optimizer | None) -> None:
        self._parts = [part for part in parts if part is not None]
        groups = [group for part in self._parts for group in part.param_groups]
        super().__init__(groups, {})
        self.param_groups = groups
        self._link()

    def _link(self) -> None:
        """Point each part at this optimizer's group dicts and state."""
        start = 0
        for part in self._parts:
            count = len(part.param_groups)
            part.param_groups, part.state = self.param_groups[start:start + count], self.state
            start += count

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # new group dicts and state: link them again
        self._link()

    def __getstate__(self) -> dict:  # copy.deepcopy, pickle: the parts too
        return {**super().__getstate__(), "_parts": self._parts}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._link()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self._parts:
            part.step()
        return loss
'''

_MUON_OPTIMIZER = '''def mup_optimizer(model: torch.nn.Module, lr: float, adam_lr: float | None = None,
                  weight_decay: float = 0.0, adam_weight_decay: float | None = None,
                  eps: float = 1e-8, momentum: float = 0.95, nesterov: bool = True,
                  no_decay: str | None = None, **kwargs) -> torch.optim.Optimizer:
    """torch.optim.Muon on the hidden matrices (lr, weight_decay, momentum, nesterov) and
    torch.optim.AdamW on the rest (adam_lr, adam_weight_decay, eps; kwargs: betas=, ...), as
    one optimizer, from the values tuned at base width, e.g. mup_optimizer(model, lr=0.02,
    adam_lr=3e-3, weight_decay=0.01). no_decay as for mup_param_groups."""
    if not hasattr(torch.optim, "Muon"):
        raise RuntimeError(f'muP rule "{MUP_RULE}" steps the hidden matrices with '
                           f"torch.optim.Muon, which torch {torch.__version__} lacks: it needs "
                           "PyTorch >= 2.9")
    groups = mup_param_groups(model, lr, adam_lr, weight_decay, adam_weight_decay, eps,
                              no_decay)
    muon = [g for g in groups if g["optimizer"] == "muon"]
    adamw = [g for g in groups if g["optimizer"] == "adamw"]
    return MupMuonWithAdamW(
        torch.optim.Muon(muon, lr=lr, momentum=momentum, nesterov=nesterov) if muon else None,
        torch.optim.AdamW(adamw, lr=adam_lr, eps=eps, **kwargs) if adamw else None)
'''
