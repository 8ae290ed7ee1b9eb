"""Stage 0 — specs: the user's model file, constructor calls and example inputs, parsed.

``grammar`` parses a spec into calls and literals (never evaluated); ``project`` says which
files are the user's; ``load`` imports the model file, contained; ``build`` resolves calls in
the user's project and constructs; ``inputs`` turns tensor specs into example inputs.
Below both the CLI and emission: nothing here imports either.
"""

from .build import build_model
from .grammar import Call, parse_spec
from .inputs import inputs_for, parse_inputs
from .load import load_module
from .project import project_root

__all__ = ["load_module", "build_model", "parse_inputs", "inputs_for", "parse_spec", "Call", "project_root"]
