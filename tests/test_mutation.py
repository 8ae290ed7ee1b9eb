"""Mutation test of ``muprewrite check``: an emitted file passes, each mutant of it fails.

A sample that fits the suite's time: a DiT with adaLN-Zero (its output is zero at init, so a
check that compares only at init sees nothing) and a nanoGPT-style GPT whose math attention
path (``self.flash`` off) and generate path (no targets) the example inputs never run. Each
mutant deletes or changes one edit of the emitter (tests/mutation/mutator.py); ``check`` must
exit 1, or exit 3 naming the mutant's line as not exercised. The full run over every style
file and example is benchmarks/mutation_score.py (scores in docs/mutation_score.json).
"""

from __future__ import annotations

import ast
import difflib
import random
from pathlib import Path

import pytest
from mutation.harness import TABLE_KINDS, Emitted, check, emit, judge, write_mutant
from mutation.mutator import Mutant, mutants
from mutation.styles import by_name

CAUGHT = {"caught", "crashed", "not-exercised"}
Emission = tuple[Emitted, Path, list[Mutant]]


def _emission(name: str, tmp: Path) -> Emission:
    emitted = emit(by_name(name), tmp / "emitted")
    reference = write_mutant(emitted, None, tmp / "reference")
    return emitted, reference, emitted.mutants()


@pytest.fixture(scope="module")
def dit(tmp_path_factory: pytest.TempPathFactory) -> Emission:
    return _emission("adaln_dit", tmp_path_factory.mktemp("adaln_dit"))


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Emission:
    return _emission("nano_gpt", tmp_path_factory.mktemp("nano_gpt"))


# -- the mutator ---------------------------------------------------------------------------

def test_mutator_finds_every_edit_of_the_emitter(dit: Emission) -> None:
    """Each edit the emitter made to the user's code has its mutants, and every table kind
    appears; each mutant is valid Python that differs from the file in one place only."""
    emitted, _reference, found = dit
    (rel, text), = emitted.texts.items()
    kinds = {m.kind for m in found}
    assert {"factor-deleted", "factor-changed", "attention-scale-deleted",
            "attention-scale-changed", "mup_init-deleted", "constant-changed",
            "base-changed"} <= kinds
    assert TABLE_KINDS - {"in-branch-flipped"} <= kinds  # no depth rule: no branch flags
    edited = {i + 1 for i, line in enumerate(text.splitlines())
              if "mup_linear_multiplier)" in line or "scale=MUP_D_HEAD_BASE" in line}
    assert edited and edited <= {m.line for m in found if m.kind.startswith(("factor",
                                                                              "attention"))}
    for m in found:
        ast.parse(m.source)
        assert m.source != text and m.file == rel
        edits = [op for op in difflib.SequenceMatcher(a=text.splitlines(), b=m.source.splitlines(),
                                                      autojunk=False).get_opcodes()
                 if op[0] != "equal"]
        assert len(edits) == 1 and edits[0][2] - edits[0][1] <= 1, m.description  # one place


def test_mutator_leaves_the_users_own_code_alone(tmp_path: Path) -> None:
    """Code the emitter did not write is not mutated, however it reads (a user's own
    ``MUP_``-looking factor on an unchanged line)."""
    original = "MUP_X = 2\n\n\ndef f(x):\n    return x * MUP_X\n"
    emitted = "MUP_X = 2\nMUP_Y = 0.5\n\n\ndef f(x):\n    return x * MUP_X\n"
    found = mutants("f.py", emitted, original)
    assert [m.description for m in found if m.kind == "factor-deleted"] == []
    assert {m.description for m in found} == {"MUP_X 2 -> 3", "MUP_Y 0.5 -> 1.0"}


# -- the check on a sample -----------------------------------------------------------------

def test_adaln_zero_file_passes(dit: Emission) -> None:
    emitted, _reference, _found = dit
    code, output = check(emitted, emitted.main)
    assert code == 0, output


def _pick(found: list[Mutant], kind: str, text: str = "") -> Mutant:
    return next(m for m in found if m.kind == kind and text in m.description)


@pytest.mark.parametrize("kind, text", [
    ("factor-deleted", "mup_linear_multiplier"),  # the readout multiplier
    ("attention-scale-changed", ""),  # 1/d_head -> 1/sqrt(d_head)
    ("mup_init-deleted", ""),
])
def test_adaln_zero_mutant_fails_check(dit: Emission, kind: str, text: str,
                                       tmp_path: Path) -> None:
    emitted, reference, found = dit
    verdict = judge(emitted, _pick(found, kind, text), tmp_path / "m", reference)
    assert verdict.differs is not None  # the mutant does behave differently
    assert verdict.verdict in CAUGHT, verdict


def test_seeded_table_mutant_fails_check(dit: Emission, tmp_path: Path) -> None:
    """One table edit drawn with a fixed seed (the first that is not equivalent)."""
    emitted, reference, found = dit
    table = [m for m in found if m.kind in TABLE_KINDS]
    random.Random(20).shuffle(table)
    for mutant in table:
        verdict = judge(emitted, mutant, tmp_path / "m", reference)
        if verdict.verdict != "equivalent":
            assert verdict.verdict in CAUGHT, verdict
            return
    pytest.fail("every table mutant is equivalent")


@pytest.mark.slow
@pytest.mark.parametrize("kind, text, verdict", [
    ("attention-scale-deleted", "", "caught"),  # the flash path: run
    ("factor-deleted", "MUP_D_HEAD_BASE", "not-exercised"),  # the math path: never run
    ("factor-changed", "mup_lm_head_multiplier", "caught"),  # the targets path: run
])
def test_gpt_mutant_on_each_path(gpt: Emission, kind: str, text: str, verdict: str,
                                 tmp_path: Path) -> None:
    """A mutant on a path the example inputs run fails check; one on a path nothing runs
    (``self.flash`` off) is named as not exercised, with exit 3."""
    emitted, reference, found = gpt
    judged = judge(emitted, _pick(found, kind, text), tmp_path / "m", reference)
    assert judged.verdict == verdict, judged
