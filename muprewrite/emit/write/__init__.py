"""Writing the files: the block text, the libcst rewrite of each changed file, where files go.

``forms.py`` (the new node of each edit), ``transform.py`` (the libcst rewrite that makes the
node edits, the class defaults and the ``mup_init(self)`` call), ``block.py`` (the constants and
functions added to the main file; ``optimizer_block.py``, ``depth_block.py``,
``tuned_block.py``, ``head_guard_block.py``: their parts for the rule's optimizer, a depth rule,
base hyperparameters and unedited attention), ``header.py`` (the header comment, written and
read back), ``emission.py`` (the result types), ``assemble.py`` (the new text of each changed
file), ``outputs.py`` (where each file goes: one file, a mirrored tree, in place).
"""
