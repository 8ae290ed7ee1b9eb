"""The Report: an immutable value keyed by parameter name. Nothing is stored on tensors.

Its records (ParamInfo, BufferInfo, AttentionSite, Diagnostic) live in records.py and
diagnostic.py, its text table in render.py; all three are re-exported here."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

from .diagnostic import Diagnostic
from .records import AttentionSite, BufferInfo, ParamInfo, Role

if TYPE_CHECKING:
    from ..dims.width_constants import WidthConstant
    from .residual import ResidualStream

__all__ = ["Role", "ParamInfo", "BufferInfo", "AttentionSite", "Diagnostic", "Report"]


@dataclass(frozen=True)
class Report:
    """Analysis result. ``report["blocks.0.attn.qkv.weight"].role == "hidden"``."""

    model: str
    mode: Literal["single", "base"]
    heads: str
    params: Mapping[str, ParamInfo]
    attention: tuple[AttentionSite, ...]
    buffers: tuple[BufferInfo, ...]
    diagnostics: tuple[Diagnostic, ...] = field(default=())
    residuals: ResidualStream | None = None  # the residual branches (None: not analysed)
    depth_base: int | None = None  # the base's block count (with base)
    base_names: Mapping[str, str] = field(default_factory=dict)  # model -> base parameter,
    # where the base has another depth (blocks paired by position in the repeated block)
    branch_depths: Mapping[str, float] = field(default_factory=dict)  # m_L of each branch
    # add's residual stream (add node name; with a base, see analysis/streams.py)
    width_constants: tuple[WidthConstant, ...] = ()  # scalars in forward that differ from
    # the base's (with base; see dims/width_constants.py)

    @property
    def depth(self) -> int:
        """L: the model's number of blocks (0 without residual branches)."""
        return self.residuals.depth if self.residuals is not None else 0

    @property
    def depth_ratio(self) -> float:
        """m_L = L / L_base (1 without base or without residual branches)."""
        if not self.depth or not self.depth_base:
            return 1.0
        return self.depth / self.depth_base

    def uncaptured(self, base_shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
        """Trainable parameters that grow with width (against their base partner's shape) but
        that no captured op used: they get no factor, and the forward may use them on a path
        no input set ran."""
        return [i.name for i in self if i.role == "unused" and i.trainable
                and tuple(base_shapes.get(self.base_name(i.name), i.shape)) != tuple(i.shape)]

    def base_name(self, name: str) -> str:
        """The base parameter paired with the model's ``name``."""
        return self.base_names.get(name, name)

    def __getitem__(self, name: str) -> ParamInfo:
        return self.params[name]

    def __deepcopy__(self, memo: dict) -> Report:
        return self  # immutable

    def __iter__(self) -> Iterator[ParamInfo]:
        return iter(self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    def mismatches(self, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
        """How a model with these parameter shapes (name -> shape) differs from the one
        analysed: names missing on either side, shapes that differ; empty if it matches."""
        out = [f"{name!r} is not in the report" for name in shapes if name not in self.params]
        out += [f"{name!r} is in the report but not in the model" for name in self.params
                if name not in shapes]
        out += [f"{name!r} has shape {tuple(shape)} but {self.params[name].shape} in the report"
                for name, shape in shapes.items()
                if name in self.params and tuple(shape) != tuple(self.params[name].shape)]
        return out

    def roles(self) -> dict[str, Role]:
        return {name: info.role for name, info in self.params.items()}

    @property
    def assumptions(self) -> tuple[str, ...]:
        """What the analysis assumed rather than measured (empty with ``base``)."""
        if self.mode == "base":
            return ()
        grow = "number of heads grows, d_head fixed" if self.heads == "grow" \
            else "d_head grows, number of heads fixed"
        return (f"heads convention '{self.heads}': {grow}",
                "single capture: width axes are those bounded by no input, output or constant")

    def to_dict(self) -> dict:
        return {
            "model": self.model, "mode": self.mode, "heads": self.heads,
            "assumptions": list(self.assumptions),
            "params": {n: asdict(p) for n, p in self.params.items()},
            "attention": [asdict(a) for a in self.attention],
            "buffers": [asdict(b) for b in self.buffers],
            "diagnostics": [asdict(d) for d in self.diagnostics],
            "width_constants": [asdict(c) for c in self.width_constants],
            "depth": self.depth, "depth_base": self.depth_base,
            "residuals": {**asdict(self.residuals), "inside": sorted(self.residuals.inside)}
            if self.residuals is not None else None,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self, collapse: bool = True) -> str:
        """Aligned text table; rows differing only in a layer index merge unless ``collapse=False``."""
        from .render import render_table  # the table's code, loaded when first asked for

        return render_table(self, collapse)

    def __str__(self) -> str:
        return self.table()
