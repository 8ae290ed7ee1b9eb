"""rules/: every shipped file validates, malformed files are named precisely, and the mup
rules agree with the mup package (MuAdamW / MuSGD groups, MuReadout, its init)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from muprewrite import analyze
from muprewrite.cli.main import cli
from muprewrite.rules import RULES_DIR, RuleError, available_rules, load_rule


def test_shipped_rules_load() -> None:
    assert {"mup", "mup-absorbed", "mup-sgd", "sp"} <= set(available_rules())
    for name in available_rules():
        rule = load_rule(name)
        assert rule.id == name and rule.doc["references"] and rule.weight_decay_convention


MUP = (RULES_DIR / "mup.toml").read_text()


@pytest.mark.parametrize(("edit", "needles"), [
    (lambda s: s.replace("lr = { m_in = -1 }", 'lr = { m_in = "-1" }'),
     ["role.hidden.lr.m_in", "a number", "str"]),
    (lambda s: s.replace("lr = { m_in = -1 }", "learning_rate = { m_in = -1 }"),
     ["role.hidden.learning_rate", "a quantity"]),
    (lambda s: s.replace("[role.output]", "[role.readout]"), ["role.readout", "a role"]),
    (lambda s: s.replace('status = "stable"', 'status = 3'), ["'status'", "one of", "int"]),
    (lambda s: s.replace('id = "mup"', 'id = "other"'), ["'id'", "stem"]),
    (lambda s: s.replace("weight_decay = { m_in = 1 }", "weight_decay = { m_in = 2 }"),
     ["role.hidden.weight_decay", "constant-lr-wd"]),
    (lambda s: s.replace("[doc]", "[docs]"), ["'docs'"]),
    (lambda s: s.replace('title = "', 'title = '), ["not valid TOML"]),
])
def test_malformed_rule_names_file_key_and_type(tmp_path: Path, edit, needles) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "mup.toml"
    path.write_text(edit(MUP))
    with pytest.raises(RuleError) as info:
        load_rule(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_cli_lists_and_shows_rules() -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["rules", "list"])
    assert listed.exit_code == 0 and all(n in listed.output for n in available_rules())
    shown = runner.invoke(cli, ["rules", "show", "mup"])
    assert shown.exit_code == 0
    assert "role hidden  m_in^-0.5" in shown.output and "References:" in shown.output
    missing = runner.invoke(cli, ["rules", "show", "nope"])
    assert missing.exit_code != 0 and "one of: completep, depth-mup, mup," in missing.output


# ---- the mup package as an oracle ---------------------------------------------------------


def _mlp(width: int, readout: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         readout(width, 10))


def _mup_groups(optimizer: str, width: int, base: int) -> dict[str, tuple[float, float]]:
    mup = pytest.importorskip("mup")
    model = _mlp(width, mup.MuReadout)
    mup.set_base_shapes(model, _mlp(base, mup.MuReadout))
    opt_cls = {"adam": mup.MuAdamW, "sgd": mup.MuSGD}[optimizer]
    opt = opt_cls(model.parameters(), lr=1.0, weight_decay=1.0)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize(("rule_name", "optimizer"), [("mup", "adam"), ("mup-sgd", "sgd")])
def test_lr_and_weight_decay_match_mup_optimizers(rule_name: str, optimizer: str) -> None:
    expected = _mup_groups(optimizer, width=256, base=64)
    report = analyze(_mlp(256, nn.Linear), torch.randn(2, 16), base=_mlp(64, nn.Linear))
    rule = load_rule(rule_name)
    ours = {}
    for p in report:
        row = rule.scaling(p.role, p.kind)
        ours[p.name] = (row.lr.factor(p.m_in, p.m_out), row.weight_decay.factor(p.m_in, p.m_out))
    assert set(ours) == set(expected)
    for name, (lr, wd) in expected.items():
        assert ours[name] == (pytest.approx(lr), pytest.approx(wd)), name


def test_output_multiplier_and_init_match_mup_readout() -> None:
    mup = pytest.importorskip("mup")
    wide, base = _mlp(1024, mup.MuReadout), _mlp(64, mup.MuReadout)
    mup.set_base_shapes(wide, base)  # rescales MuReadout's init as mup does
    mup.set_base_shapes(base, base)
    report = analyze(_mlp(1024, nn.Linear), torch.randn(2, 16), base=_mlp(64, nn.Linear))
    rule = load_rule("mup")
    readout = report["4.weight"]
    multiplier = rule.scaling(readout.role, readout.kind).multiplier
    assert multiplier.factor(readout.m_in, readout.m_out) == pytest.approx(1 / wide[4].width_mult())
    for name in ("2.weight", "4.weight"):  # measured init std ratio, wide over base
        info = report[name]
        ratio = (dict(wide.named_parameters())[name].detach().std()
                 / dict(base.named_parameters())[name].detach().std())
        want = rule.scaling(info.role, info.kind).init.factor(info.m_in, info.m_out)
        assert float(ratio) == pytest.approx(want, rel=0.1), name
