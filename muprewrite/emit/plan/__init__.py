"""Deciding the edits: the sites and the scans merged into node edits, and what the block holds.

``edits.py`` (one node's edit, one file's edits), ``complete.py`` (the captured sites and the
pattern scans merged into them), ``entries.py`` (each parameter's line of ``MUP_PARAMS``),
``depth.py`` (the blocks, branch hosts and base partners under a depth rule; ``runtime.py``:
the pairing the emitted file runs, run here too), ``head_guards.py`` (attention whose head size
did not grow), ``tuned.py`` (the sites and classes of a file with base hyperparameters).
"""
