"""Figures of a sweep: the final loss against each hyperparameter, PNG (or any format
matplotlib writes) plus a JSON file with every number.

One panel per hyperparameter (log2 of its value on x, the trial's loss on y), one series
per study: pass several studies (one per proxy width, say) to see whether the optimum stays
put as the width changes, which is muP's promise. Each series' best trial is a star; a
``mark`` (the transferred setting) is a dashed line in each panel. Only complete trials are
drawn: a pruned trial's last loss was taken earlier and is not comparable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...files import write_files
from ...files.figures import figure_bytes, image_format

__all__ = ["tuning_data", "tuning_image", "plot_tuning"]


def tuning_data(series: Sequence[tuple[str, Any]], mark: Mapping[str, float] | None = None,
                **meta: Any) -> dict[str, Any]:
    """The numbers drawn: ``series`` is (label, study or TuneResult) pairs; ``meta`` goes
    to the top level as is (e.g. study_name, storage)."""
    out: list[dict[str, Any]] = []
    names: list[str] = []
    for label, source in series:
        study = getattr(source, "study", source)
        trials = [{"number": t.number, "state": t.state.name, "value": t.value,
                   "params": dict(t.params)} for t in study.get_trials(deepcopy=False)
                  if t.state.name == "COMPLETE" and t.value is not None
                  and math.isfinite(t.value)]
        for t in trials:
            names += [n for n in t["params"] if n not in names]
        best = min(trials, key=lambda t: t["value"]) if trials else None
        out.append({"label": label, "trials": trials, "best": best})
    return {**meta, "hyperparameters": names, "series": out,
            "mark": dict(mark) if mark else None}


def tuning_image(data: Mapping[str, Any], title: str = "", fmt: str = "png") -> bytes:
    """Draw :func:`tuning_data`'s numbers."""
    plt = _pyplot()
    names = data["hyperparameters"] or ["lr"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False,
                             sharey=True)
    cmap = plt.get_cmap("viridis")
    values = [t["value"] for s in data["series"] for t in s["trials"]]
    n = len(data["series"])
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        for i, s in enumerate(data["series"]):
            color = cmap(i / max(1, n - 1)) if n > 1 else "tab:blue"
            pts = [(math.log2(t["params"][name]), t["value"]) for t in s["trials"]
                   if name in t["params"]]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=14, color=color, alpha=0.7,
                           label=s["label"])
            best = s["best"]
            if best is not None and name in best["params"]:
                ax.plot(math.log2(best["params"][name]), best["value"], marker="*", ms=13,
                        color=color, markeredgecolor="black", linestyle="none")
        mark = (data.get("mark") or {}).get(name)
        if mark:
            ax.axvline(math.log2(mark), color="tab:red", ls="--", lw=1)
        ax.set_xlabel(f"log2 {name}")
        ax.grid(alpha=0.3)
    if values and min(values) > 0 and max(values) / min(values) > 10:
        axes[0][0].set_yscale("log")
    for row in axes:
        row[0].set_ylabel("final loss")
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    if n > 1:
        axes[0][-1].legend(fontsize=7)
    fig.suptitle(title or "proxy sweep: loss against each hyperparameter "
                 "(star: best trial, dashed: marked setting)", fontsize=9)
    fig.tight_layout()
    return figure_bytes(fig, plt, fmt)


def plot_tuning(series: Sequence[tuple[str, Any]], path: str | Path, *,
                mark: Mapping[str, float] | None = None, title: str = "",
                json_path: str | Path | None = None, force: bool = False,
                **meta: Any) -> tuple[Path, Path]:
    """Write the figure to ``path`` and its numbers to ``json_path`` (default: ``path`` with
    .json), both or neither."""
    path = Path(path)
    data_path = Path(json_path) if json_path is not None else path.with_suffix(".json")
    data = tuning_data(series, mark, **meta)
    image = tuning_image(data, title, fmt=image_format(path))
    write_files([(path, image), (data_path, json.dumps(data, indent=1).encode())], force=force)
    return path, data_path


def _pyplot() -> Any:
    image_format("x.png")  # ImportError with the fix if matplotlib is missing
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
