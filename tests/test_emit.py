"""Source emission: exact before/after per rewrite kind, the CLI contract, and bad input.

The equivalence of emitted files with ``muprewrite.apply`` on every example is in
tests/test_emit_examples.py.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from muprewrite.cli.main import cli
from muprewrite.emit import EmitError, emit, is_emitted

NET = '''import torch
import torch.nn.functional as F
from torch import nn


class Attn(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)
        return y.transpose(1, 2).reshape(B, N, D)


class Net(nn.Module):
    """A tiny attention net."""

    def __init__(self, width=32, heads=2):
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.attn = Attn(width, heads)
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        h = self.attn(self.inp(x))
        return self.out(h)  # logits

    def example_inputs(self):
        return (torch.randn(2, 5, 8),)
'''
WIDE, BASE = "Net(width=64, heads=2)", "Net(width=32, heads=2)"  # d_head grows: 16 -> 32


def _emit(tmp_path: Path, source: str, model: str = WIDE, base: str = BASE) -> str:
    path = tmp_path / "net.py"
    path.write_text(source)
    return emit(path, model, base).source


def _changed(before: str, after: str) -> list[tuple[str, str]]:
    """(old, new) line pairs of every replaced line; added lines are left out."""
    pairs = []
    a, b = before.splitlines(), after.splitlines()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "replace":
            pairs += list(zip(a[i1:i2], b[j1:j2]))
        elif op == "delete":
            pairs += [(line, "") for line in a[i1:i2]]
    return pairs


def test_each_edit_in_place_and_every_other_line_kept(tmp_path: Path) -> None:
    out = _emit(tmp_path, NET)
    assert _changed(NET, out) == [
        ("        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)",
         "        y = F.scaled_dot_product_attention(q, k, v, scale=MUP_D_HEAD_BASE ** 0.5 / "
         "q.shape[-1])  # (B, H, N, Dh)"),
        ("        return self.out(h)  # logits",
         "        return self.out(h * self.mup_out_multiplier)  # logits"),
    ]
    net = out[out.index("class Net(nn.Module):"):]
    assert net.startswith('''class Net(nn.Module):
    """A tiny attention net."""
    mup_out_multiplier = 1.0  # muP forward multiplier, set per instance by mup_init()

    def __init__(self, width=32, heads=2):
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.attn = Attn(width, heads)
        self.out = nn.Linear(width, 3)
        mup_init(self)  # muP: init scale and forward multipliers

    def forward(self, x):''')
    assert out.startswith('# muprewrite: muP version of net.py (rule "mup": ')
    block = out[out.index("from torch import nn\n"):out.index("class Attn")]
    assert "import re\n" in block and 'MUP_RULE = "mup"' in block
    assert "MUP_D_HEAD_BASE = 16" in block and '"": {"mup_out_multiplier": "out.weight"}' in block
    assert '"attn.qkv.weight": ((1,), (0,), {"init": (-0.5, 0.0), "lr": (-1.0, 0.0), ' \
           '"weight_decay": (1.0, 0.0)})' in block
    assert is_emitted(out) and not is_emitted(NET)


@pytest.mark.parametrize("call, expected", [
    ("F.scaled_dot_product_attention(q, k, v, scale=0.5)",
     "F.scaled_dot_product_attention(q, k, v, scale=0.5 * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5)"),
    ("F.scaled_dot_product_attention(q, k, v, scale=1 / 8)",
     "F.scaled_dot_product_attention(q, k, v, scale=(1 / 8) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5)"),
    ("F.scaled_dot_product_attention(query=q, key=k, value=v)",
     "F.scaled_dot_product_attention(query=q, key=k, value=v, scale=MUP_D_HEAD_BASE ** 0.5 / q.shape[-1])"),
], ids=["scale-given", "scale-expression", "keywords"])
def test_attention_scale_forms(tmp_path: Path, call: str, expected: str) -> None:
    src = NET.replace("F.scaled_dot_product_attention(q, k, v)", call)
    (old, new), _readout = _changed(src, _emit(tmp_path, src))
    assert old == f"        y = {call}  # (B, H, N, Dh)" and new == f"        y = {expected}  # (B, H, N, Dh)"


def test_attention_scale_on_a_call_with_one_argument_a_line(tmp_path: Path) -> None:
    src = NET.replace("        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)\n",
                      "        y = F.scaled_dot_product_attention(\n            q,\n            k,\n"
                      "            v,\n        )\n")
    out = _emit(tmp_path, src)
    assert ("        y = F.scaled_dot_product_attention(\n            q,\n            k,\n"
            "            v,\n            scale=MUP_D_HEAD_BASE ** 0.5 / q.shape[-1],\n        )\n") in out


def test_fixed_head_size_with_an_attribute_is_guarded_not_edited(tmp_path: Path) -> None:
    """Heads grow at a fixed head size: factor 1 at both widths. With an attribute holding
    the head size, mup_init checks it (head_guard.py) and the attention is left as written."""
    src = NET.replace("        self.heads = heads\n",
                      "        self.heads = heads\n        self.head_dim = width // heads\n")
    out = _emit(tmp_path, src, model="Net(width=64, heads=4)")
    assert [old for old, _new in _changed(src, out)] == ["        return self.out(h)  # logits"]
    assert "MUP_D_HEAD_BASE" not in out and '"attn": ("head_dim", 16)' in out


def test_fixed_head_size_without_an_attribute_is_edited(tmp_path: Path) -> None:
    """With no attribute to check, the attention takes the runtime factor, 1 at the emitted
    widths (its base head size is the emitted one), right at any other head size."""
    out = _emit(tmp_path, NET, model="Net(width=64, heads=4)")
    assert [old for old, _new in _changed(NET, out)] == [
        "        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)",
        "        return self.out(h)  # logits"]
    assert "MUP_D_HEAD_BASE = 16" in out and "MUP_HEAD_SIZES" not in out


@pytest.mark.parametrize("readout, expected", [
    ("F.linear(h, self.w)", "F.linear(h, self.w) * self.mup_w_multiplier"),
    ("F.linear(h, self.w, self.b)", "F.linear(h * self.mup_w_multiplier, self.w, self.b)"),
    ("h @ self.w.t() + self.b", "(h @ self.w.t()) * self.mup_w_multiplier + self.b"),
    ("torch.einsum('bnd,od->bno', h, self.w)", "torch.einsum('bnd,od->bno', h, self.w) * self.mup_w_multiplier"),
    ("F.linear(h, self.w).float()", "(F.linear(h, self.w) * self.mup_w_multiplier).float()"),
    ("torch.mm(h.flatten(0, 1), self.w.t())", None),
], ids=["functional", "functional-bias", "matmul", "einsum", "method-on-result",
        "no-self-weight-argument"])
def test_functional_readouts(tmp_path: Path, readout: str, expected: str | None) -> None:
    src = NET.replace("        self.out = nn.Linear(width, 3)\n",
                      "        self.w = nn.Parameter(torch.randn(3, width) / width**0.5)\n"
                      "        self.b = nn.Parameter(torch.zeros(3))\n"
                      ).replace("return self.out(h)  # logits", f"return {readout}  # logits")
    if expected is None:  # the weight is no argument of the call itself: refused, with a fix
        with pytest.raises(EmitError, match=r"line 31: no call of self\.w in Net") as err:
            _emit(tmp_path, src)
        assert "F.linear(x, self.w)" in str(err.value)
        return
    pairs = _changed(src, _emit(tmp_path, src))
    assert pairs[-1] == (f"        return {readout}  # logits", f"        return {expected}  # logits")


def test_a_change_inside_an_installed_library_is_refused_with_its_location(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attention computed in a module of an installed library: an error names that line and
    the way out, instead of a model silently missing the attention factor. (A file of the
    user's own project is edited instead: tests/test_emit_project.py.)"""
    library = tmp_path / "site-packages"
    library.mkdir()
    (library / "extlib_attn.py").write_text(NET)
    monkeypatch.syspath_prepend(str(library))
    path = tmp_path / "user.py"
    user = NET[NET.index("class Net"):].replace("class Net", "class UserNet")
    path.write_text(NET[:NET.index("class Attn")] + "from extlib_attn import Attn\n\n\n" + user)
    with pytest.raises(EmitError, match=r"an attention scale belongs at .*extlib_attn\.py:15, "
                                        r"outside your project") as err:
        emit(path, "UserNet(width=64, heads=2)", "UserNet(width=32, heads=2)")
    assert "local subclass" in str(err.value)
    assert path.read_text().startswith("import torch")  # untouched


