"""The code the emitter adds to the user's file: constants, ``mup_init``, ``mup_param_groups``.

Everything here is text. The added code is plain PyTorch and works at any width: each factor
is ``m_in ** a * m_out ** b`` with ``m = size / base size`` of a parameter's fan axes, the
exponents being the rule's, so the same file trains the base proxy and the wide model. The
init is matched, parameter by parameter, to the RMS of a base model drawn with a fixed seed —
exactly what ``muprewrite.apply`` does with the base it is given.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .depth import DepthBlock, depth_constants, depth_functions

__all__ = ["Entry", "Training", "layer_pattern", "module_pattern", "collapse", "render_block",
           "render_header", "render_part_header", "render_constants", "emitted_rule", "part_of",
           "MARKER", "MUON_FLAG", "NO_DECAY_FLAG"]

MARKER = "# muprewrite:"  # first word of the header: marks a file the emitter wrote
_PART = "part of the muP version of "  # the header of another file of the project says this

# flags in a parameter's exponents (factor 1, so mup_factors keeps them as they are): stepped
# by torch.optim.Muon (a Muon rule's hidden matrix); no weight decay (vector_weight_decay "none")
MUON_FLAG = "muon"
NO_DECAY_FLAG = "no_weight_decay"

_INDEX = re.compile(r"(^|\.)\d+(?=\.)")
_MODULE_INDEX = re.compile(r"(^|\.)\d+(?=\.|$)")


def layer_pattern(name: str) -> str:
    """``blocks.3.attn.qkv.weight`` -> ``blocks.*.attn.qkv.weight`` (the emitted lookup)."""
    return _INDEX.sub(r"\1*", name)


def module_pattern(path: str) -> str:
    """``blocks.3`` -> ``blocks.*``: a module path with every layer index collapsed."""
    return _MODULE_INDEX.sub(r"\1*", path)


@dataclass(frozen=True)
class Entry:
    """One parameter's line in ``MUP_PARAMS``: fan axes and the nonzero exponents."""

    fan_in: tuple[int, ...]
    fan_out: tuple[int, ...]
    # (quantity, exponent of m_in, of m_out[, of m_L under a depth rule])
    exponents: tuple[tuple[Any, ...], ...]
    in_branch: bool | None = None  # inside a residual branch (None: a width-only rule)

    def code(self) -> str:
        exps = ", ".join(f'"{q}": ({", ".join(repr(x) for x in xs)})' for q, *xs in self.exponents)
        branch = "" if self.in_branch is None else f" {self.in_branch},"
        return f"({_tuple(self.fan_in)}, {_tuple(self.fan_out)},{branch} {{{exps}}})"


@dataclass(frozen=True)
class Training:
    """How the rule trains: what ``mup_param_groups`` and ``mup_optimizer`` are emitted as."""

    optimizer: str = "adam"  # the rule's family: "adam", "sgd" or "muon"
    adjust_lr_fn: str | None = None  # a Muon rule's (its Muon groups carry it)
    independent: bool = False  # weight_decay_coupling "independent": torch gets wd / lr
    vector_decay: bool = True  # False: vector-like parameters (NO_DECAY_FLAG) get none


def _tuple(axes: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, axes)) + ("," if len(axes) == 1 else "") + ")"


def collapse(values: Mapping[str, Entry | None]) -> dict[str, Entry]:
    """Merge names that differ only in layer indices when every such name has the same value.

    ``values`` holds every parameter (None: no entry), so that a pattern never covers a
    parameter that should have none.
    """
    groups: dict[str, list[str]] = {}
    for name in values:
        groups.setdefault(layer_pattern(name), []).append(name)
    out: dict[str, Entry] = {}
    for pattern, names in groups.items():
        first = values[names[0]]
        if len(names) > 1 and all(values[n] == first for n in names):
            if first is not None:
                out[pattern] = first
            continue
        for n in names:
            entry = values[n]
            if entry is not None:
                out[n] = entry
    return out


