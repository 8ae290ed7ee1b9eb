"""What a sweep returns: the best trial as a card, the study and the cost ledger.

The card (:class:`muprewrite.rules.hparams.Card`) holds the best trial's learning rate, weight
decay and base hyperparameters with the rule and base they were tuned under, plus
``[proxy]`` (the study: model, budget, trials, best value, sampler, pruner, storage),
``[space]`` (name = [low, high]) and ``[ledger]`` (the FLOPs spent and their share of one
target run). ``card.to_toml()`` is what ``muprewrite tune -o card.toml`` writes and
``muprewrite.apply(..., hparams="card.toml")`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...rules.hparams import Card
from .errors import TuneError
from .ledger import Ledger
from .space import Space

__all__ = ["TuneResult", "best_card"]


@dataclass(frozen=True)
class TuneResult:
    """``card``: the best setting; ``study``: the Optuna study (every trial); ``ledger``: the
    cost; ``stopped``: "done" (n_trials finished) or "failures" (too many failed)."""

    card: Card
    study: Any
    ledger: Ledger
    stopped: str = "done"

    @property
    def best_value(self) -> float:
        return float(self.study.best_value)

    def summary(self) -> str:
        """Best value and setting, the trials' fate and the cost, one line each."""
        states = [t.state.name for t in self.study.get_trials(deepcopy=False)]
        fate = ", ".join(f"{states.count(s)} {s.lower()}" for s in
                         ("COMPLETE", "PRUNED", "FAIL") if s in states)
        changed = self.card.hparams.changed()
        setting = ", ".join([f"lr={self.card.lr:.4g}"] + [f"{k}={v:.4g}" for k, v in
                                                          changed.items()])
        lines = [f"best value {self.best_value:.6g} (trial {self.study.best_trial.number}): "
                 f"{setting}", f"trials: {fate}", self.ledger.summary()]
        if self.stopped == "failures":
            lines.insert(1, "stopped early: too many trials failed (see their 'error' "
                            "attribute, e.g. in optuna-dashboard)")
        return "\n".join(lines)


def best_card(study: Any, *, space: Space, weight_decay: float, rule: str, base: str,
              proxy: dict[str, Any], ledger: Ledger) -> Card:
    """The card of ``study``'s best trial; TuneError (with the first errors) if no trial
    completed."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        errors = [f"trial {t.number}: {t.user_attrs['error']}"
                  for t in study.get_trials(deepcopy=False) if t.user_attrs.get("error")]
        shown = "; ".join(errors[:3]) if errors else "no trial reported an error"
        raise TuneError(f"no trial of study {study.study_name!r} completed ({shown})",
                        fix="run your train function on the proxy by hand to see it work, "
                            "then tune again (the study resumes)")
    best = study.best_trial
    point = space.point(best.params, weight_decay)
    table = {**proxy, "best_value": float(best.value), "best_trial": best.number,
             "finished": sum(t.state.name in ("COMPLETE", "PRUNED")
                             for t in study.get_trials(deepcopy=False)),
             "tuned": list(space.tuned)}
    return Card(point.hparams, lr=point.lr, weight_decay=point.weight_decay, rule=rule,
                base=base, extra={"proxy": table, "space": space.to_dict(),
                                  "ledger": ledger.to_table()})
