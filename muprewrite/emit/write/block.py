"""The code the emitter adds to the user's file: constants, ``mup_init``, ``mup_param_groups``.

Everything here is text. The added code is plain PyTorch and works at any width: each factor
is ``m_in ** a * m_out ** b`` with ``m = size / base size`` of a parameter's fan axes, the
exponents being the rule's, so the same file trains the base proxy and the wide model. The
init is matched, parameter by parameter, to the RMS of a base model drawn with a fixed seed —
exactly what ``muprewrite.apply`` does with the base it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..cst.literals import comment_text, identifier, numbers_tuple, string, string_set
from ..cst.literals import number as _number
from ..plan.depth import DepthBlock
from ..plan.entries import Entry
from .depth_block import depth_constants, depth_functions
from .optimizer_block import Training, flag_comments, optimizer_functions
from .tuned_block import TunedBlock, patch

__all__ = ["render_block", "render_constants"]


def _width_axes_table(axes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """``MUP_WIDTH_AXES``: the axes of each parameter that grow with width."""
    out = ["# axes that grow with width, per parameter (layer index: *); every other axis keeps "
           "its base size", "MUP_WIDTH_AXES = {"]
    out += [f"    {string(name)}: {numbers_tuple(a)}," for name, a in axes.items()]
    return [*out, "}"]


def render_constants(rule: str, main: str, d_head: Mapping[str, int]) -> str:
    """The constants another file's edits use, defined there (importing them from the main
    file would be circular: the main file imports this one)."""
    if not d_head:
        return ""
    title = (f'# ---- muP (written by muprewrite, rule "{comment_text(rule)}"; the rest is in '
             f"{comment_text(main)}) ")
    out = ["", title + "-" * max(4, 90 - len(title)), ""]
    out += [f"{identifier(name)} = {_number(size)}  # head size at base width; the logits scale as 1/d_head from "
            "there" for name, size in d_head.items()]
    return "\n".join(out)


def render_block(*, rule: str, seed: int, base_call: str, entries: Mapping[str, Entry],
                 unused: Sequence[str], multipliers: Mapping[str, Mapping[str, str]],
                 d_head: Mapping[str, int], training: Training, imports: Sequence[str],
                 elsewhere: Sequence[tuple[str, int, str]] = (),
                 depth: DepthBlock | None = None, tuned: TunedBlock | None = None,
                 guard: tuple[Sequence[str], str] = ((), ""),
                 width_axes: Mapping[str, tuple[int, ...]] | None = None) -> str:
    """The module-level code added after the file's imports. ``training``: the optimizer
    the rule is for (``mup_param_groups``, ``mup_optimizer``); ``elsewhere``: (constant,
    size, file) of the head size constants that only other files use (defined there);
    ``depth``: under a depth rule, the residual blocks and branch hosts (``MUP_PARAMS`` is
    then keyed by the base's parameters, each with its m_L exponent); ``tuned``: the base
    hyperparameters, when the file is emitted with them (see ``tuned_block.py``); ``guard``: the
    table and the function with which ``mup_init`` refuses a head size that an unedited
    attention cannot take (see ``plan/head_guards.py``; width rules only); ``width_axes``: per
    parameter (the base's, under a depth rule) the axes that grow with width, every other
    axis held to its base size by ``mup_factors`` (None: no such check, for old callers)."""
    out = [*imports, "" if imports else None, "",
           f'# ---- muP (written by muprewrite, rule "{comment_text(rule)}") ' + "-" * 40, "",
           f"MUP_RULE = {string(rule)}",
           f"MUP_BASE_SEED = {_number(seed)}  # seed of the base init draw the init scale is matched to"]
    for name, size in d_head.items():
        out.append(f"{identifier(name)} = {_number(size)}  # head size at base width; the logits scale as 1/d_head "
                   "from there")
    for name, size, file in elsewhere:
        out.append(f"# {identifier(name)} = {_number(size)} (head size at base width) is defined in "
                   f"{comment_text(file)}, with "
                   "its attention")
    if tuned is not None:
        out += ["", *tuned.constants(), ""]
    if depth is None:
        out += ["# per parameter (layer index: *): fan-in axes, fan-out axes, and the exponents "
                "of", "# m_in, m_out (size / base size of those axes) of each factor the rule "
                "changes"]
    else:
        out += depth_constants(depth)
    out += flag_comments(training)
    out.append("MUP_PARAMS = {")
    out += [f"    {string(name)}: {entry.code()}," for name, entry in entries.items()]
    out.append("}")
    if unused:
        out.append("MUP_UNUSED = " + string_set(unused) + "  # never used "
                   "by forward: left as they are")
    else:
        out.append("MUP_UNUSED: set[str] = set()  # parameters forward never uses")
    out += ["# forward multipliers: module -> {attribute: parameter whose multiplier it holds}",
            "MUP_MULTIPLIERS = {"]
    for module, attrs in multipliers.items():
        inner = ", ".join(f"{string(identifier(a))}: {string(p)}" for a, p in attrs.items())
        out.append(f"    {string(module)}: {{{inner}}},")
    out.append("}")
    out += _width_axes_table(width_axes or {})
    middle = _WIDTH.format() if depth is None else depth_functions()
    parts = [_PREAMBLE.format(base_call=base_call)]
    if guard[1] and depth is None:
        out += guard[0]
        parts.append(guard[1])
        middle = middle.replace(_BUILDING, _BUILDING + "    _mup_check_head_sizes(model)\n")
    if tuned is not None:
        out += tuned.tables()
        parts.append(tuned.functions())
        middle = patch(middle, tuned, depth is not None)
    out.append("\n\n".join([*parts, middle, *optimizer_functions(training)]))
    return "\n".join(line for line in out if line is not None)


_BUILDING = '''        return  # this is the base model being built
'''
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


def _mup_check_axes(pairs) -> None:
    """Refuse a parameter whose size differs from its base partner's along an axis that does
    not grow with width (MUP_WIDTH_AXES): the factors measure width only, so another vocabulary,
    patch grid or option would be read as a width ratio. ``pairs``: (name, shape, base shape,
    its key in the tables)."""
    wrong = []
    for name, shape, base_shape, key in pairs:
        grows = MUP_WIDTH_AXES.get(key) or MUP_WIDTH_AXES.get(re.sub(r"(^|\\.)\\d+(?=\\.)", r"\\1*", key), ())
        wrong += [f"{{name}} axis {{a}}: {{shape[a]}} (base {{base_shape[a]}})"
                  for a in range(len(shape)) if a not in grows and shape[a] != base_shape[a]]
    if wrong:
        raise ValueError(
            f"muP: the model differs from its base (mup_base_model()) along axes that do not grow "
            f"with width: {{'; '.join(wrong[:5])}}; muP's factors account for width only, so "
            "build the model with the base's other sizes and options (vocabulary, image and "
            "patch size, pooling), or emit the file again from a --base that has them")
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
    _mup_check_axes((name, p.shape, base_shapes[name], name) for name, p in model.named_parameters())
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