def render_header(file: str, rule: str, title: str, changes: Sequence[str],
                  base: str) -> list[str]:
    """The comment lines that open the emitted file (without newlines)."""
    text = (f'muP version of {file} (rule "{rule}": {title}; base width {base}). Changed: '
            + "; ".join(changes) + ". Regenerate from the original file to change the rule "
            "or the base.")
    return _wrap(text)


def _wrap(text: str) -> list[str]:
    lines = textwrap.wrap(f"{MARKER} {text}", 90, break_long_words=False,
                          break_on_hyphens=False)
    return [lines[0]] + [f"# {line}" for line in lines[1:]]


def emitted_rule(text: str) -> str | None:
    """The rule named in the muprewrite header of ``text``; None for a file without one."""
    for line in text.splitlines()[:5]:
        if line.startswith(MARKER):
            return line.split('rule "', 1)[1].split('"', 1)[0] if 'rule "' in line else "?"
    return None


def part_of(text: str) -> str | None:
    """For a file holding only muP edits, the main emitted file it belongs to (its path
    under the project root); None for a main file or a file without the header."""
    head = " ".join(line.lstrip("# ") for line in text.splitlines()[:8])
    if emitted_rule(text) is None or _PART not in head:
        return None
    return head.split(_PART, 1)[1].split()[0].rstrip(";,.")


def render_part_header(file: str, main: str, rule: str, title: str, changes: Sequence[str],
                       base: str) -> list[str]:
    """The comment lines that open another edited file of the project (``file``, ``main``:
    paths under the project root)."""
    text = (f'muP edits (rule "{rule}": {title}) in {file}, {_PART}{main} (base width '
            f"{base}), which holds mup_init, mup_param_groups and mup_optimizer. Changed: "
            + "; ".join(changes)
            + ". Regenerate from the original files to change the rule or the base.")
    return _wrap(text)


def render_constants(rule: str, main: str, d_head: Mapping[str, int]) -> str:
    """The constants another file's edits use, defined there (importing them from the main
    file would be circular: the main file imports this one)."""
    if not d_head:
        return ""
    title = f'# ---- muP (written by muprewrite, rule "{rule}"; the rest is in {main}) '
    out = ["", title + "-" * max(4, 90 - len(title)), ""]
    out += [f"{name} = {size}  # head size at base width; the logits scale as 1/d_head from "
            "there" for name, size in d_head.items()]
    return "\n".join(out)


def render_block(*, rule: str, seed: int, base_call: str, entries: Mapping[str, Entry],
                 unused: Sequence[str], multipliers: Mapping[str, Mapping[str, str]],
                 d_head: Mapping[str, int], training: Training, imports: Sequence[str],
                 elsewhere: Sequence[tuple[str, int, str]] = (),
                 depth: DepthBlock | None = None) -> str:
    """The module-level code added after the file's imports. ``training``: the optimizer
    the rule is for (``mup_param_groups``, ``mup_optimizer``); ``elsewhere``: (constant,
    size, file) of the head size constants that only other files use (defined there);
    ``depth``: under a depth rule, the residual blocks and branch hosts (``MUP_PARAMS`` is
    then keyed by the base's parameters, each with its m_L exponent)."""
    out = [*imports, "" if imports else None, "",
           f'# ---- muP (written by muprewrite, rule "{rule}") ' + "-" * 40, "",
           f'MUP_RULE = "{rule}"',
           f"MUP_BASE_SEED = {seed}  # seed of the base init draw the init scale is matched to"]
    for name, size in d_head.items():
        out.append(f"{name} = {size}  # head size at base width; the logits scale as 1/d_head "
                   "from there")
    for name, size, file in elsewhere:
        out.append(f"# {name} = {size} (head size at base width) is defined in {file}, with "
                   "its attention")
    if depth is None:
        out += ["# per parameter (layer index: *): fan-in axes, fan-out axes, and the exponents "
                "of", "# m_in, m_out (size / base size of those axes) of each factor the rule "
                "changes"]
    else:
        out += depth_constants(depth)
    out += _flag_comments(training)
    out.append("MUP_PARAMS = {")
    out += [f'    "{name}": {entry.code()},' for name, entry in entries.items()]
    out.append("}")
    if unused:
        out.append("MUP_UNUSED = {" + ", ".join(f'"{n}"' for n in unused) + "}  # never used "
                   "by forward: left as they are")
    else:
        out.append("MUP_UNUSED: set[str] = set()  # parameters forward never uses")
    out += ["# forward multipliers: module -> {attribute: parameter whose multiplier it holds}",
            "MUP_MULTIPLIERS = {"]
    for module, attrs in multipliers.items():
        inner = ", ".join(f'"{a}": "{p}"' for a, p in attrs.items())
        out.append(f'    "{module}": {{{inner}}},')
    out.append("}")
    middle = _WIDTH.format() if depth is None else depth_functions()
    out.append("\n\n".join([_PREAMBLE.format(base_call=base_call), middle,
                             *_optimizer_functions(training)]))
    return "\n".join(line for line in out if line is not None)


