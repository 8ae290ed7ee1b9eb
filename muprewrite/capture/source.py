"""Where a graph node came from: the user's file:line and the module that ran it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import fx

__all__ = ["Source", "node_source", "node_module"]

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_OWN_DIR = os.path.dirname(os.path.dirname(__file__)) + os.sep


@dataclass(frozen=True)
class Source:
    file: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def node_source(node: fx.Node) -> Source | None:
    """The innermost frame of the node's stack trace outside torch (the user's line)."""
    trace = node.meta.get("stack_trace") or ""
    frames = [Source(f, int(n), code.strip()) for f, n, _fn, code in _FRAME.findall(trace)]
    user = [s for s in frames if not s.file.startswith((_TORCH_DIR, _OWN_DIR))]
    if user:
        return user[-1]
    return frames[-1] if frames else None


def node_module(node: fx.Node) -> str:
    """Qualified name of the innermost module whose forward produced the node ('' = root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path)
