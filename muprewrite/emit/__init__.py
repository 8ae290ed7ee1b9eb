"""Stage 6 — emit: the user's model file rewritten into muP as plain PyTorch source.

Sub-packages in import order (each imports only from those before it):

- ``errors.py``: ``EmitError``;
- ``cst/``: the shared libcst helpers (the user's file as nodes with positions, names traced
  back through assignments, values written as inert literals);
- ``find/``: finding the sites in the user's source (the project's files, where the capture
  puts each change, the same computations found by pattern on every path, importers);
- ``plan/``: deciding the edits (the sites and the scans merged into node edits, the
  ``MUP_PARAMS`` entries, depth, head-size guards, base hyperparameters);
- ``write/``: writing the files (the form of each edit, the libcst rewrite, the added block,
  the header, each changed file's new text, where it goes);
- ``emitter.py``: ``emit(...)``, the whole job.
"""

from .emitter import emit
from .errors import EmitError
from .write.emission import Emission, EmittedFile
from .write.header import emitted_rule, is_emitted

__all__ = ["Emission", "EmitError", "EmittedFile", "emit", "emitted_rule", "is_emitted"]
