"""Verification users can look at: coordinate checks and learning-rate transfer sweeps.

``coordcheck.py`` (activation size against width), ``sweep.py`` (loss against learning rate
at several widths), ``plots.py`` (the figures; matplotlib is imported only there).
"""

from .coordcheck import CoordCheck, coord_check
from .sweep import Sweep, lr_sweep

__all__ = ["CoordCheck", "coord_check", "Sweep", "lr_sweep"]
