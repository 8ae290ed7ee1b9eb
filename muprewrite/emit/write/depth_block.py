"""The emitted block under a depth rule (CompleteP, depth-muP): m_L measured at run time.

The file stays width- and depth-general. ``MUP_BLOCKS`` names the residual blocks (layer
index ``*``); m_L is the number of the model's modules matching them over the base's.
``mup_partners`` pairs each parameter with the base's (by position in the blocks, see
``plan/runtime.py``), ``MUP_PARAMS`` is keyed by the base's parameters and carries an m_L exponent
and whether the parameter lies inside a residual branch, and ``mup_init`` sets
``mup_branch_multiplier = m_L ** -alpha`` on every module matching ``MUP_BRANCH_HOSTS``
(the modules whose forward holds a residual add, edited to
``x = x + self.mup_branch_multiplier * f(x)``). As ``muprewrite.apply`` does, a parameter
inside a branch is rescaled to its base partner's init RMS even at equal shape when m_L != 1
(a depth-dependent init, GPT-2's c_proj std 0.02/sqrt(2 n_layer), is undone: the branch
multiplier takes its place).
"""

from __future__ import annotations

import inspect

from ..cst.literals import strings_tuple
from ..find.sites import BRANCH_ATTRIBUTE
from ..plan.depth import DepthBlock
from ..plan.runtime import SOURCES

__all__ = ["depth_constants", "depth_functions"]


def depth_constants(depth: DepthBlock) -> list[str]:
    """The depth constants and the comment that opens ``MUP_PARAMS``."""
    return [
        f"MUP_DEPTH_ALPHA = {float(depth.alpha)!r}  # each residual branch is added as x + m_L ** "
        "-MUP_DEPTH_ALPHA * f(x)",
        "# the residual blocks (layer index: *): m_L = the model's blocks / the base's",
        f"MUP_BLOCKS = {strings_tuple(depth.blocks)}",
        f"# the modules whose forward adds residual branches (their {BRANCH_ATTRIBUTE})",
        f"MUP_BRANCH_HOSTS = {strings_tuple(depth.hosts)}",
        "# per parameter of the base (layer index: *): fan-in axes, fan-out axes, whether it lies",
        "# inside a residual branch, and the exponents of m_in, m_out (size / base size of those",
        "# axes) and m_L of each factor the rule changes; a model parameter takes its base",
        "# partner's entry (mup_partners)",
    ]


def depth_functions() -> str:
    """``mup_partners``, ``mup_depth_ratio``, ``mup_factors`` and ``mup_init`` (with the
    helpers of ``plan/runtime.py`` they call)."""
    helpers = "\n\n".join(inspect.getsource(f).rstrip("\n") + "\n" for f in SOURCES)
    return helpers + "\n\n" + _FUNCTIONS


_FUNCTIONS = '''def mup_partners(model: torch.nn.Module, base: torch.nn.Module) -> dict[str, str]:
    """Each model parameter's partner in the base (its blocks paired by position)."""
    return _mup_pair(model, base, MUP_BLOCKS)


def mup_depth_ratio(model: torch.nn.Module, base: torch.nn.Module) -> float:
    """m_L: the model's residual blocks (modules matching MUP_BLOCKS) / the base's."""
    ours = sum(map(len, _mup_blocks(model, MUP_BLOCKS).values()))
    theirs = sum(map(len, _mup_blocks(base, MUP_BLOCKS).values()))
    if not ours or not theirs:
        raise ValueError(
            f"muP: the model has {ours} and its base {theirs} residual blocks (modules named "
            f"like {', '.join(MUP_BLOCKS)}), so m_L cannot be measured; build the model from "
            "the class the file was emitted for")
    return ours / theirs


def mup_factors(model: torch.nn.Module, base: torch.nn.Module) -> dict[str, dict[str, float]]:
    """Per parameter, the factor on each quantity (init, multiplier, lr, eps, weight_decay)."""
    partners = mup_partners(model, base)
    base_params = dict(base.named_parameters())
    ours = dict(model.named_parameters())
    unmatched = sorted(n for n, ref in partners.items() if ref not in base_params
                       or ours[n].dim() != base_params[ref].dim())
    unmatched += sorted(set(base_params) - set(partners.values()))
    if unmatched:  # a parameter with no partner in the base has no muP factor
        raise ValueError(
            f"muP: the model and its base (mup_base_model()) differ in {len(unmatched)} "
            f"parameter(s), e.g. {', '.join(unmatched[:10])}; build the model with the base's "
            "structure (heads layout, options), changing only its width and number of blocks")
    _mup_check_axes((name, p.shape, base_params[partners[name]].shape, partners[name])
                    for name, p in ours.items())
    m_depth = mup_depth_ratio(model, base)
    factors = {}
    for name, p in ours.items():
        entry = _mup_entry(partners[name])
        if entry is None or partners[name] in MUP_UNUSED:
            continue
        fan_in, fan_out, in_branch, exponents = entry
        shape = base_params[partners[name]].shape
        m_in = m_out = 1.0
        for a in fan_in:
            if shape[a]:
                m_in *= p.shape[a] / shape[a]
        for a in fan_out:
            if shape[a]:
                m_out *= p.shape[a] / shape[a]
        m_l = m_depth if in_branch else 1.0
        factors[name] = {q: float(m_in**e_in * m_out**e_out * m_l**e_l)
                         for q, (e_in, e_out, e_l) in exponents.items()}
    return factors


def mup_init(model: torch.nn.Module) -> None:
    """Put a freshly initialised model into muP: match each parameter's init RMS to the rule's
    factor x its base partner's, and set the forward and residual branch multipliers. A model
    built on the meta device: call mup_init(model) again after to_empty() and your own init."""
    global _MUP_BUILDING_BASE
    if _MUP_BUILDING_BASE:
        return  # this is the base model being built
    _MUP_BUILDING_BASE = True
    try:
        base = mup_base_model()
    finally:
        _MUP_BUILDING_BASE = False
    model.mup_factors = mup_factors(model, base)
    partners, m_depth = mup_partners(model, base), mup_depth_ratio(model, base)
    base_params = dict(base.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            ref, entry = base_params[partners[name]], _mup_entry(partners[name])
            deeper = entry is not None and entry[2] and m_depth != 1.0  # undo a depth-dependent init
            if (ref.shape == p.shape and not deeper) or not p.requires_grad or p.is_meta:
                continue
            if partners[name] in MUP_UNUSED or (rms := _mup_rms(p)) == 0.0:
                continue  # zero init stays zero
            p.mul_(model.mup_factors.get(name, {}).get("init", 1.0) * _mup_rms(ref) / rms)
    hosts = [re.compile(re.escape(h).replace(r"\\*", r"\\d+")) for h in MUP_BRANCH_HOSTS]
    for path, module in model.named_modules():
        if any(h.fullmatch(path) for h in hosts):
            module.mup_branch_multiplier = m_depth ** -MUP_DEPTH_ALPHA
    for path, attributes in MUP_MULTIPLIERS.items():
        for attribute, name in attributes.items():
            factor = model.mup_factors.get(name, {}).get("multiplier", 1.0)
            setattr(model.get_submodule(path), attribute, factor)
'''