def test_root_class_in_another_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lib.py").write_text(NET)
    path = tmp_path / "user.py"
    path.write_text("from lib import Net\n")
    with pytest.raises(EmitError, match="Net, which is not defined in user.py"):
        emit(path, WIDE, BASE)


@pytest.mark.parametrize("logits, expected", [
    ("(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) @ v",
     "((q @ k.transpose(-2, -1)) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5 / q.shape[-1] ** 0.5)"
     ".softmax(-1) @ v"),
    ("torch.matmul(q, k.transpose(-2, -1)).mul(q.shape[-1] ** -0.5).softmax(-1) @ v",
     "(torch.matmul(q, k.transpose(-2, -1)) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5)"
     ".mul(q.shape[-1] ** -0.5).softmax(-1) @ v"),
    ("torch.einsum('bhqd,bhkd->bhqk', q, k).div(8).softmax(-1) @ v",
     "(torch.einsum('bhqd,bhkd->bhqk', q, k) * (MUP_D_HEAD_BASE / q.shape[-1]) ** 0.5)"
     ".div(8).softmax(-1) @ v"),
], ids=["operator", "matmul", "einsum"])
def test_explicit_softmax_attention_scales_the_logits(tmp_path: Path, logits: str,
                                                      expected: str) -> None:
    src = NET.replace("F.scaled_dot_product_attention(q, k, v)", logits)
    (old, new), _readout = _changed(src, _emit(tmp_path, src))
    assert (old, new) == (f"        y = {logits}  # (B, H, N, Dh)",
                          f"        y = {expected}  # (B, H, N, Dh)")


