"""A two-file PixArt-style model: blocks in ``blocks.py``, the model in ``model.py``."""
