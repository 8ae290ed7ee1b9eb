"""muprewrite: put any PyTorch model into muP by analysing its captured graph.

Stages, in order: ``capture`` (torch.export) -> ``dims`` (which axes grow with width) ->
``analysis`` (roles per parameter, attention sites) -> Report.
"""

from .analysis.report import AttentionSite, BufferInfo, Diagnostic, ParamInfo, Report
from .analyzer import analyze
from .errors import CaptureError, InputSpecError, ModelSpecError, MuprewriteError
from .optim import param_groups
from .rules import Rule, load_rule

__all__ = ["analyze", "param_groups", "load_rule", "Rule", "Report", "ParamInfo", "AttentionSite", "BufferInfo", "Diagnostic",
           "MuprewriteError", "CaptureError", "ModelSpecError", "InputSpecError"]
__version__ = "0.1.0"