def _flag_comments(training: Training) -> list[str]:
    """What the flags in ``MUP_PARAMS`` mean, for the rules that use them."""
    out = []
    if training.optimizer == "muon":
        out += [f'# "{MUON_FLAG}": a hidden matrix, stepped by torch.optim.Muon (lr and weight_decay: '
                "the rule's [muon]", "# row); AdamW steps the rest"]
    if not training.vector_decay:
        out.append(f'# "{NO_DECAY_FLAG}": weight decay 0 (vector-like: input and output weights, '
                   "biases, norm gains)")
    return out


_PREAMBLE = '''_MUP_BUILDING_BASE = False


def mup_base_model() -> torch.nn.Module:
    """The model at the base width, drawn with MUP_BASE_SEED (the caller's RNG is untouched)."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.random.default_generator.manual_seed(MUP_BASE_SEED)
        return {base_call}


def _mup_entry(name: str) -> tuple | None:
    return MUP_PARAMS.get(name) or MUP_PARAMS.get(re.sub(r"(^|\\.)\\d+(?=\\.)", r"\\1*", name))


def _mup_rms(t: torch.Tensor) -> float:
    return float(t.detach().double().square().mean().sqrt()) if t.numel() else 0.0
'''

_WIDTH = '''def mup_factors(model: torch.nn.Module, base: torch.nn.Module) -> dict[str, dict[str, float]]:
    """Per parameter, the factor on each quantity (init, multiplier, lr, eps, weight_decay)."""
    base_shapes = {{name: p.shape for name, p in base.named_parameters()}}
    ours = {{name: p.dim() for name, p in model.named_parameters()}}
    unmatched = sorted(n for n in ours.keys() ^ base_shapes.keys()) + sorted(
        n for n in ours if n in base_shapes and ours[n] != len(base_shapes[n]))
    if unmatched:  # a parameter with no partner in the base has no muP factor
        raise ValueError(
            f"muP: the model and its base (mup_base_model()) differ in {{len(unmatched)}} "
            f"parameter(s), e.g. {{', '.join(unmatched[:10])}}; build the model with the base's "
            "structure (depth, heads layout, options), changing only its width")
    factors = {{}}
    for name, p in model.named_parameters():
        entry = _mup_entry(name)
        if entry is None or name in MUP_UNUSED:
            continue
        fan_in, fan_out, exponents = entry
        m_in = m_out = 1.0
        for a in fan_in:
            if base_shapes[name][a]:
                m_in *= p.shape[a] / base_shapes[name][a]
        for a in fan_out:
            if base_shapes[name][a]:
                m_out *= p.shape[a] / base_shapes[name][a]
        factors[name] = {{q: float(m_in**e_in * m_out**e_out) for q, (e_in, e_out) in exponents.items()}}
    return factors


def mup_init(model: torch.nn.Module) -> None:
    """Put a freshly initialised model into muP: match each parameter's init RMS to the rule's
    factor x the base model's, and set the forward multipliers. A model built on the meta
    device: call mup_init(model) again after to_empty() and your own init."""
    global _MUP_BUILDING_BASE
    if _MUP_BUILDING_BASE:
        return  # this is the base model being built
    _MUP_BUILDING_BASE = True
    try:
        base = mup_base_model()
    finally:
        _MUP_BUILDING_BASE = False
    model.mup_factors = mup_factors(model, base)
    base_params = dict(base.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            ref = base_params.get(name)
            if ref is None or ref.shape == p.shape or not p.requires_grad or p.is_meta:
                continue
            if name in MUP_UNUSED or (rms := _mup_rms(p)) == 0.0:
                continue  # zero init stays zero
            p.mul_(model.mup_factors.get(name, {{}}).get("init", 1.0) * _mup_rms(ref) / rms)
    for path, attributes in MUP_MULTIPLIERS.items():
        for attribute, name in attributes.items():
            factor = model.mup_factors.get(name, {{}}).get("multiplier", 1.0)
            setattr(model.get_submodule(path), attribute, factor)
'''


