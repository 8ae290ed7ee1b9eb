"""The sizes ``muprewrite check`` runs at: the user's ``--model`` specs, and the widths and
depths it adds so that one check is never all it runs.

A factor that is right at one width can be wrong at another (a deleted factor is invisible at
the base, where every factor is 1; a factor wrong above some width passes below it). So the
check runs at least two widths above the base, one of them not a power-of-two multiple, and
under a depth rule at least two depths other than the base's. The specs are derived from the
user's: the integer arguments in which a ``--model`` call differs from the base call (parsed
with ``ast``, never evaluated) are the width (and, when a lone change of one of them adds
parameters, the depth); the width arguments are scaled together by one factor (so that a
number of heads that grew with the width keeps growing, and one that stayed, stays) and each
derived call is built on the meta device before it is used. What cannot be derived is said
in the verdict (``SourceCheck.notes``), never skipped silently; a check whose every
``--model`` is at the base width is refused.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from types import ModuleType

from ..errors import MuprewriteError
from ..spec import build_model
from .check_report import CheckError

__all__ = ["Plan", "plan_sizes"]

_WIDTH_FACTORS = (1.5, 3.0, 2.5, 5.0, 6.0, 1.25, 7.0)  # not powers of two; smallest first


@dataclass
class Plan:
    derived: list[str] = field(default_factory=list)  # specs added, in order
    notes: list[str] = field(default_factory=list)  # what could not be added, and why


def _shapes(user: ModuleType, text: str) -> dict[str, tuple[int, ...]] | None:
    """Parameter shapes of ``text`` built on the meta device, or on the CPU where the
    constructor cannot run on meta (it reads a value: ``.item()``); None if it does not build."""
    for device in ("meta", "cpu"):
        try:
            model = build_model(user, text, "a derived --model", device=device)
        except MuprewriteError:
            continue
        return {n: tuple(p.shape) for n, p in model.named_parameters()}
    return None


def _leaves(node: ast.AST) -> list[tuple[int, ast.Constant]]:
    """The integer constants of a call, in a fixed order (index, node)."""
    found = [n for n in ast.walk(node) if isinstance(n, ast.Constant)
             and type(n.value) is int]
    return list(enumerate(found))


def _int(node: ast.Constant) -> int:
    value = node.value
    return value if isinstance(value, int) else 0


def _skeleton(node: ast.AST) -> str:
    """The call with every integer blanked: two calls with the same skeleton differ only in
    integers."""
    copy = ast.parse(ast.unparse(node), mode="eval")
    for n in ast.walk(copy):
        if isinstance(n, ast.Constant) and type(n.value) is int:
            n.value = 0
    return ast.dump(copy)


def _with(base: str, values: dict[int, int]) -> str:
    tree = ast.parse(base, mode="eval")
    for i, leaf in _leaves(tree):
        if i in values:
            leaf.value = values[i]
    return ast.unparse(tree)


def _diffs(base: str, spec: str) -> dict[int, tuple[int, int]] | None:
    """leaf index -> (base value, spec value) where they differ; None: not the same call."""
    try:
        a, b = ast.parse(base.strip(), mode="eval"), ast.parse(spec.strip(), mode="eval")
    except SyntaxError:
        return None
    if _skeleton(a) != _skeleton(b):
        return None
    return {i: (_int(x), _int(y)) for (i, x), (_j, y)
            in zip(_leaves(a), _leaves(b)) if x.value != y.value}


def _power_of_two(ratio: float) -> bool:
    exponent = math.log2(ratio) if ratio > 0 else 0.5
    return abs(exponent - round(exponent)) < 1e-9


def plan_sizes(user: ModuleType, base: str, models: list[str], depth_rule: bool) -> Plan:
    """The specs to add to ``models``, and the notes on what could not be added."""
    plan = Plan()
    ref = _shapes(user, base)
    if ref is None:
        return plan  # the check itself reports the base
    wider: list[str] = []
    depths: set[str] = set()
    widths: set[float] = set()
    depth_leaves: set[int] = set()
    width_leaves: dict[int, float] = {}
    for spec in models:
        shapes = _shapes(user, spec)
        if shapes is None:
            continue  # the check reports it
        if any(n in ref and ref[n] != s for n, s in shapes.items()):
            wider.append(spec)
        diffs = _diffs(base, spec) or {}
        for i, (_b, m) in diffs.items():
            alone = _shapes(user, _with(base, {i: m}))
            if alone is not None and set(alone) != set(ref):
                depth_leaves.add(i)
        spec_width = {i: m / b for i, (b, m) in diffs.items() if i not in depth_leaves and b}
        if spec_width and spec in wider:
            width_leaves = width_leaves or spec_width
            widths.update(round(r, 9) for r in set(spec_width.values()))
        if set(shapes) != set(ref):
            depths.add(spec)
    if not wider:
        raise CheckError(f"every --model is at the base width ({base}): every width factor "
                         "is 1 there, so a deleted one cannot show",
                         fix="pass a --model wider than the base, e.g. twice its width")
    ratios = set(width_leaves.values())
    if len(ratios) != 1:
        plan.notes.append(
            f"checked at {len(wider)} width(s) given; no other width derived from "
            f"{models[0]} (its width arguments do not grow by one factor): pass a second "
            "--model, e.g. at 1.5x or 3x the base width")
        return plan
    leaf_ratio = ratios.pop()
    base_tree = ast.parse(base, mode="eval")
    base_values = {i: _int(leaf) for i, leaf in _leaves(base_tree)}
    # every derived width is a factor of _WIDTH_FACTORS, none a power of two: one is added
    # when the widths given are all powers of two, so that a factor right only there fails
    odd = any(not _power_of_two(r) for r in widths)
    need_widths = max(2 - len(wider), 0 if odd else 1)
    new_widths = _widths(user, base, ref, base_values, width_leaves, leaf_ratio,
                         need_widths, widths)
    if len(wider) + len(new_widths) < 2:
        plan.notes.append(f"checked at {len(wider) + len(new_widths)} width(s) only: no "
                          "other width builds; pass a second --model")
    if not odd and not new_widths:
        plan.notes.append("every width checked is a power-of-two multiple of the base (no "
                          "other width builds); a factor wrong only at other widths would not "
                          "show: add a --model at 1.5x or 3x the base width")
    extra_depths: list[int] = []
    depth_leaf = None
    if depth_rule:
        depth_leaf, extra_depths = _depths(user, base, ref, base_values, depth_leaves, models,
                                           plan)
    count = max(len(new_widths), len(extra_depths))
    first_wide = {i: round(base_values[i] * r) for i, r in width_leaves.items()}
    for n in range(count):
        values = dict(new_widths[n] if n < len(new_widths) else first_wide)
        if depth_leaf is not None and n < len(extra_depths):
            values[depth_leaf] = extra_depths[n]
        spec = _with(base, values)
        if _shapes(user, spec) is not None:
            plan.derived.append(spec)
    return plan


def _widths(user: ModuleType, base: str, ref: dict[str, tuple[int, ...]],
            base_values: dict[int, int], leaves: dict[int, float], ratio: float, count: int,
            taken: set[float]) -> list[dict[int, int]]:
    out: list[dict[int, int]] = []
    for factor in _WIDTH_FACTORS:
        if len(out) >= count:
            break
        if any(abs(factor - t) < 1e-9 for t in taken):
            continue
        # every width argument the user's --model scaled, by the same factor
        values = {i: base_values[i] * factor for i in leaves}
        if any(abs(v - round(v)) > 1e-9 for v in values.values()):
            continue
        ints = {i: round(v) for i, v in values.items()}
        shapes = _shapes(user, _with(base, ints))
        if shapes is not None and set(shapes) == set(ref):
            out.append(ints)
    return out


def _depths(user: ModuleType, base: str, ref: dict[str, tuple[int, ...]],
            base_values: dict[int, int], found: set[int], models: list[str], plan: Plan
            ) -> tuple[int | None, list[int]]:
    """The depth argument and up to two depths to add (neither the base's nor a given one)."""
    leaves = found or {i for i, v in base_values.items() if v >= 1
                       and (s := _shapes(user, _with(base, {i: v + 1}))) is not None
                       and set(s) != set(ref)}
    if len(leaves) != 1:
        plan.notes.append("under a depth rule, no depth argument could be told apart in "
                          f"{base}: pass two --model at depths other than the base's")
        return None, []
    leaf = next(iter(leaves))
    given = set()
    for spec in models:
        diffs = _diffs(base, spec) or {}
        if leaf in diffs:
            given.add(diffs[leaf][1])
    need = max(0, 2 - len(given - {base_values[leaf]}))
    b = base_values[leaf]
    out: list[int] = []
    for d in (b + 1, b + 2, 2 * b + 1, 3 * b):
        if len(out) >= need:
            break
        if d == b or d in given or d in out:
            continue
        if _shapes(user, _with(base, {leaf: d})) is not None:
            out.append(d)
    if len(out) < need:
        plan.notes.append(f"checked at {len(given) + len(out)} depth(s) other than the base's "
                          "only: pass a --model at another depth")
    return leaf, out
