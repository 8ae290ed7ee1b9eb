"""Verification users can look at: coordinate checks and learning-rate transfer sweeps.

``coordcheck.py`` (activation size against width or depth), ``sweep.py`` (loss against learning
rate at several widths or depths), ``plots.py`` (the figures; matplotlib is imported only there).
"""

from .coordcheck import CoordCheck, coord_check, coord_check_depth
from .sweep import Sweep, lr_sweep, lr_sweep_depth

__all__ = ["CoordCheck", "coord_check", "coord_check_depth", "Sweep", "lr_sweep", "lr_sweep_depth"]
