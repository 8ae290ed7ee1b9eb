"""Stage 6 — emit: the user's model file rewritten into muP as plain PyTorch source.

``sites.py`` (where the capture puts each change), ``source.py`` / ``readouts.py`` /
``attention.py`` / ``trace.py`` (the same computations found by pattern in every method of
the classes concerned, so that paths no capture ran are edited too, or refused at their
line), ``complete.py`` (the two merged into node edits), ``forms.py`` (the text of each edit),
``transform.py`` (the libcst rewrite), ``block.py`` (the added constants and functions),
``tuned.py`` (the base hyperparameters in them, when emission is given a card),
``project.py`` (the user's files, parsed once each), ``assemble.py`` (the new text of each
changed file), ``outputs.py`` (where each file goes: one file, a mirrored tree, in place),
``emitter.py`` (the whole job).
"""

from .emitter import Emission, EmittedFile, emit, emitted_rule, is_emitted
from .errors import EmitError

__all__ = ["Emission", "EmitError", "EmittedFile", "emit", "emitted_rule", "is_emitted"]
