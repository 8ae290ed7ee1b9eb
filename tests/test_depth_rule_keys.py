"""m_depth exponents a depth rule would never apply are refused when the rule is loaded.

``apply`` multiplies forward multipliers by m_in / m_out factors only (depth's forward factor
is the residual branch multiplier m_L^-alpha), and m_L is 1 outside residual branches, where
the readout (role output) always lies. A custom rule with m_depth on either was printed by
``rules show`` and silently dropped; now the load fails naming the file, the key and a fix.
Exponents that are applied (inside branches: input, hidden, fixed, biases, norms) still load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from muprewrite.cli.main import cli
from muprewrite.rules import RULES_DIR, RuleError, load_rule

COMPLETEP = (RULES_DIR / "completep.toml").read_text().replace(
    'id = "completep"', 'id = "custom"').replace(
    'weight_decay_convention = "constant-lr-wd"', 'weight_decay_convention = "custom"')


def _rule(tmp_path: Path, section: str, line: str) -> Path:
    """completep with ``line`` in ``[section]``, in place of that quantity's own line (the
    section added when it is not there)."""
    quantity = line.split(" = ")[0]
    head = f"[{section}]\n"
    if head in COMPLETEP:
        start = COMPLETEP.index(head) + len(head)
        end = COMPLETEP.find("\n[", start)
        end = len(COMPLETEP) if end < 0 else end
        body = [row for row in COMPLETEP[start:end].split("\n")
                if not row.startswith(f"{quantity} = ")]
        text = COMPLETEP[:start] + "\n".join([line, *body]) + COMPLETEP[end:]
    else:
        text = f"{COMPLETEP}\n{head}{line}\n"
    path = tmp_path / "custom.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("section, line, key", [
    ("role.hidden", "multiplier = { m_depth = -1 }", "role.hidden.multiplier.m_depth"),
    ("role.output", "multiplier = { m_in = -1, m_depth = -0.5 }",
     "role.output.multiplier.m_depth"),
    ("kind.norm", "multiplier = { m_depth = 1 }", "kind.norm.multiplier.m_depth"),
    ("role.output", "lr = { m_depth = -1 }", "role.output.lr.m_depth"),
    ("role.output", "weight_decay = { m_depth = 0.5 }", "role.output.weight_decay.m_depth"),
])
def test_an_m_depth_apply_would_drop_is_refused(tmp_path: Path, section: str, line: str,
                                                key: str) -> None:
    path = _rule(tmp_path, section, line)
    with pytest.raises(RuleError) as info:
        load_rule(path)
    text = str(info.value)
    assert str(path) in text and key in text and info.value.fix, text
    shown = CliRunner().invoke(cli, ["rules", "show", str(path)])
    assert shown.exit_code != 0 and key in shown.output, shown.output


@pytest.mark.parametrize("section, line", [
    ("role.fixed", "lr = { m_depth = -1 }"),  # a fixed-size table inside attention
    ("role.input", "lr = { m_depth = -1 }"),  # adaLN's conditioning projection
    ("kind.bias", "weight_decay = { m_depth = 1 }"),
])
def test_an_m_depth_inside_branches_still_loads(tmp_path: Path, section: str,
                                                line: str) -> None:
    assert load_rule(_rule(tmp_path, section, line)).has_depth
