"""Tune once, on the proxy: the learning rate and muP's base multipliers, with Optuna.

Stages: ``space`` (log-uniform ranges) -> ``trial`` (the muP proxy of one setting, the user's
``train(run)``, guarded) -> ``worker`` (trials of one study until it holds ``n_trials``
finished ones; any number of processes) -> ``study`` (``tune``: probe, study, workers, card)
-> ``ledger`` (the sweep's FLOPs as a share of one target run) -> ``transfer`` (a short check
at the target width around the transferred setting) -> ``plots``.

Optuna is imported only when a sweep runs (``pip install 'muprewrite[tune]'``).
The package is named ``tuning`` so that ``muprewrite.tune``, the function, shadows no module.
"""

from .errors import TrialDiverged, TrialTimeout, TuneError
from .ledger import Ledger, TrialCost, flops_per_step
from .result import TuneResult
from .space import Point, Range, Space
from .study import tune
from .transfer import TransferCheck, TransferPoint, verify_transfer
from .trial import Outcome, TrialRun, run_train

__all__ = ["tune", "TuneResult", "TrialRun", "Space", "Range", "Point", "Ledger", "TrialCost",
           "flops_per_step", "Outcome", "run_train", "TuneError", "TrialTimeout",
           "TrialDiverged", "verify_transfer", "TransferCheck", "TransferPoint"]
