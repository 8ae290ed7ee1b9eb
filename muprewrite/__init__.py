"""muprewrite: put any PyTorch model into muP by analysing its captured graph.

Stages, in order: ``capture`` (torch.export) -> ``dims`` (which axes grow with width) ->
``analysis`` (roles per parameter, attention sites) -> Report -> ``rewrite`` (plan the rule,
rescale init, install multipliers and attention factors) -> the muP model.
"""

from .analysis.analyze import analyze
from .analysis.report import AttentionSite, BufferInfo, Diagnostic, ParamInfo, Report
from .capture.input_sets import InputSets
from .errors import CaptureError, InputSpecError, ModelSpecError, MuprewriteError, UsageError
from .rewrite.apply import apply, rescale_init
from .rewrite.attached import plan_of
from .rules import Rule, load_rule
from .rules.hparams import Card, HParams, load_card
from .training.optimizer import MuonWithAdamW, optimizer
from .training.param_groups import param_groups

__all__ = ["analyze", "apply", "HParams", "Card", "load_card", "InputSets", "param_groups", "optimizer", "MuonWithAdamW", "plan_of", "rescale_init", "load_rule", "Rule", "Report", "ParamInfo", "AttentionSite", "BufferInfo", "Diagnostic",
           "MuprewriteError", "CaptureError", "ModelSpecError", "InputSpecError", "UsageError"]
__version__ = "0.1.0"

from .training.tuning import tune  # noqa: E402 - the proxy sweep; Optuna is imported only when it runs

__all__ += ["tune"]
