"""Hostile and careless input through the real CLI, in subprocesses.

Every case runs ``muprewrite`` in a fresh folder holding a small model file, a sentinel file
and whatever the case adds, then checks: the exit status; on failure exactly one ``Error:``
line, with a fix, and no traceback; and a byte/mode/inode snapshot of the folder identical
before and after (or changed exactly as the case asks). A spec that ran code would delete
the sentinel or create ``pwned``.

Each case is a process of its own, once per session: ``cli_driver.py`` imports torch and
muprewrite once and forks one child per case (two at a time), which runs the CLI's ``main``
as the console script would, in the case's folder; the cases that could hang or fill memory
on a regression (a FIFO, /dev/zero: ``real``) run the installed ``muprewrite`` script in a
subprocess, as do the tests that send signals.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).with_name("muprewrite"))
DRIVER = Path(__file__).with_name("cli_driver.py")

NET = '''"""A small MLP-like model for hostile-input tests."""

import os  # noqa: F401 - a spec must not reach it

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int = 32, depth: int = 2, fail: bool = False) -> None:
        super().__init__()
        if fail:
            raise RuntimeError("the constructor failed on purpose")  # FAIL-LINE
        self.inp = nn.Linear(8, width)
        self.hidden = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])
        self.out = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(torch.relu(self.inp(x)))))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 8, device=self.inp.weight.device),)


def make_net(width: int = 32) -> Net:
    return Net(width=width)


def not_a_model(width: int = 32) -> int:
    return width
'''

ITEM = NET + '''

class Dropped(Net):
    """Drop-path rates from linspace, as timm-style models do: needs real values."""

    def __init__(self, width: int = 32, depth: int = 2) -> None:
        super().__init__(width, depth)
        self.rates = [r.item() for r in torch.linspace(0, 0.1, depth)]  # ITEM-LINE
'''

PKG_CONFIG = """from dataclasses import dataclass


@dataclass
class Config:
    n_embd: int = 32
"""

PKG_MODEL = """import torch
from torch import nn

from .config import Config


class Net(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        print(f"number of parameters: {3 * cfg.n_embd}")  # nanoGPT prints in __init__
        self.inp = nn.Linear(8, cfg.n_embd)
        self.out = nn.Linear(cfg.n_embd, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inp(x).relu())

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 8, device=self.inp.weight.device),)
"""

MOE = NET + '''

class MoE(nn.Module):
    """Top-1 routing: tokens go to experts by the router's argmax, summed back with index_add."""

    def __init__(self, width: int = 32, experts: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.router = nn.Linear(width, experts)
        self.experts = nn.ModuleList([nn.Linear(width, width) for _ in range(experts)])
        self.out = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)  # (T, W)
        choice = self.router(h).topk(1, dim=-1).indices[:, 0]  # (T,)
        y = torch.zeros_like(h)
        for i, expert in enumerate(self.experts):
            idx = (choice == i).nonzero()[:, 0]  # data-dependent count
            y = y.index_add(0, idx, expert(h[idx]))
        return self.out(y)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(6, 8, device=self.inp.weight.device),)


class Normed(Net):
    def __init__(self, width: int = 32) -> None:
        super().__init__(width)
        self.out = nn.utils.parametrizations.spectral_norm(nn.Linear(width, 4))


