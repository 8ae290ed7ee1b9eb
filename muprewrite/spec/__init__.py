"""Stage 0 — specs: the user's model file, constructor calls and example inputs, parsed.

Below both the CLI and emission: nothing here imports either.
"""

from .legacy import build_model, load_module, parse_call, parse_inputs

__all__ = ["load_module", "build_model", "parse_inputs", "parse_call"]
