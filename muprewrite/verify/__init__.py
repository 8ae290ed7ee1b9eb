"""Verification users can look at: coordinate checks, learning-rate transfer sweeps and the
spectral check.

``coordcheck.py`` (activation size against width or depth), ``sweep.py`` (loss against learning
rate at several widths or depths), ``spectral.py`` (spectral norms of weights and updates
against width), ``plots.py`` and ``spectral_plots.py`` (the figures; matplotlib is imported
only there).
"""

from .coordcheck import CoordCheck, coord_check, coord_check_depth
from .spectral import Spectra, spectral_check
from .sweep import Sweep, lr_sweep, lr_sweep_depth

__all__ = ["CoordCheck", "coord_check", "coord_check_depth", "Sweep", "lr_sweep", "lr_sweep_depth",
           "Spectra", "spectral_check"]
