"""Every code example of README.md and docs/*.md runs, and every relative link resolves.

How the examples are run (the blocks are read by tests/doc_examples.py):

- Each page runs in a fresh temporary folder holding a copy of ``examples/``, which is also the
  working directory and the first entry of ``sys.path`` (so ``from examples.dit import DiT`` and
  ``muprewrite examples/dit.py ...`` work as they do from a clone's root, and a file one block
  writes, such as ``dit_mup.py``, is there for the next).
- The python blocks of one page share one namespace, in page order: a block may use what an
  earlier block of the same page defined (a page says so in its text where it matters). A block
  whose first line starts with ``>>>`` is a doctest, and its outputs are compared.
- A bash block is a list of ``muprewrite`` command lines; each is run in this process through
  click's ``CliRunner`` on ``muprewrite.cli.main.cli`` and must exit 0. Any other command in a
  run block fails the test, so nothing in an unmarked block goes unrun.
- A block marked ``<!-- not run: REASON -->`` (it takes minutes: a benchmark, ``make``, a long
  sweep, ``torchrun``; or it is an excerpt of emitted source, not a program) is not run; for
  its bash commands, each ``muprewrite`` subcommand and each ``python``/``torchrun`` script
  must answer ``--help`` and list every option the block uses, and each ``make`` target must
  exist in the Makefile.
"""

from __future__ import annotations

import doctest
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from doc_examples import (
    EXAMPLE_LANGS,
    ROOT,
    SHOWN_LANGS,
    Block,
    anchors,
    blocks,
    commands,
    links,
    options,
    pages,
)

from muprewrite.cli.main import cli

PAGES = pages()


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _run_python(block: Block, ns: dict) -> None:
    if block.text.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.text, ns, block.where, block.page, block.line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        out = io.StringIO()
        runner.run(test, out=out.write, clear_globs=False)
        assert runner.failures == 0, f"{block.where}: doctest failed:\n{out.getvalue()}"
        return
    # one leading newline per line before the block, so that tracebacks name the page's lines
    exec(compile("\n" * block.line + block.text, block.page, "exec"), ns)  # noqa: S102


def _run_bash(block: Block) -> None:
    for argv in commands(block.text):
        assert argv[0] == "muprewrite", f"{block.where}: a run block holds only muprewrite commands: {argv}"
        result = CliRunner().invoke(cli, argv[1:])
        assert result.exit_code == 0, (
            f"{block.where}: {' '.join(argv)} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
        )


def _runnable(page: Path) -> bool:
    return any(b.lang in EXAMPLE_LANGS and not b.not_run for b in blocks(page))


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=_id)
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ns: dict = {"__name__": "__doc_example__"}
    # one torch thread, as each of `make test`'s two workers has (tests/conftest.py): on a loaded
    # two-core machine two threads per process spin against each other and take many times longer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for block in blocks(page):
            if block.not_run or block.lang not in EXAMPLE_LANGS:
                continue
            if block.lang == "python":
                _run_python(block, ns)
            else:
                _run_bash(block)
    finally:
        torch.set_num_threads(threads)
        for name, mod in list(sys.modules.items()):
            if str(getattr(mod, "__file__", None) or "").startswith(str(tmp_path)):
                del sys.modules[name]


def test_every_block_is_an_example_or_shown_output() -> None:
    for page in PAGES:
        for block in blocks(page):
            assert block.lang in EXAMPLE_LANGS + SHOWN_LANGS, f"{block.where}: unknown block language {block.lang!r}"
            if block.lang in SHOWN_LANGS:
                assert block.not_run is None, f"{block.where}: a {block.lang} block is never run; drop the marker"


def _subcommand(argv: list[str]) -> tuple[list[str], str]:
    """The muprewrite subcommand path a command line names, and its --help text."""
    group: click.Group = cli
    path: list[str] = []
    rest = argv[1:]
    while rest and isinstance(group, click.Group) and rest[0] in group.commands:
        cmd = group.commands[rest[0]]
        path.append(rest[0])
        rest = rest[1:]
        if not isinstance(cmd, click.Group):
            break
        group = cmd
    if not path:
        path = ["emit"]  # `muprewrite model.py ...` is `muprewrite emit model.py ...`
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, f"muprewrite {' '.join(path)} --help exited {result.exit_code}"
    return path, result.output


def _script_help(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"python {script} --help exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def _lists(help_text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None


def test_blocks_not_run_parse() -> None:
    make_targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    checked = 0
    for page in PAGES:
        for block in blocks(page):
            if not block.not_run or block.lang != "bash":
                continue
            for argv in commands(block.text):
                if argv[0] == "muprewrite":
                    path, help_text = _subcommand(argv)
                    used = options(argv)
                elif argv[0] == "make":
                    assert argv[1] in make_targets, f"{block.where}: no make target {argv[1]!r}"
                    checked += 1
                    continue
                elif argv[0] in ("python", "torchrun"):
                    script = next(w for w in argv[1:] if w.endswith(".py"))
                    help_text = _script_help(script)
                    path, used = [script], options(argv[argv.index(script) + 1:])
                else:
                    continue  # a shell variable, optuna-dashboard: not ours to check
                missing = [o for o in used if not _lists(help_text, o)]
                assert not missing, f"{block.where}: {' '.join(path)} --help lists no {missing}"
                checked += 1
    assert checked, "no command of a block marked not run was checked"


def test_relative_links_resolve() -> None:
    for page in PAGES:
        for line, target in links(page):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{_id(page)}:{line}: link to {target} names no file"
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), f"{_id(page)}:{line}: {dest.name} has no heading #{anchor}"