# -- the command line ----------------------------------------------------------------------

def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_cli_writes_next_to_the_input_and_never_clobbers(tmp_path: Path) -> None:
    src = tmp_path / "net.py"
    src.write_text(NET)
    code, output = run(str(src), "--model", WIDE, "--base", BASE)
    assert code == 0, output
    assert f"wrote {tmp_path / 'net_mup.py'}" in output and src.read_text() == NET
    first = (tmp_path / "net_mup.py").read_text()
    (tmp_path / "net_mup.py").write_text("# mine\n")
    code, output = run(str(src), "--model", WIDE, "--base", BASE)
    assert code == 1 and "exists; pass --force" in output
    assert (tmp_path / "net_mup.py").read_text() == "# mine\n"
    code, output = run(str(src), "--model", WIDE, "--base", BASE, "--force")
    assert code == 0 and (tmp_path / "net_mup.py").read_text() == first


def test_cli_diff_writes_nothing_and_in_place_is_explicit(tmp_path: Path) -> None:
    src = tmp_path / "net.py"
    src.write_text(NET)
    code, output = run(str(src), "--model", WIDE, "--base", BASE, "--diff")
    assert code == 0 and "+        return self.out(h * self.mup_out_multiplier)  # logits" in output
    assert _files(tmp_path) == {"net.py": NET.encode()}
    code, output = run(str(src), "--model", WIDE, "--base", BASE, "-o", str(src))
    assert code == 2 and "--in-place" in output and src.read_text() == NET
    code, output = run("emit", str(src), "--model", WIDE, "--base", BASE, "--in-place")
    assert code == 0 and is_emitted(src.read_text())


