"""Stage 5b — install the plan's edits: each host module gets a subclass whose forward runs
the original forward inside a :class:`RewriteMode`.

The swap is the one ``torch.nn.utils.parametrize`` uses: ``module.__class__`` becomes a
generated subclass (one per original class), so ``isinstance`` checks, the user's other
methods, ``state_dict`` keys, hooks and ``train()/eval()`` are unchanged. The edit itself
lives on the instance as plain data (parameter paths and factors, no tensor references), so
``copy.deepcopy`` gives an independent copy whose edits point at its own parameters.

A host with a logit table applies its attention edit to its whole subtree (a nested host
leaves its attention calls to the enclosing one). ``nn.TransformerEncoder`` and
``nn.TransformerEncoderLayer`` above such a host get a "guard": an empty edit whose mode is
only there so that their fused fast paths (``torch._transformer_encoder_layer_fwd``, the
nested-tensor path), which skip ``self_attn.forward`` in eval mode, see
``has_torch_function`` and take the path the edit reaches.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .branches import install_branches
from .logits import Ledger, looks_external
from .mode import RewriteMode, attention_owned
from .plan import HostEdit, Plan
from .table import within

__all__ = ["install", "HOST_ATTR", "PLAN_ATTR", "INIT_ATTR", "PENDING_ATTR"]

HOST_ATTR = "_muprewrite_host"
PLAN_ATTR = "_muprewrite_plan"
INIT_ATTR = "_muprewrite_init_rms"  # target RMS per parameter, kept for meta-built models
PENDING_ATTR = "_muprewrite_init_pending"  # built on meta, rescale_init not yet called
INPUT_FACTOR_ATTR = "_muprewrite_input_factor"
EXTERNAL_ATTR = "_muprewrite_external"  # the host's code calls flash-attn/xformers (logits.py)
_GENERATED: dict[type, type] = {}
# leaf layers whose forward is linear in its input apart from the bias: a multiplier on the
# weight is a multiplier on the input, with no TorchFunctionMode needed (cheaper in eager)
_LINEAR_LEAVES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# containers whose eval-mode fast path skips their attention module's forward
_FAST_PATHS = (nn.TransformerEncoder, nn.TransformerEncoderLayer)


def _forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    # the class we wrapped, found through the MRO so that later class swaps (FSDP2's
    # fully_shard, parametrize) that subclass our class keep working
    original: type[nn.Module] = type(self)._muprewrite_original  # type: ignore[attr-defined]
    factor = getattr(self, INPUT_FACTOR_ATTR, None)
    if factor is not None and args:
        return original.forward(self, args[0] * factor, *args[1:], **kwargs)
    edit: HostEdit = getattr(self, HOST_ATTR)
    uses = [(self.get_parameter(u.param), u.factor, u.gather if u.skip_gather else u.factor)
            for u in edit.uses]
    ledger = None
    if edit.logits is not None and not attention_owned():
        ledger = Ledger(edit.logits, f"{edit.module or 'the root module'} ({original.__name__})",
                        original.forward if getattr(self, EXTERNAL_ATTR) else None)
    with RewriteMode(uses, ledger):
        out = original.forward(self, *args, **kwargs)
    if ledger is not None:
        ledger.finish()
    return out


def _input_factor(host: nn.Module, edit: HostEdit) -> float | None:
    """The readout fast path: a plain Linear/Conv whose own weight takes the multiplier."""
    if (type(host) in _LINEAR_LEAVES and not edit.attention and len(edit.uses) == 1
            and edit.uses[0].param == "weight"):
        return edit.uses[0].factor
    return None


def _subclass(cls: type) -> type:
    if cls not in _GENERATED:
        _GENERATED[cls] = type(cls.__name__, (cls,), {
            "forward": _forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "_muprewrite_original": cls,
        })
    return _GENERATED[cls]


def install(model: nn.Module, plan: Plan) -> None:
    """Swap every host's class and attach its edit; attach the plan to the root."""
    for edit in (*plan.hosts, *guards(model, plan)):
        host = model.get_submodule(edit.module)
        if hasattr(host, HOST_ATTR):
            raise AssertionError(f"module {edit.module!r} is already rewritten")
        object.__setattr__(host, HOST_ATTR, edit)
        object.__setattr__(host, INPUT_FACTOR_ATTR, _input_factor(host, edit))
        object.__setattr__(host, EXTERNAL_ATTR, edit.logits is not None
                           and looks_external(host, edit.logits))
        host.__class__ = _subclass(type(host))
    install_branches(model, plan.branches)
    object.__setattr__(model, PLAN_ATTR, plan)


def guards(model: nn.Module, plan: Plan) -> list[HostEdit]:
    """An empty edit on the outermost fast-path container above each attention host."""
    fast = [name for name, module in model.named_modules() if isinstance(module, _FAST_PATHS)]
    hosts = {edit.module for edit in plan.hosts}
    owners = [edit.module for edit in plan.hosts if edit.logits is not None]
    out: dict[str, HostEdit] = {}
    for host in owners:
        outer = min((name for name in fast if within(host, name)), key=len, default=None)
        if outer is not None and outer not in hosts and not any(
                within(outer, owner) for owner in owners):
            out.setdefault(outer, HostEdit(outer, (), ()))
    return list(out.values())
