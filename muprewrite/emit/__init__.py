"""Stage 6 — emit: the user's model file rewritten into muP as plain PyTorch source.

``sites.py`` (where each change goes), ``transform.py`` (the libcst edits), ``block.py``
(the added constants and functions), ``emitter.py`` (the whole job).
"""

from .emitter import Emission, emit, emitted_rule, is_emitted
from .sites import EmitError

__all__ = ["Emission", "EmitError", "emit", "emitted_rule", "is_emitted"]