def test_cli_refuses_its_own_output_and_check_tells_them_apart(tmp_path: Path) -> None:
    src = tmp_path / "net.py"
    src.write_text(NET)
    assert run(str(src), "--check")[0] == 1
    assert run(str(src), "--model", WIDE, "--base", BASE, "-o", str(tmp_path / "mup.py"))[0] == 0
    code, output = run(str(tmp_path / "mup.py"), "--check")
    assert code == 0 and "muP (rule 'mup')" in output
    emitted = (tmp_path / "mup.py").read_bytes()
    code, output = run(str(tmp_path / "mup.py"), "--model", WIDE, "--base", BASE, "--in-place")
    assert code == 1 and "written by muprewrite" in output and "apply muP twice" in output
    assert (tmp_path / "mup.py").read_bytes() == emitted


@pytest.mark.parametrize("case", ["syntax", "no-class", "uncapturable", "unwritable"])
def test_bad_input_one_message_nothing_modified(tmp_path: Path, case: str) -> None:
    src = tmp_path / "net.py"
    text = {"syntax": NET.replace("def forward(self, x):\n        h", "def forward(self, x:\n        h"),
            "uncapturable": NET.replace("        return self.out(h)  # logits",
                                        "        if h.mean() > 0:\n            h = h * 2\n"
                                        "        return self.out(h)  # logits")}.get(case, NET)
    src.write_text(text)
    model = "Nope(width=64)" if case == "no-class" else WIDE
    (tmp_path / "blocker").write_text("a file, not a folder")
    out = tmp_path / "blocker" / "net_mup.py" if case == "unwritable" else tmp_path / "out.py"
    before = _files(tmp_path)
    code, output = run(str(src), "--model", model, "--base", BASE, "-o", str(out))
    assert code == 1 and output.startswith("Error: ") and "Traceback" not in output
    assert {"syntax": "syntax error", "no-class": "Nope is not defined in",
            "uncapturable": "if h.mean() > 0", "unwritable": "cannot write"}[case] in output
    assert _files(tmp_path) == before  # the input untouched, nothing written


def test_help_teaches() -> None:
    code, output = run("emit", "--help")
    assert code == 0 and "mup_param_groups" in output and "--base" in output and "--check" in output
    assert "muprewrite model.py" in run("--help")[1]


def test_cli_entry_point_routes_a_file_to_emit(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = tmp_path / "net.py"
    src.write_text(NET)
    exe = Path(sys.executable).with_name("muprewrite")
    result = subprocess.run([str(exe), str(src), "--model", WIDE, "--base", BASE, "--diff"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert result.returncode == 0 and "mup_init(self)" in result.stdout


GENERATE_HEAD = '''import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.head = nn.Linear(width, 4)
        self.gen_head = nn.Linear(width, 4)

    def forward(self, x, generate=False):
        h = self.inp(x).relu()
        if generate:
            return self.gen_head(h)
        return self.head(h)

    def example_inputs(self):
        return (torch.randn(2, 8, device=self.inp.weight.device),)
'''


def test_a_parameter_only_an_uncaptured_path_uses_is_named(tmp_path: Path) -> None:
    """From one input set, a readout used only on another path has no role and no factor: the
    emission says so instead of staying silent (tests/test_input_sets.py gives every set)."""
    path = tmp_path / "gen.py"
    path.write_text(GENERATE_HEAD)
    changes = emit(path, "Net(width=64)", "Net(width=32)").changes
    assert any(c.startswith("WARNING") and "gen_head.weight" in c and "head.weight" not in
               c.replace("gen_head.weight", "") for c in changes), changes
