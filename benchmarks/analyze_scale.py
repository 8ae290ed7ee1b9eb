"""Analyse production-scale models on the meta device: wall time and peak RSS.

Models: a ~19B MMDiT (diffusers SD3Transformer2DModel, 56 layers, 48 heads x 64) and a
Llama-70B-shaped transformers config. Each runs in its own subprocess so peak RSS is its
own. Capture (torch.export on meta) and analysis (dimension graph, solve, classify) are
timed separately; peak RSS is read after each stage (it only grows).

    python benchmarks/analyze_scale.py            # both models
    python benchmarks/analyze_scale.py sd3_19b    # one

Target (issue 2): whole analysis under 30 s and under 1 GB peak RSS per model, 2-core CPU.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

MODELS = ("sd3_19b", "llama_70b")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def measure(name: str) -> dict:
    import scale_configs as cfg
    import torch

    from muprewrite.analysis.analyze import analyze
    from muprewrite.analysis.attention import find_attention, heads_marks
    from muprewrite.capture.export import capture

    build = {"sd3_19b": cfg.build_sd3_19b, "llama_70b": cfg.build_llama_70b}[name]
    inputs = {"sd3_19b": cfg.sd3_19b_inputs, "llama_70b": cfg.llama_70b_inputs}[name]
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = build()
    args, kwargs = inputs(model)
    t_build = time.perf_counter() - t0
    rss_build = _peak_rss_mb()

    t0 = time.perf_counter()
    cap = capture(model, [(args, kwargs)])
    t_capture = time.perf_counter() - t0
    rss_capture = _peak_rss_mb()

    # The analysis proper, on the capture above (same steps analyze() runs after capture).
    from muprewrite.analysis.analyze import _facts
    from muprewrite.analysis.classify import classify_params
    from muprewrite.analysis.residual import find_residuals
    from muprewrite.dims import build_axis_graph, solve

    t0 = time.perf_counter()
    axes = build_axis_graph(cap)
    dims = solve(axes, heads_marks(find_attention(cap.graph), "grow"))
    params, _ = classify_params(cap, dims, _facts(model, None, {}))
    residuals = find_residuals(cap)
    t_analysis = time.perf_counter() - t0
    rss_analysis = _peak_rss_mb()

    t0 = time.perf_counter()
    report = analyze(model, (args, kwargs))  # end to end, as users call it
    t_end_to_end = time.perf_counter() - t0

    # with a base of 4 blocks and 1/6 of the width (CompleteP's setting): both captures, the
    # pairing of the model's blocks with the base's, the width diff
    with torch.device("meta"):
        base = {"sd3_19b": cfg.build_sd3_19b_base, "llama_70b": cfg.build_llama_70b_base}[name]()
    t0 = time.perf_counter()
    deep = analyze(model, (args, kwargs), base=base)
    t_depth_base = time.perf_counter() - t0
    roles: dict[str, int] = {}
    for p in report:
        roles[p.role] = roles.get(p.role, 0) + 1
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "graph_nodes": len(cap.graph.nodes),
        "axes": axes.equal.number_of_nodes(),
        "build_s": round(t_build, 2),
        "capture_s": round(t_capture, 2),
        "analysis_s": round(t_analysis, 2),
        "analyze_end_to_end_s": round(t_end_to_end, 2),
        "peak_rss_mb_after_build": round(rss_build),
        "peak_rss_mb_after_capture": round(rss_capture),
        "peak_rss_mb_after_analysis": round(rss_analysis),
        "peak_rss_mb_total": round(_peak_rss_mb()),
        "roles": roles,
        "classified": len(params),
        "residual_branches": len(residuals.branches),
        "analyze_with_depth_base_s": round(t_depth_base, 2),
        "depth_ratio": deep.depth_ratio,
        "depth": residuals.depth,
    }


def main() -> None:
    if "--child" in sys.argv:
        print(json.dumps(measure(sys.argv[1])))
        return
    for name in sys.argv[1:] or MODELS:
        proc = subprocess.run([sys.executable, __file__, name, "--child"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-3000:]}")
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{row['model']}: {row['parameters'] / 1e9:.1f}B params, {row['graph_nodes']} nodes, "
              f"{row['axes']} axes | build {row['build_s']} s, capture {row['capture_s']} s, "
              f"analysis {row['analysis_s']} s, analyze() end to end "
              f"{row['analyze_end_to_end_s']} s | peak RSS {row['peak_rss_mb_total']} MB "
              f"(after capture {row['peak_rss_mb_after_capture']} MB) | roles {row['roles']} | "
              f"{row['residual_branches']} residual branches, depth {row['depth']} | with a "
              f"base of another depth (m_L = {row['depth_ratio']:g}): "
              f"{row['analyze_with_depth_base_s']} s")


if __name__ == "__main__":
    main()
