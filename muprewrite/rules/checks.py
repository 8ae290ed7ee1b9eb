"""What a rule claims, checked when it is loaded: its weight-decay convention holds for every
row, depth exponents are honoured where they are written, a custom file keeps its own id."""

from __future__ import annotations

import os
from pathlib import Path

from .rule import QUANTITIES, Exponents, Rule, error_at

__all__ = ["check_depth", "check_weight_decay", "check_unique", "expected_weight_decay"]


def check_depth(rule: Rule) -> None:
    """m_depth exponents mean nothing without a residual multiplier: a base of another depth
    is only matched under a rule with a [depth] section. With one, two kinds of them would
    never be applied, so they are refused rather than shown by ``rules show`` and dropped:
    on a forward ``multiplier`` (the residual branch multiplier m_L^-alpha is depth's forward
    factor) and on ``[role.output]`` (the readout reads the stream after the last block;
    m_L is 1 outside residual branches)."""
    for prefix, table in (("role", rule.roles), ("kind", rule.kinds)):
        for name, scaling in table.items():
            if scaling.multiplier.m_depth:
                raise error_at(rule.path, f"{prefix}.{name}.multiplier.m_depth",
                             "forward multipliers take no depth factor (apply and the emitted "
                             "source never apply it); depth scales the forward pass through "
                             "the residual branch multiplier m_L^-alpha",
                             "remove m_depth from the multiplier, and set [depth] alpha (or "
                             "the branch_multiplier base hyperparameter) instead")
    output = rule.roles.get("output")
    for quantity in QUANTITIES if output is not None else ():
        if getattr(output, quantity).m_depth:
            raise error_at(rule.path, f"role.output.{quantity}.m_depth",
                         "output parameters (the readout) lie outside the residual branches, "
                         "where m_L is 1: this exponent would never be applied",
                         "remove it; m_depth exponents act on parameters inside residual "
                         "branches (role input / hidden / fixed, kind bias / norm)")
    if rule.has_depth:
        return
    muon = {"muon": rule.muon} if rule.muon is not None else {}
    for prefix, rows in (("role", rule.roles), ("kind", rule.kinds), ("", muon)):
        for name, row in rows.items():
            for quantity in (("lr", "weight_decay") if prefix == "" else QUANTITIES):
                if getattr(row, quantity).m_depth:
                    raise error_at(rule.path, f"{prefix}.{name}.{quantity}.m_depth".lstrip("."),
                                 "m_depth exponents need a [depth] section",
                                 "add [depth] alpha = ... (the residual branch multiplier "
                                 "m_L^-alpha), or remove m_depth")


def _rows_with_lr(rule: Rule) -> list[tuple[str, Exponents, Exponents]]:
    """(key, lr, weight_decay) of every row, the [muon] row included."""
    rows = [(f"{prefix}.{name}.weight_decay", row.lr, row.weight_decay)
            for prefix, table in (("role", rule.roles), ("kind", rule.kinds))
            for name, row in table.items()]
    if rule.muon is not None:
        rows.append(("muon.weight_decay", rule.muon.lr, rule.muon.weight_decay))
    return rows


def _scaled(exps: Exponents, by: float) -> Exponents:
    return Exponents(exps.m_in * by + 0.0, exps.m_out * by + 0.0, exps.m_depth * by + 0.0)


def expected_weight_decay(rule: Rule, lr: Exponents) -> Exponents | None:
    """The weight-decay exponents the rule's convention and coupling imply for a row with
    these lr exponents (None: "custom", anything goes).

    The per-step decay of a parameter is lr*wd (coupled: torch's AdamW and Muon) or wd
    (independent). "constant-lr-wd" and "constant-timescale" keep the per-step decay, and so
    the EMA timescale 1/(lr*wd), as at base; "sqrt-width-wd" lets the per-step decay follow
    the square root of lr's factor (where lr ~ 1/m: coupled wd ~ sqrt(m)); "constant-wd"
    keeps wd itself."""
    convention = rule.weight_decay_convention
    if convention == "custom":
        return None
    if convention == "constant-wd":
        return Exponents()
    decay = Exponents() if convention in ("constant-lr-wd", "constant-timescale") else _scaled(lr, 0.5)
    if rule.weight_decay_coupling == "independent":
        return decay
    return Exponents(decay.m_in - lr.m_in + 0.0, decay.m_out - lr.m_out + 0.0,
                     decay.m_depth - lr.m_depth + 0.0)


def check_weight_decay(rule: Rule) -> None:
    """The declared convention must hold for every row (it is a claim, so check it)."""
    for key, lr, wd in _rows_with_lr(rule):
        want = expected_weight_decay(rule, lr)
        if want is not None and wd != want:
            depth = f", m_depth = {want.m_depth:g}" if want.m_depth else ""
            raise error_at(rule.path, key, f"weight_decay_convention "
                         f"{rule.weight_decay_convention!r} with {rule.weight_decay_coupling} "
                         f"weight decay needs weight_decay = {want} (lr is {lr}, weight_decay "
                         f"is {wd})",
                         f"set weight_decay = {{ m_in = {want.m_in:g}, m_out = {want.m_out:g}"
                         f"{depth} }}, or weight_decay_convention = \"custom\"")


def check_unique(rule: Rule, directory: Path) -> None:
    """A custom file may not take a shipped rule's id: emitted files record only the id."""
    shipped = directory / f"{rule.id}.toml"
    try:
        clash = shipped.is_file() and not os.path.samefile(rule.path, shipped)
    except OSError:
        clash = False
    if clash:
        raise error_at(rule.path, "id", f"{rule.id!r} is the id of the shipped rule {shipped}",
                     f'rename the file and its id, e.g. {rule.id}-custom.toml with id = '
                     f'"{rule.id}-custom"')
