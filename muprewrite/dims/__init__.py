"""Stage 2 — dimensions: which tensor axes grow with width.

``build_axis_graph(capture)`` turns a captured graph into a graph over tensor axes (one rule
per op family, in ``rules/``); ``solve(graph, marks)`` decides every axis class.
"""

from .axes import Axis, AxisGraph, Strength
from .build import build_axis_graph
from .solve import Dims, Mark, Note, solve

__all__ = ["Axis", "AxisGraph", "Strength", "build_axis_graph", "Dims", "Mark", "Note", "solve"]