def _optimizer_functions(training: Training) -> list[str]:
    """``mup_param_groups`` and ``mup_optimizer``, and under a Muon rule the class that steps
    Muon and AdamW as one optimizer. A rule that trains as ``mup`` does (AdamW or SGD, the
    weight decay coupled to the lr and scaled on every parameter) gets the plain ``_GROUPS``."""
    decay, decay_line = 'f.get("weight_decay", 1.0)', ""
    if not training.vector_decay:
        decay = "decay"
        decay_line = f'        decay = 0.0 if "{NO_DECAY_FLAG}" in f else f.get("weight_decay", 1.0)\n'
    helper = _INDEPENDENT if training.independent else ""
    if training.optimizer == "muon":
        call = "            _mup_independent_decay(group, name)\n" if training.independent else ""
        groups = _MUON_GROUPS.format(flag=MUON_FLAG, decay=decay, decay_line=decay_line,
                                     independent=call, adjust=_string(training.adjust_lr_fn))
        return [helper + groups, _MUON_CLASS, _MUON_OPTIMIZER]
    eps = ', "eps": eps * key[2]' if training.optimizer == "adam" else ""
    key = f'{decay_line}        key = (f.get("lr", 1.0), {decay}, f.get("eps", 1.0))'
    group = ('            groups[key] = {"params": [], "lr": lr * key[0], '
             f'"weight_decay": weight_decay * key[1]{eps}}}')
    if training.independent:
        group += "\n            _mup_independent_decay(groups[key], name)"
    return [helper + _GROUPS.format(key=key, group=group), _OPTIMIZER[training.optimizer]]


def _string(value: str | None) -> str:
    return "None" if value is None else f'"{value}"'


