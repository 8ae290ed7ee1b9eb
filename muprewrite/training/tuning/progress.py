"""Progress of a sweep on standard error: a tqdm bar if tqdm is installed, else one line per
trial. It reads the study (every worker's trials), so the same object serves one
in-process worker (called after each trial) and a parent watching spawned workers (called
every half second).
"""

from __future__ import annotations

import math
import sys
from typing import Any

__all__ = ["Progress", "trial_line"]


class Progress:
    """Report each trial of ``study`` once, as it finishes; ``enabled=False``: silent."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled
        self.seen: set[int] = set()
        self.bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc="trials", unit="trial", file=sys.stderr,
                                dynamic_ncols=True)

    def start(self, study: Any) -> None:
        """Mark the trials a resumed study already holds as seen (counted, not printed)."""
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        self.seen.update(t.number for t in done)
        if self.bar is not None:
            self.bar.update(min(self.total, sum(t.state.name in ("COMPLETE", "PRUNED")
                                                for t in done)))

    def poll(self, study: Any) -> None:
        if not self.enabled:
            return
        new = [t for t in study.get_trials(deepcopy=False)
               if t.state.is_finished() and t.number not in self.seen]
        best = _best(study)
        for t in sorted(new, key=lambda t: t.number):
            self.seen.add(t.number)
            line = trial_line(t, best)
            if self.bar is None:
                print(line, file=sys.stderr, flush=True)
                continue
            if t.state.name in ("COMPLETE", "PRUNED"):
                self.bar.update(1)
            else:
                self.bar.write(line, file=sys.stderr)
            if best is not None:
                self.bar.set_postfix(best=f"{best:.4g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def trial_line(t: Any, best: float | None = None) -> str:
    """``trial 3 COMPLETE 1.234 (best 1.2) lr=0.003 output_multiplier=2.1``."""
    state = t.state.name
    value = f" {t.value:.6g}" if state == "COMPLETE" and t.value is not None else ""
    if state == "PRUNED":
        value = f" at step {max(t.intermediate_values, default=0)}"
    best_text = f" (best {best:.6g})" if best is not None and math.isfinite(best) else ""
    params = " ".join(f"{k}={v:.3g}" for k, v in t.params.items())
    error = t.user_attrs.get("error")
    tail = f": {error}" if state == "FAIL" and error else ""
    return f"trial {t.number} {state}{value}{best_text} {params}{tail}".rstrip()


def _best(study: Any) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False)
              if t.state.name == "COMPLETE" and t.value is not None]
    return min(values) if values else None
