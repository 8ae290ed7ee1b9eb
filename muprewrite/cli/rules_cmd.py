"""``muprewrite rules list`` and ``muprewrite rules show NAME`` (NAME: a rule or a .toml path)."""

from __future__ import annotations

import textwrap

import click

from .. import rules
from ..analysis.hparams_view import render_hparams_table
from ..errors import MuprewriteError
from ..rules import QUANTITIES, ROLES, Rule, RuleError, available_rules, load_rule
from ..rules.hparams import DEFAULT_HPARAMS, HParams, from_option

__all__ = ["rules_group"]


@click.group("rules")
def rules_group() -> None:
    """List and explain the parametrization rules (files in rules/).

    Wherever a rule is accepted (--rule of emit and coord-check, `rules show`), give a name
    from rules/ (e.g. mup) or the path of your own rule file, ending in .toml:
    --rule path/to/my-rule.toml. A rule file is TOML, UTF-8, at most 1 MiB:

    \b
      id = "my-rule"                  # the file name without .toml: [a-z0-9][a-z0-9-]*
      title = "My muP variant"        # one line, <= 200 characters
      status = "experimental"         # or "stable"
      optimizer = "adam"              # or "sgd"
      attention = "inverse"           # or "unchanged"
      weight_decay_convention = "constant-lr-wd"  # or "constant-wd", "custom"
      [doc]                           # what, when, example, known_problems: texts
      what = "..."                    # references: a list of one-line strings
      [role.hidden]                   # roles: input, hidden, output, fixed
      init = { m_in = -0.5 }          # quantities: init, multiplier, lr, eps, weight_decay
      lr = { m_in = -1 }
      weight_decay = { m_in = 1 }
      [kind.bias]                     # kinds (override the role's row): weight, bias,
      lr = { m_out = 1 }              #   norm, embedding, table
      weight_decay = { m_out = -1 }   # constant-lr-wd: weight_decay = -lr, checked

    Each factor is m_in^x * m_out^y (m = size / base size of that axis); a missing exponent
    is 0. Exponents are finite numbers with |x| <= 4. Unknown keys are refused at every level,
    and every error names the file and key with a fix. The id may not be a shipped rule's.
    """


@rules_group.command("list")
def list_cmd() -> None:
    """One line per rule: id, status, optimizer, title."""
    rows = []
    for name in available_rules(rules.RULES_DIR):
        try:
            rule = load_rule(name, rules.RULES_DIR)
            rows.append((rule.id, rule.status, rule.optimizer, rule.title))
        except RuleError as exc:
            shown = name if name.isprintable() else ascii(name)
            rows.append((shown, "invalid", "-", exc.one_line()))
    if not rows:
        raise click.ClickException(f"no rule files (*.toml) in {rules.RULES_DIR}")
    width = max(len(r[0]) for r in rows)
    for rid, status, optimizer, title in rows:
        click.echo(f"{rid.ljust(width)}  {status:<12} {optimizer:<5} {title}")


@rules_group.command("show")
@click.argument("name")
@click.option("--hparams", "hparams_text", metavar="CARD|NAME=VALUE,...",
              help="Show these base hyperparameters (a card, or e.g. output_multiplier=2) "
                   "beside the rule's exponents.")
def show_cmd(name: str, hparams_text: str | None) -> None:
    """Explain a rule (a name, or a path to a .toml file): what, when, exponents, the base
    hyperparameters tuned on the proxy, references."""
    try:
        rule = load_rule(name)
        hparams = from_option(hparams_text) if hparams_text else HParams()
    except MuprewriteError as exc:
        raise click.ClickException(exc.one_line()) from None
    click.echo(render_rule(rule, hparams))


def render_rule(rule: Rule, hparams: HParams = DEFAULT_HPARAMS) -> str:
    vectors = "; none on vector-like parameters" if rule.vector_weight_decay == "none" else ""
    lines = [f"{rule.id}: {rule.title}", f"status: {rule.status}; optimizer: {rule.optimizer}; "
             f"weight decay: {rule.weight_decay_convention} ({rule.weight_decay_coupling}"
             f"{vectors}); attention logits: "
             + ("x sqrt(d_head_base)/d_head where d_head grows" if rule.attention == "inverse"
                else "unchanged")
             + ("; residual branches: x + m_L^-" + f"{rule.depth_alpha:g} F(x) (depth rule)"
                if rule.depth_alpha is not None else "; width only")]
    for key, title in (("what", "What it does"), ("when", "When to use it"),
                       ("example", "Example"), ("known_problems", "Known problems")):
        lines += ["", f"{title}:", textwrap.indent(textwrap.fill(
            " ".join(rule.doc[key].split()), 88), "  ")]
    header = ("row",) + QUANTITIES
    rows = [(f"role {r}",) + tuple(str(getattr(rule.scaling(r, "-"), q)) for q in QUANTITIES)
            for r in ROLES]
    rows += [(f"kind {k}",) + tuple(str(getattr(s, q)) for q in QUANTITIES)
             for k, s in rule.kinds.items()]
    if rule.muon is not None:  # the hidden 2-D weights Muon steps: its lr and weight decay
        hidden = rule.scaling("hidden", "weight")
        rows.append(("Muon (hidden 2-D)", str(hidden.init), str(hidden.multiplier),
                     str(rule.muon.lr), "-", str(rule.muon.weight_decay)))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines += ["", "Factors relative to base width (m = size / base size)"
              + (", and depth (m_L = blocks / base blocks, for parameters inside residual "
                 "branches only):" if rule.has_depth else ":")]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
              for row in [header, *rows]]
    if rule.muon is not None:
        lines += [f"  Muon rows are for torch.optim.Muon with adjust_lr_fn="
                  f"{rule.muon.adjust_lr_fn!r}; every other parameter is stepped by AdamW."]
    lines += ["", render_hparams_table(hparams, "Base hyperparameters (tuned on the proxy, "
                                       "constant across width; each multiplies the factors "
                                       "above; 1 = the rule alone):")]
    lines += ["", "References:"] + [f"  - {ref}" for ref in rule.doc["references"]]
    return "\n".join(lines)
