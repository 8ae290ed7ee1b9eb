"""Diagnostic: one thing the analysis tells the user (info, warning or error), where, and the fix.

The lowest module of the analysis: every stage that reports something imports it, and it
imports nothing of the package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Diagnostic"]


@dataclass(frozen=True)
class Diagnostic:
    severity: Literal["info", "warning", "error"]
    code: str
    where: str
    message: str
    fix: str = ""