class Branchy(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # BRANCH-LINE
            x = -x
        return super().forward(x)
'''

CLASSES = NET + '''

class Classifier(Net):
    """A base with another number of classes differs along an axis that is not width."""

    def __init__(self, width: int = 32, classes: int = 4) -> None:
        super().__init__(width)
        self.out = nn.Linear(width, classes)
'''

# ModuleDict keys are the user's strings: quotes, line breaks, backslashes and terminal escapes
# must reach the emitted source as data, never as code
KEYS = ('a": ((0,), (0,), {}), "x": getattr(__import__("os"), "system")("touch pwned") or 1, "y',
        'b\nimport os; getattr(os, "system")("touch pwned")\n#',
        "c\\d",
        "e'\x1b[2J\u202e")
INJECT = NET + f"""

KEYS = {KEYS!r}


class Keyed(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.hidden = nn.ModuleDict({{k: nn.Linear(width, width) for k in KEYS}})
        self.out = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        for key in self.hidden:
            h = torch.relu(self.hidden[key](h))
        return self.out(h)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 8, device=self.inp.weight.device),)
"""

NAN_RULE = """id = "nan"
title = "t"
status = "experimental"
optimizer = "adam"
attention = "inverse"
weight_decay_convention = "custom"

[doc]
what = "x"
when = "x"
example = "x"
known_problems = "x"
references = ["x"]

[role.hidden]
lr = { m_in = nan }
"""

# a project file the model imports, holding its readout: outputs must never replace it, and an
# edit in place changes every file that imports it
BLOCKS = '''import torch
from torch import nn


class Head(nn.Module):
    def __init__(self, width: int, n_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)
'''

HEADED = "from blocks import Head\n" + NET + '''

class Headed(Net):
    def __init__(self, width: int = 32) -> None:
        super().__init__(width)
        self.out = Head(width, 4)
'''


TINY = '''"""A tiny transformer for the check cases: a zero-init readout (adaLN-Zero's: the
output is 0 at init, so an untouched check compares nothing), a flag choosing fused or math
attention, residual blocks."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.heads, self.fused = heads, fused
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v
        return x + self.proj(y.transpose(1, 2).reshape(B, T, C))


class Tiny(nn.Module):
    def __init__(self, width: int = 32, heads: int = 2, depth: int = 2, fused: bool = True) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.blocks = nn.ModuleList([Block(width, heads, fused) for _ in range(depth)])
        self.out = nn.Linear(width, 4)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 5, 8, device=self.inp.weight.device),)
'''
FLOAT32 = NET.replace("self.inp(x)", "self.inp(x.float())")  # the original DiT's habit
BACKSLASH = NET.replace(  # a hidden layer under a key with a backslash: its factors kept
    "self.hidden = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])",
    'self.hidden = nn.ModuleDict({"a\\\\b": nn.Linear(width, width)})').replace(
    "self.hidden(", 'self.hidden["a\\\\b"](')
TOKEN = NET.replace("self.out = nn.Linear(width, 4)",
                    "self.out = nn.Linear(width, 4)\n        self.cls = nn.Parameter(torch.zeros(0, width))")
MDEPTH_RULE = (Path(__file__).resolve().parents[1] / "rules" / "completep.toml").read_text().replace(
    'id = "completep"', 'id = "deep"').replace(
    "[role.output]\nmultiplier = { m_in = -1 }\n",
    "[role.output]\nmultiplier = { m_in = -1 }\ninit = { m_depth = -1 }\n")  # never applied
TINY_EMITTED = ("model.py", "Tiny(width=64)", "Tiny(width=32)", "tiny_mup.py", "mup")
TINY_CHECK = ("check", "tiny_mup.py", "--model", "Tiny(width=64)", "--steps", "1")

TRAIN = '''def train_trial(run):
    x = run.model.example_inputs()[0]
    for step in range(1, run.steps + 1):
        loss = run.model(x).square().mean()
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.report(step, loss.item())
    return loss.item()
'''
RULE_FILE = (Path(__file__).resolve().parents[1] / "rules" / "mup.toml").read_text().replace(
    'id = "mup"', 'id = "mine"')  # a rule of the user's, which the card must not replace


def _other_tree(owner: str) -> str:
    """blocks.py as an emission of ``owner`` (another model) left it under -o DIR/."""
    from muprewrite.emit.write.header import render_part_header

    head = render_part_header("blocks.py", owner, "mup", "muP", ["output multiplier"], "32")
    return "\n".join(head) + "\n" + BLOCKS


ARGPARSE = '''import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
args = parser.parse_args()  # ARGV-LINE
''' + NET

ARGPARSE_OPTIONAL = '''import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=1e-3)
args = parser.parse_args()
''' + NET


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    error: str = ""  # regex on the single Error: line; "" means success expected
    files: dict[str, str] = field(default_factory=dict)  # written before the run
    model: str = NET
    changes: frozenset[str] = frozenset()  # files the command may create or change
    links: dict[str, str] = field(default_factory=dict)  # symlink -> target
    modes: dict[str, int] = field(default_factory=dict)  # chmod before the run
    fifos: tuple[str, ...] = ()  # named pipes made before the run (nobody writes to them)
    code: int = 1  # expected exit status on failure (2: a usage error, as click has it)
    real: bool = False  # run the installed script in a subprocess, not a forked child
    # (source, --model, --base, output, rule): a file emitted in the folder before the run
    emitted: tuple[str, str, str, str, str] | None = None
    mutate: tuple[tuple[str, str], ...] = ()  # (old, new) edits of the emitted file, each once
    ok: int = 0  # exit status of a case that succeeds (3: check passed what it ran)
    says: str = ""  # regex the output of a succeeding case must hold


def analyze(*args: str, **kw) -> tuple[str, ...]:  # noqa: ANN003
    return ("analyze", "model.py", *args)


M = ("--model", "Net(width=64)")
CASES = [
    # --- a spec never runs code --------------------------------------------------------
    Case("os-remove", analyze("--model", "torch.os.remove('model.py')"),
         r"'torch\.os\.remove' is not a class or function of your project"),
    Case("exec", analyze("--model", "torch.builtins.exec(\"open('pwned', 'w')\")"),
         r"is not a class or function of your project"),
    Case("module-os", analyze("--model", "os.system('touch pwned')"),
         r"'os\.system' is not a class or function of your project"),
    Case("dunder-import", analyze("--model", "__import__('os').system('touch pwned')"),
         r"is not a call|callee"),
    Case("import-in-arg", analyze("--model", "Net(width=__import__('os').getpid())"),
         r"callee|not a class"),
    Case("globals-chain", analyze("--model", "Net.__init__.__globals__.get('os')"),
         r"not a class or function of your project"),
    Case("library-class", analyze("--model", "nn.Linear(8, 8)"),
         r"'nn\.Linear' is not a class or function of your project"),
    Case("inputs-code", analyze(*M, "--inputs", "float(2, 8), x=os.system('touch pwned')"),
         r"os\.system\(\.\.\.\) is not a tensor spec"),
    # --- specs that would never finish, or mean something else ------------------------
    Case("tower", analyze("--model", "Net(width=((((9**64)**64)**64)**64)**64)"),
         r"would exceed 2\*\*63"),
    Case("big-power", analyze("--model", "Net(width=10**64)"), r"would exceed 2\*\*63"),
    Case("float-overflow", analyze("--model", "Net(width=1e300**2)"), r"out of range"),
    Case("splat", analyze("--model", "Net(**{'width': 7})"), r"splats are not supported"),
    Case("duplicate-kw", analyze("--model", "Net(width=8, width=16)"), r"'width' is given twice"),
    Case("zero-width", analyze("--model", "Net(width=0)"), r"zero-size parameters"),
    Case("not-a-module", analyze("--model", "not_a_model(width=8)"),
         r"returned a int, not an nn\.Module"),
    Case("factory", analyze("--model", "make_net(width=16)", "--json")),
    Case("unknown-name", analyze("--model", "Nett(width=8)"), r"Nett is not defined in .*model\.py"),
    Case("no-parse", analyze("--model", "Net(width=8"), r"does not parse"),
    # --- inputs ------------------------------------------------------------------------
    Case("negative-size", analyze(*M, "--inputs", "float(-2, 8)"), r"sizes must be integers >= 1"),
    Case("fractional-size", analyze(*M, "--inputs", "float(2.5, 8)"), r"integers >= 1"),
    Case("zero-range", analyze(*M, "--inputs", "int(2, high=0)"), r"high must be an integer >= 1"),
    Case("huge-input", analyze(*M, "--inputs", "float(2**30, 2**30)"), r"elements \(at most"),
    Case("unknown-option", analyze(*M, "--inputs", "float(2, 8, low=3)"), r"unknown option 'low'"),
    # --- capture ---------------------------------------------------------------------------
    Case("shape-mismatch", analyze(*M, "--inputs", "float(2, 16)"),
         r"model\.py:\d+.*fix: check the example inputs' shapes"),
    Case("moe", analyze("--model", "MoE(width=64)", "--base", "MoE(width=32)", "--json"),
         model=MOE),
    Case("spectral-norm", analyze("--model", "Normed(width=64)", "--base", "Normed(width=32)",
                                  "--json"), model=MOE),
    Case("value-branch", analyze("--model", "Branchy(width=64)"), r"model\.py:\d+: if x\.sum",
         model=MOE),
    Case("base-other-classes", analyze("--model", "Classifier(width=64, classes=4)", "--base",
                                       "Classifier(width=32, classes=10)"),
         r"out\.weight axis 0 is 4 in the model, 10 in base.*fix: build the base with the "
         r"model's vocab_size/num_classes", model=CLASSES),
    Case("emit-base-other-classes", ("model.py", "--model", "Classifier(width=64, classes=4)",
                                     "--base", "Classifier(width=32, classes=10)", "-o",
                                     "out.py"),
         r"out\.weight axis 0 is 4 in the model, 10 in base", model=CLASSES),
    # --- importing the user's file -----------------------------------------------------
    Case("print-at-import", analyze(*M, "--json"), model='print("hello from import")\n' + NET),
    Case("exit-at-import", analyze(*M), r"calls sys\.exit\(0\) when imported",
         model="import sys\nsys.exit(0)\n" + NET),
    Case("argparse-at-import", analyze(*M), r"parses the command line when imported",
         model=ARGPARSE),
    Case("argparse-optional", analyze(*M, "--json"), model=ARGPARSE_OPTIONAL),
    Case("missing-module", analyze(*M), r"No module named 'not_a_module_xyz'.*install",
         model="import not_a_module_xyz\n" + NET),
    Case("raise-at-import", analyze(*M), r"raised ValueError: boom.*model\.py:1",
         model="raise ValueError('boom')\n" + NET),
    Case("syntax-error", analyze(*M), r"model\.py:1: syntax error", model="def (:\n" + NET),
    Case("constructor-raises", analyze("--model", "Net(fail=True)"),
         r"raised RuntimeError: the constructor failed on purpose.*model\.py:\d+"),
    Case("item-on-meta", analyze("--model", "Dropped(width=16)"), r"--device cpu", model=ITEM),
    Case("item-on-cpu", analyze("--model", "Dropped(width=16)", "--device", "cpu", "--json"),
         model=ITEM),
    Case("package", ("analyze", "pkg/model.py", "--model", "Net(Config(n_embd=64))", "--base",
                     "Net(Config(n_embd=32))", "--json"),
         files={"pkg/__init__.py": "", "pkg/config.py": PKG_CONFIG, "pkg/model.py": PKG_MODEL}),
    Case("package-shadows-torch", ("analyze", "torch/model.py", "--model", "Net(Config())"),
         r"package named 'torch'.*already imported",
         files={"torch/__init__.py": "", "torch/config.py": PKG_CONFIG, "torch/model.py": PKG_MODEL}),
    Case("not-python", ("analyze", "notes.txt", *M), r"not a Python source file",
         files={"notes.txt": "hello"}),
    Case("missing-file", ("analyze", "nope.py", *M), r"no such file"),
    # --- numbers that reach emitted code ------------------------------------------------
    Case("seed-huge", ("model.py", *M, "--base", "Net(width=32)", "--seed", str(2**70)),
         r"Invalid value for '--seed'.*range", code=2),
    Case("base-equals-model", ("model.py", *M, "--base", "Net(width=64)"),
         r"the base must differ in width"),
    Case("base-other-depth", ("model.py", *M, "--base", "Net(width=32, depth=1)"),
         r"base is not Net at another width.*hidden\.1\.weight"),
    # --- names that reach emitted code --------------------------------------------------
    Case("injected-keys", ("model.py", "--model", "Keyed(width=64)", "--base", "Keyed(width=32)",
                           "-o", "out.py"), model=INJECT, changes=frozenset({"out.py"})),
    # --- files -------------------------------------------------------------------------
    Case("fifo-emit", ("pipe.py", *M, "--base", "Net(width=32)", "-o", "out.py"),
         r"pipe\.py is not a regular file", fifos=("pipe.py",), real=True),
    Case("fifo-analyze", ("analyze", "pipe.py", *M), r"not a Python source file",
         fifos=("pipe.py",), real=True),
    Case("dev-zero-emit", ("zero.py", *M, "--base", "Net(width=32)", "-o", "out.py"),
         r"zero\.py is not a regular file", links={"zero.py": "/dev/zero"}, real=True),
    Case("symlink-in-place", ("src/link.py", *M, "--base", "Net(width=32)", "--in-place"),
         files={"src/real.py": NET}, links={"src/link.py": "real.py"},
         changes=frozenset({"src/real.py"})),
    Case("read-only-in-place", ("model.py", *M, "--base", "Net(width=32)", "--in-place"),
         r"read-only.*--force", modes={"model.py": 0o444}),
    Case("read-only-output", ("model.py", *M, "--base", "Net(width=32)", "-o", "out.py"),
         r"out\.py is read-only.*--force", files={"out.py": "keep me\n"}, modes={"out.py": 0o444}),
    Case("crlf-in-place", ("model.py", *M, "--base", "Net(width=32)", "--in-place"),
         model=NET.replace("\n", "\r\n"), changes=frozenset({"model.py"})),
    Case("json-is-model", ("coord-check", "model.py", "--model", "Net(width={width})",
                           "--widths", "16,32", "--json", "model.py", "--force"),
         r"same file as MODEL_FILE"),
    Case("json-is-png", ("coord-check", "model.py", "--model", "Net(width={width})",
                         "--widths", "16,32", "-o", "cc.png", "--json", "cc.png"),
         r"same file as -o"),
    Case("output-folder-missing", ("coord-check", "model.py", "--model", "Net(width={width})",
                                   "--widths", "16,32", "-o", "no/such/dir/cc.png"),
         r"does not exist"),
    # --- outputs never replace what the model reads, nor leave their folder by a link -------
    Case("coord-json-imported", ("coord-check", "model.py", "--model", "Net(width={width})",
                                 "--widths", "16,32", "--json", "blocks.py", "--force"),
         r"--json blocks\.py is the same file as a file MODEL_FILE imports",
         model=HEADED, files={"blocks.py": BLOCKS}),
    Case("spectra-link-out", ("spectra", "model.py", "--model", "Net(width={width})", "--widths",
                              "16,32", "--steps", "1", "--out", "res", "--force"),
         r"spectra_mup\.json is a symbolic link to .*blocks\.py, outside the output folder",
         model=HEADED, files={"blocks.py": BLOCKS, "res/keep.txt": ""},
         links={"res/spectra_mup.json": "../blocks.py"}),
    Case("spectra-linked-folder", ("spectra", "model.py", "--model", "Net(width={width})",
                                   "--widths", "16,32", "--steps", "1", "--out", "res",
                                   "--force"),
         r"spectra_mup\.json is the same file as a file MODEL_FILE imports",
         model=HEADED, files={"blocks.py": BLOCKS},
         links={"res": ".", "spectra_mup.json": "blocks.py"}),
    Case("emit-link-out", ("model.py", *M, "--base", "Net(width=32)", "-o", "out/net.py",
                           "--force"),
         r"out/net\.py is a symbolic link to .*sentinel\.txt, outside the output folder",
         files={"out/keep.txt": ""}, links={"out/net.py": "../sentinel.txt"}),
    Case("tree-of-another-model", ("model.py", *M, "--base", "Net(width=32)", "-o", "out/",
                                   "--force"),
         r"out/blocks\.py belongs to the muP tree of other\.py.*another folder",
         model=HEADED, files={"blocks.py": BLOCKS, "out/blocks.py": _other_tree("other.py")}),
    Case("tree-symlinked-import", ("model.py", "--model", "Headed(width=64)", "--base",
                                   "Headed(width=32)", "-o", "out/"),
         model=HEADED, files={"lib/impl.py": BLOCKS}, links={"blocks.py": "lib/impl.py"},
         changes=frozenset({"out/model.py", "out/blocks.py"})),
    Case("in-place-shared-file", ("model.py", "--model", "Headed(width=64)", "--base",
                                  "Headed(width=32)", "--in-place"),
         r"--in-place would edit .*blocks\.py, which other\.py also import.*--in-place-shared",
         model=HEADED, files={"blocks.py": BLOCKS, "other.py": "import blocks\n"}),
    Case("in-place-shared-allowed", ("model.py", "--model", "Headed(width=64)", "--base",
                                     "Headed(width=32)", "--in-place", "--in-place-shared"),
         model=HEADED, files={"blocks.py": BLOCKS, "other.py": "import blocks\n"},
         changes=frozenset({"model.py", "blocks.py"})),
    Case("tune-card-is-rule", ("tune", "model.py", "--model", "Net(width={width})", "--width",
                               "16", "--train", "train.py:train_trial", "--trials", "1",
                               "--steps", "1", "--lr", "1e-3:1e-1", "--rule", "mine.toml", "-o",
                               "mine.toml", "--force"),
         r"-o mine\.toml is the same file as input mine\.toml",
         files={"train.py": TRAIN, "mine.toml": RULE_FILE}),
    Case("tune-journal-link-out", ("tune", "model.py", "--model", "Net(width={width})",
                                   "--width", "16", "--train", "train.py:train_trial",
                                   "--trials", "1", "--steps", "1", "--lr", "1e-3:1e-1",
                                   "--storage", "runs/s.journal"),
         r"runs/s\.journal is a symbolic link to .*notes\.txt, outside the output folder",
         files={"train.py": TRAIN, "notes.txt": "mine\n", "runs/keep.txt": ""},
         links={"runs/s.journal": "../notes.txt"}),
    # --- check on emitted files: it fails on the defect it names, runs where it used to stop
    Case("check-zero-init-readout", TINY_CHECK, r"tiny_mup\.py.*diverge", model=TINY,
         emitted=TINY_EMITTED, mutate=(("self.out(h * self.mup_out_multiplier)", "self.out(h)"),)),
    Case("check-zero-init-attention", TINY_CHECK, r"tiny_mup\.py.*diverge", model=TINY,
         emitted=TINY_EMITTED,
         mutate=((", scale=MUP_D_HEAD_BASE ** 0.5 / q.shape[-1])", ")"),)),
    Case("check-steps-0-groups", (*TINY_CHECK[:-1], "0"), r"lr", model=TINY, emitted=TINY_EMITTED,
         mutate=(('"lr": lr * key[0]', '"lr": lr'),)),
    Case("check-base-width-alone", ("check", "tiny_mup.py", "--model", "Tiny(width=32)"),
         r"base width", model=TINY, emitted=TINY_EMITTED),
    Case("check-header-base-edited", TINY_CHECK, r"Tiny\(width=48\)", model=TINY,
         emitted=TINY_EMITTED, mutate=(("return Tiny(width=32)", "return Tiny(width=48)"),)),
    Case("check-mup-init-deleted", TINY_CHECK, r"mup_init", model=TINY, emitted=TINY_EMITTED,
         mutate=(("        mup_init(self)  # muP: init scale and forward multipliers\n", ""),)),
    Case("check-flag-path-named", TINY_CHECK, model=TINY, emitted=TINY_EMITTED, ok=3,
         says=r"not exercised: tiny_mup\.py:\d+: .*guarded by `else of if self\.fused:`"),
    Case("check-depth-branch-deleted",
         ("check", "tiny_mup.py", "--model", "Tiny(width=64, depth=4)", "--steps", "1"),
         r"tiny_mup\.py", model=TINY,
         emitted=("model.py", "Tiny(width=64, depth=4)", "Tiny(width=32)", "tiny_mup.py",
                  "completep"),
         mutate=(("x + self.mup_branch_multiplier * self.proj(", "x + self.proj("),)),
    Case("check-space-in-name", ("check", "my net_mup.py", "--model", "Net(width=64)", "--steps",
                                 "1"), files={"my net.py": NET},
         emitted=("my net.py", "Net(width=64)", "Net(width=32)", "my net_mup.py", "mup")),
    Case("check-float32-model", ("check", "net_mup.py", "--model", "Net(width=64)", "--steps", "1"),
         model=FLOAT32, emitted=("model.py", "Net(width=64)", "Net(width=32)", "net_mup.py", "mup"),
         says="float32"),
    Case("check-backslash-key", ("check", "net_mup.py", "--model", "Net(width=64)", "--steps", "1"),
         model=BACKSLASH, emitted=("model.py", "Net(width=64)", "Net(width=32)", "net_mup.py", "mup"),
         says=r"behaves as muprewrite\.apply"),
    Case("zero-size-token", analyze(*M, "--base", "Net(width=32)"), model=TOKEN, says="cls"),
    Case("rule-mdepth-output", ("model.py", *M, "--base", "Net(width=32)", "--rule", "deep.toml"),
         r"deep\.toml.*role\.output\.init\.m_depth", files={"deep.toml": MDEPTH_RULE}),
    Case("rule-escapes", ("model.py", *M, "--base", "Net(width=32)", "--rule", "../../etc/passwd"),
         r"rule"),
    Case("rule-nan", ("model.py", *M, "--base", "Net(width=32)", "--rule", "nan.toml"),
         r"nan\.toml.*role\.hidden\.lr", files={"nan.toml": NAN_RULE}),
]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if "__pycache__" in p.parts or p.is_dir():
            continue
        st = p.lstat()
        if p.is_symlink():
            data = os.readlink(p).encode()
        else:
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""  # never read a FIFO
        out[str(p.relative_to(folder))] = (data, st.st_mode, st.st_ino)
    return out


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    before: dict
    after: dict


def _prepare(case: Case, root: Path) -> Path:
    folder = root / case.id
    folder.mkdir()
    (folder / "model.py").write_text(case.model)
    (folder / "sentinel.txt").write_text("still here\n")
    for name, text in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    for name, target in case.links.items():
        (folder / name).symlink_to(target)
    for name, mode in case.modes.items():
        (folder / name).chmod(mode)
    for name in case.fifos:
        os.mkfifo(folder / name)
    if case.emitted is not None:
        _emit(case, folder)
    return folder


def _emit(case: Case, folder: Path) -> None:
    """The emitted file a check case reads, written as the CLI writes it, then mutated."""
    from muprewrite.emit import emit

    assert case.emitted is not None
    source, model, base, out, rule = case.emitted
    text = emit(folder / source, model, base, rule=rule).source
    for old, new in case.mutate:
        assert text.count(old) == 1, (case.id, old)
        text = text.replace(old, new)
    (folder / out).write_text(text)


def _subprocess(case: Case, folder: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MUPREWRITE_TRACEBACK"}
    proc = subprocess.run([CLI, *case.argv], cwd=folder, capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


def _forked(cases: list[Case], root: Path, io: Path) -> dict[str, tuple[int, str, str]]:
    """Every case in a child forked by one driver process (see cli_driver.py)."""
    jobs = [{"id": c.id, "cwd": str(root / c.id), "argv": list(c.argv),
             "stdout": str(io / f"{c.id}.out"), "stderr": str(io / f"{c.id}.err")}
            for c in cases]
    proc = subprocess.run([sys.executable, str(DRIVER)], capture_output=True, text=True,
                          timeout=1800,
                          input=json.dumps({"jobs": jobs, "workers": 2, "timeout": 300}))
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout)
    return {c.id: (codes[c.id], (io / f"{c.id}.out").read_text(errors="replace"),
                   (io / f"{c.id}.err").read_text(errors="replace")) for c in cases}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("hostile")
    io = tmp_path_factory.mktemp("hostile_io")  # outside every case folder
    folders = {c.id: _prepare(c, root) for c in CASES}
    before = {k: _snapshot(f) for k, f in folders.items()}
    real = [c for c in CASES if c.real]
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = {c.id: pool.submit(_subprocess, c, folders[c.id]) for c in real}
        results = _forked([c for c in CASES if not c.real], root, io)
        results.update({k: f.result() for k, f in futures.items()})
    return {k: Outcome(*results[k], before[k], _snapshot(f)) for k, f in folders.items()}


def _interruptible() -> None:
    """A job started in the background by a shell inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: give the child Ctrl-C back, as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cli_case(case: Case, outcomes: dict[str, Outcome]) -> None:
    out = outcomes[case.id]
    both = out.stdout + out.stderr
    assert "Traceback" not in both, both
    assert "sentinel.txt" in out.after and not any("pwned" in k for k in out.after)
    changed = {k for k in set(out.before) | set(out.after) if out.before.get(k) != out.after.get(k)}
    assert changed <= case.changes, f"changed: {changed}"
    if not case.error:
        assert out.code == case.ok, both
        assert re.search(case.says, both), both
        if "--json" in case.argv:
            json.loads(out.stdout)  # stdout stays valid JSON
        return
    assert out.code == case.code, both
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out.stderr
    assert "fix:" in errors[0] or case.code == 2, errors[0]
    assert re.search(case.error, errors[0]), errors[0]


def test_constructor_error_names_the_line(outcomes: dict[str, Outcome]) -> None:
    line = NET.splitlines().index(next(s for s in NET.splitlines() if "FAIL-LINE" in s)) + 1
    assert f"model.py:{line}:" in outcomes["constructor-raises"].stderr


def test_print_at_import_goes_to_stderr(outcomes: dict[str, Outcome]) -> None:
    out = outcomes["print-at-import"]
    assert "hello from import" in out.stderr and "hello" not in out.stdout


def test_symlink_is_written_through(outcomes: dict[str, Outcome]) -> None:
    out = outcomes["symlink-in-place"]
    assert out.after["src/link.py"] == out.before["src/link.py"]  # still a link to real.py
    assert b"mup_init(self)" in out.after["src/real.py"][0]


def test_crlf_file_keeps_every_unedited_line(outcomes: dict[str, Outcome]) -> None:
    old = outcomes["crlf-in-place"].before["model.py"][0].splitlines(keepends=True)
    new = outcomes["crlf-in-place"].after["model.py"][0].splitlines(keepends=True)
    assert all(line.endswith(b"\r\n") for line in new)
    kept = [line for line in old if line in new]
    assert len(old) - len(kept) <= 1, set(old) - set(kept)  # only the readout line is edited


_CTRL_C_MID_WRITE = """
import os, signal, sys
real_fsync = os.fsync
def fsync(fd):  # the signal arrives while the temporary file is open
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    real_fsync(fd)
os.fsync = fsync
from muprewrite.cli.main import main
main(["model.py", "--model", "Net(width=64)", "--base", "Net(width=32)", "--in-place"])
"""


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_while_writing_leaves_nothing(tmp_path: Path, signame: str, code: int) -> None:
    (tmp_path / "model.py").write_text(NET)
    before = _snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _CTRL_C_MID_WRITE, signame], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=_interruptible)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Aborted!" not in proc.stderr
    assert _snapshot(tmp_path) == before  # model.py untouched, no temporary file