_GROUPS = '''def mup_param_groups(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                     eps: float = 1e-8) -> list[dict]:
    """Optimizer groups from the values tuned at base width, e.g.
    torch.optim.AdamW(mup_param_groups(model, lr=3e-4, weight_decay=0.1))."""
    while not hasattr(model, "mup_factors"):  # inside torch.compile / DDP wrappers
        model = getattr(model, "_orig_mod", None) or model.module
    groups: dict[tuple, dict] = {{}}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        f = model.mup_factors.get(name, {{}})
{key}
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
                  eps: float = 1e-8, **kwargs) -> torch.optim.Optimizer:
    """torch.optim.AdamW over mup_param_groups, from the values tuned at base width, e.g.
    mup_optimizer(model, lr=3e-4, weight_decay=0.1); kwargs go to AdamW (betas=, fused=).
    adam_lr and adam_weight_decay are for Muon rules: this rule steps everything with AdamW."""
    if adam_lr is not None or adam_weight_decay is not None:
        raise ValueError(f'muP rule "{MUP_RULE}" steps every parameter with AdamW: pass its '
                         "lr= and weight_decay=, not adam_lr= or adam_weight_decay=")
    groups = mup_param_groups(model, lr, weight_decay, eps)
    return torch.optim.AdamW(groups, lr=lr, eps=eps, **kwargs)
''',
    "sgd": '''def mup_optimizer(model: torch.nn.Module, lr: float, adam_lr: float | None = None,
                  weight_decay: float = 0.0, adam_weight_decay: float | None = None,
                  eps: float = 1e-8, **kwargs) -> torch.optim.Optimizer:
    """torch.optim.SGD over mup_param_groups, from the values tuned at base width, e.g.
    mup_optimizer(model, lr=0.1, momentum=0.9); kwargs go to SGD. eps (Adam's), adam_lr and
    adam_weight_decay (Muon rules') do not apply: this rule steps everything with SGD."""
    if adam_lr is not None or adam_weight_decay is not None:
        raise ValueError(f'muP rule "{MUP_RULE}" steps every parameter with SGD: pass its '
                         "lr= and weight_decay=, not adam_lr= or adam_weight_decay=")
    return torch.optim.SGD(mup_param_groups(model, lr, weight_decay), lr=lr, **kwargs)
''',
}

_MUON_GROUPS = '''def mup_param_groups(model: torch.nn.Module, lr: float, adam_lr: float | None = None,
                     weight_decay: float = 0.0, adam_weight_decay: float | None = None,
                     eps: float = 1e-8) -> list[dict]:
    """Optimizer groups from the values tuned at base width: torch.optim.Muon's for the hidden
    matrices (lr, weight_decay), torch.optim.AdamW's for the rest (adam_lr, adam_weight_decay,
    default weight_decay, and eps); group["optimizer"] says which. mup_optimizer(model,
    lr=0.02, adam_lr=3e-3) builds the pair."""
    if adam_lr is None:
        raise ValueError(f'muP rule "{{MUP_RULE}}" steps the hidden matrices with Muon (lr=) and '
                         "the rest with AdamW, whose learning rate adam_lr= is missing")
    if adam_weight_decay is None:
        adam_weight_decay = weight_decay
    while not hasattr(model, "mup_factors"):  # inside torch.compile / DDP wrappers
        model = getattr(model, "_orig_mod", None) or model.module
    groups: dict[tuple, dict] = {{}}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        f = model.mup_factors.get(name, {{}})
        muon = "{flag}" in f  # a hidden matrix
{decay_line}        key = (muon, f.get("lr", 1.0), {decay}, f.get("eps", 1.0))
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
                  **kwargs) -> torch.optim.Optimizer:
    """torch.optim.Muon on the hidden matrices (lr, weight_decay, momentum, nesterov) and
    torch.optim.AdamW on the rest (adam_lr, adam_weight_decay, eps; kwargs: betas=, ...), as
    one optimizer, from the values tuned at base width, e.g. mup_optimizer(model, lr=0.02,
    adam_lr=3e-3, weight_decay=0.01)."""
    if not hasattr(torch.optim, "Muon"):
        raise RuntimeError(f'muP rule "{MUP_RULE}" steps the hidden matrices with '
                           f"torch.optim.Muon, which torch {torch.__version__} lacks: it needs "
                           "PyTorch >= 2.9")
    groups = mup_param_groups(model, lr, adam_lr, weight_decay, adam_weight_decay, eps)
    muon = [g for g in groups if g["optimizer"] == "muon"]
    adamw = [g for g in groups if g["optimizer"] == "adamw"]
    return MupMuonWithAdamW(
        torch.optim.Muon(muon, lr=lr, momentum=momentum, nesterov=nesterov) if muon else None,
        torch.optim.AdamW(adamw, lr=adam_lr, eps=eps, **kwargs) if adamw else None)
'''
