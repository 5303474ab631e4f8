"""Published peaks of known GPUs and `funcnn bench`'s table and
roofline figure (log-log: achieved GFLOP/s against arithmetic intensity FLOP/byte, under
the roof min(P, W I) of the measured GEMM peak P and stream bandwidth W)."""
from __future__ import annotations

import os

from funcnn.core import extras

# Published dense peaks (vendor datasheets): TFLOP/s by dtype, memory bandwidth TB/s.
# Matched against jax's device_kind, most specific first.
PUBLISHED = (
    ("H100 PCIe", {"bf16_tflops": 756.0, "fp32_tflops": 51.0, "bandwidth_tbytes_per_s": 2.0}),
    ("H100", {"bf16_tflops": 989.0, "fp32_tflops": 67.0, "bandwidth_tbytes_per_s": 3.35}),
    ("H200", {"bf16_tflops": 989.0, "fp32_tflops": 67.0, "bandwidth_tbytes_per_s": 4.8}),
    ("A100", {"bf16_tflops": 312.0, "fp32_tflops": 19.5, "bandwidth_tbytes_per_s": 2.0}),
)


def published_peak(device_kind: str) -> dict | None:
    """The datasheet peaks of a known GPU (`PUBLISHED`, matched on `device_kind`), or None."""
    for name, peaks in PUBLISHED:
        if name.lower() in device_kind.lower():
            return {"device": name, **peaks}
    return None


def _num(v, fmt):
    return "-" if v is None else format(v, fmt)


def table(result: dict) -> str:
    """A Markdown table of every case of `result` (what `funcnn.bench.run` returns): median and
    IQR ms, compile ms, GFLOP/s, % of peak, FLOP/byte and the ratio to funcnn manual."""
    peak = result["peak"]
    load = result.get("load_average")
    lines = [f"funcnn bench ({result['setting']['name']}), {result['date']}",
             f"{result['machine']}" + (f" (load average {load:.1f} at the end)" if load is not None else "")
             + f"; {result['versions']}",
             f"measured peak P = {peak['measured_gemm_gflops']:.1f} GFLOP/s (best GEMM), "
             f"bandwidth W = {peak['measured_bandwidth_gbytes_per_s']:.1f} GB/s (stream)"]
    if peak["published"]:
        p = peak["published"]
        lines.append(f"published ({p['device']}): {p['bf16_tflops']:.0f} TFLOP/s bf16 dense, "
                     f"{p['fp32_tflops']:.1f} TFLOP/s fp32, {p['bandwidth_tbytes_per_s']:.2f} TB/s")
    lines += ["compile ms: trace + compile + first call; the first case of a shape also pays the autotuner's "
              "measurements (later cases reuse its choices).",
              "", "| case | median ms | IQR ms | compile ms | GFLOP/s | % of peak | FLOP/byte | vs manual |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["kernels"] + result["steps"]:
        lines.append(f"| {r['name']} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {_num(r['compile_ms'], '.0f')} | "
                     f"{_num(r['gflops'], '.1f')} | {_num(r['pct_of_peak'], '.1f')} | {_num(r['intensity'], '.2f')} | "
                     f"{_num(r.get('ratio_to_manual'), '.2f')} |")
    return "\n".join(lines) + "\n"


def roofline(result: dict, path: str | os.PathLike) -> None:
    """Write the roofline figure of `result` (what `funcnn.bench.run` returns) as a PNG at `path`.

    matplotlib is imported here: only the figure needs it.
    """
    plt = extras.pyplot("the roofline figure")
    import numpy as np

    peak = result["peak"]["measured_gemm_gflops"]
    bw = result["peak"]["measured_bandwidth_gbytes_per_s"]
    rows = [r for r in result["kernels"] + result["steps"] if r["gflops"] and r["intensity"]]
    lo = min([r["intensity"] for r in rows] + [0.1]) / 2
    hi = max([r["intensity"] for r in rows] + [10 * peak / bw]) * 2
    xs = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.plot(xs, np.minimum(peak, bw * xs), "k-", lw=2, label=f"measured roof: {peak:.0f} GFLOP/s, {bw:.0f} GB/s")
    published = result["peak"]["published"]
    if published:
        ax.axhline(1e3 * published["bf16_tflops"], color="gray", ls="--",
                   label=f"published {published['device']} bf16 dense {published['bf16_tflops']:.0f} TFLOP/s")
    markers = {"gemm": "s", "stream": "v", "conv": "D", "recurrent": "^", "attention": "P"}
    for r in rows:
        ax.scatter(r["intensity"], r["gflops"], marker=markers.get(r["kind"], "o"), s=40, zorder=3)
        ax.annotate(r["name"], (r["intensity"], r["gflops"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP / byte)", ylabel="achieved GFLOP/s",
           title=f"funcnn bench ({result['setting']['name']}): {result['machine']}"[:110])
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