_IMPORT_EMITTED = """
import json, out
print(json.dumps(out.Keyed(64).mup_factors))
"""


def test_injected_keys_stay_data(outcomes: dict[str, Outcome],
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """Importing the emitted file runs none of the keys, and each key keeps its factors."""
    assert outcomes["injected-keys"].code == 0
    folder = next(tmp_path_factory.getbasetemp().glob("hostile*/injected-keys"))
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EMITTED], cwd=folder,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not list(folder.glob("pwned*")) and (folder / "sentinel.txt").exists()
    factors = json.loads(proc.stdout.splitlines()[-1])
    for key in KEYS:  # width 64 from a base of 32: m = 2
        hidden = factors[f"hidden.{key}.weight"]
        assert hidden["init"] == pytest.approx(2 ** -0.5) and hidden["lr"] == pytest.approx(0.5)
    assert factors["out.weight"]["multiplier"] == pytest.approx(0.5)
    assert "\x1b" not in outcomes["injected-keys"].stderr  # names are shown escaped


def test_routing_and_spectral_norm_roles(outcomes: dict[str, Outcome]) -> None:
    moe = json.loads(outcomes["moe"].stdout)["params"]
    assert moe["router.weight"]["role"] == "output" and moe["experts.0.weight"]["role"] == "hidden"
    normed = json.loads(outcomes["spectral-norm"].stdout)["params"]
    assert {n: p["role"] for n, p in normed.items() if n.startswith("out.")} == {
        "out.bias": "fixed", "out.parametrizations.weight.original": "output"}
