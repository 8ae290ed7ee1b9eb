"""Mutation score of ``muprewrite check``: every single-edit mutant of each emitted file.

For each style model (tests/mutation/models) and each bundled example: emit it, check the
file (it must pass), then check every mutant of what the emitter wrote (tests/mutation/mutator
lists them). A mutant is caught when ``muprewrite check`` exits 1, or exits 3 naming its line
(an edit no run reached); equivalent mutants (an edit of the tables that changes no factor,
init or multiplier at any size checked) are listed and left out of the score.

    .venv/bin/python benchmarks/mutation_score.py                      # everything (hours)
    .venv/bin/python benchmarks/mutation_score.py --files adaln_dit,nano_gpt
    .venv/bin/python benchmarks/mutation_score.py --table-sample 3     # 3 table edits per kind
    .venv/bin/python benchmarks/mutation_score.py --files example_mlp --merge  # add one file
    .venv/bin/python benchmarks/mutation_score.py --json docs/mutation_score_full.json \
        --rejudge equivalent                   # judge the equivalent ones again

Prints one line per mutant and the score per file, and writes docs/mutation_score.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mutation.harness import STEPS, TABLE_KINDS, Emitted, check, emit, judge, write_mutant  # noqa: E402
from mutation.mutator import Mutant  # noqa: E402
from mutation.styles import STYLES, Style, by_name  # noqa: E402

CAUGHT = {"caught", "crashed", "not-exercised"}


def sampled(mutants: list[Mutant], per_kind: int | None, seed: int) -> list[Mutant]:
    """Every code edit, and ``per_kind`` table edits of each kind (None: all), seeded."""
    if per_kind is None:
        return mutants
    rng = random.Random(seed)
    kept = [m for m in mutants if m.kind not in TABLE_KINDS]
    for kind in sorted(TABLE_KINDS):
        of_kind = [m for m in mutants if m.kind == kind]
        kept += rng.sample(of_kind, min(per_kind, len(of_kind)))
    return sorted(kept, key=lambda m: (m.file, m.line, m.kind, m.description))


def score_file(style: Style, work: Path, per_kind: int | None, seed: int,
               earlier: dict[tuple, list[dict]] | None = None, rejudge: str = ""
               ) -> dict[str, Any]:
    """``earlier``/``rejudge``: the verdicts of an earlier run, by mutant (file, kind,
    description, in order); those whose verdict is ``rejudge`` are judged again, and so is a
    mutant the earlier run did not have (a table added since); the others are kept."""
    started = time.perf_counter()
    emitted: Emitted = emit(style, work / "emitted")
    code, output = check(emitted, emitted.main)
    lines = output.strip().splitlines()
    record: dict[str, Any] = {"file": style.file, "model": style.model, "base": style.base,
                              "checks": list(style.checks), "rule": style.rule,
                              "file_check": {"exit": code, "last": lines[-1] if lines else ""}}
    every = emitted.mutants()
    chosen = sampled(every, per_kind, seed)
    reference = write_mutant(emitted, None, work / "reference")
    verdicts = []
    for mutant in chosen:
        # the n-th mutant of this description: lines move when the emitter's block grows
        key = (mutant.file, mutant.kind, mutant.description)
        before = earlier.get(key, []).pop(0) if earlier is not None and earlier.get(key) else None
        if before is not None and before["verdict"] != rejudge:
            verdicts.append({**before, "line": mutant.line})
            continue
        t = time.perf_counter()
        v = judge(emitted, mutant, work / "mutant", reference)
        verdicts.append({"file": mutant.file, "line": mutant.line, "kind": mutant.kind,
                         "description": mutant.description, "verdict": v.verdict,
                         "exit": v.exit_code, "probe": v.differs, "message": v.message,
                         "seconds": round(time.perf_counter() - t, 1)})
        print(f"  {v.verdict:14} {mutant.file}:{mutant.line} {mutant.description}"
              f" [{verdicts[-1]['seconds']} s]", flush=True)
    counted = [v for v in verdicts if v["verdict"] != "equivalent"]
    caught = sum(v["verdict"] in CAUGHT for v in counted)
    record.update({
        "mutants": len(every), "run": len(chosen),
        "equivalent": sum(v["verdict"] == "equivalent" for v in verdicts),
        "caught": caught, "counted": len(counted),
        "score": round(caught / len(counted), 4) if counted else None,
        "verdicts": dict(Counter(v["verdict"] for v in verdicts)),
        "survivors": [v for v in counted if v["verdict"] not in CAUGHT],
        "all": verdicts, "seconds": round(time.perf_counter() - started, 1)})
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="", help="comma-separated style names (default all)")
    parser.add_argument("--table-sample", type=int, default=None, metavar="N",
                        help="N seeded mutants per table kind (default: every mutant)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(ROOT / "docs" / "mutation_score.json"))
    parser.add_argument("--merge", action="store_true",
                        help="keep the other files' results already in --json")
    parser.add_argument("--rejudge", default="", metavar="VERDICT",
                        help="judge again only the mutants --json holds with this verdict "
                             "(e.g. equivalent), keeping the others' (implies --merge)")
    args = parser.parse_args()
    args.merge = args.merge or bool(args.rejudge)
    names = [n for n in args.files.split(",") if n]
    styles = [by_name(n) for n in names] if names else STYLES
    results: dict[str, Any] = {}
    stored = json.loads(Path(args.json).read_text())["files"] if args.rejudge else {}
    with tempfile.TemporaryDirectory() as tmp:
        for style in styles:
            print(f"{style.name}: {style.file}", flush=True)
            try:
                earlier: dict[tuple, list[dict]] | None = None
                if args.rejudge:
                    earlier = {}
                    for v in stored[style.name]["all"]:
                        earlier.setdefault((v["file"], v["kind"], v["description"]), []).append(v)
                results[style.name] = score_file(style, Path(tmp) / style.name,
                                                 args.table_sample, args.seed, earlier,
                                                 args.rejudge)
            except Exception as exc:  # noqa: BLE001 - one file's failure is reported, not fatal
                results[style.name] = {"file": style.file, "error": f"{type(exc).__name__}: {exc}"}
            r = results[style.name]
            print(f"{style.name}: " + (f"score {r['caught']}/{r['counted']} "
                  f"({r['equivalent']} equivalent, {r['run']} of {r['mutants']} run), file check "
                  f"exit {r['file_check']['exit']}" if "error" not in r else r["error"]),
                  flush=True)
            _write(args, results)  # after each file: a long run stopped keeps what it did


def _write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    summary = {"steps": STEPS, "table_sample": args.table_sample, "seed": args.seed,
               "files": results}
    if args.merge and Path(args.json).is_file():
        earlier = json.loads(Path(args.json).read_text())
        if (earlier.get("steps"), earlier.get("table_sample"), earlier.get("seed")) != (
                STEPS, args.table_sample, args.seed):
            raise SystemExit(f"{args.json} was written with other settings: not merged")
        summary["files"] = {**earlier["files"], **results}
        if "note" in earlier:
            summary = {**{k: v for k, v in summary.items() if k != "files"},
                       "note": earlier["note"], "files": summary["files"]}
    Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
