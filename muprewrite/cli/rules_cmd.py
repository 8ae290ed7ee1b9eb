"""``muprewrite rules list`` and ``muprewrite rules show NAME``."""

from __future__ import annotations

import textwrap

import click

from ..rules import QUANTITIES, ROLES, Rule, RuleError, available_rules, load_rule

__all__ = ["rules_group"]


@click.group("rules")
def rules_group() -> None:
    """List and explain the parametrization rules (files in rules/)."""


@rules_group.command("list")
def list_cmd() -> None:
    """One line per rule: id, status, optimizer, title."""
    rows = []
    for name in available_rules():
        try:
            rule = load_rule(name)
            rows.append((rule.id, rule.status, rule.optimizer, rule.title))
        except RuleError as exc:
            rows.append((name, "invalid", "-", exc.one_line()))
    width = max(len(r[0]) for r in rows)
    for rid, status, optimizer, title in rows:
        click.echo(f"{rid.ljust(width)}  {status:<12} {optimizer:<5} {title}")


@rules_group.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Explain one rule: what it does, when to use it, its exponent table, references."""
    try:
        rule = load_rule(name)
    except RuleError as exc:
        raise click.ClickException(exc.one_line()) from None
    click.echo(render_rule(rule))


def render_rule(rule: Rule) -> str:
    lines = [f"{rule.id}: {rule.title}", f"status: {rule.status}; optimizer: {rule.optimizer}; "
             f"weight decay: {rule.weight_decay_convention}; attention logits: "
             + ("x sqrt(d_head_base)/d_head where d_head grows" if rule.attention == "inverse"
                else "unchanged")]
    for key, title in (("what", "What it does"), ("when", "When to use it"),
                       ("example", "Example"), ("known_problems", "Known problems")):
        lines += ["", f"{title}:", textwrap.indent(textwrap.fill(
            " ".join(rule.doc[key].split()), 88), "  ")]
    header = ("row",) + QUANTITIES
    rows = [(f"role {r}",) + tuple(str(getattr(rule.scaling(r, "-"), q)) for q in QUANTITIES)
            for r in ROLES]
    rows += [(f"kind {k}",) + tuple(str(getattr(s, q)) for q in QUANTITIES)
             for k, s in rule.kinds.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines += ["", "Factors relative to base width (m = size / base size):"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
              for row in [header, *rows]]
    lines += ["", "References:"] + [f"  - {ref}" for ref in rule.doc["references"]]
    return "\n".join(lines)
