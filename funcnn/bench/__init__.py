r"""`funcnn bench`: how fast funcnn runs on this machine, against this machine's own peak.

Every case (a core kernel, or one training step of a model) is compiled apart (the
compile time, including any autotuning at trace time, is reported separately) and timed
in interleaved rounds (`kernels.time_cases`). For a case doing $F$ FLOPs and moving $B$
bytes in $t$ seconds (counted by hand: `kernels`; for a training step $F$ is 3 times the
forward's product FLOPs, the model-FLOPs convention, and $B$ is not counted: `steps`),

$$
\text{achieved} = F / t, \qquad I = F / B, \qquad \text{roofline}(I) = \min(P,\ W I),
$$

where $P$, the compute peak, is the best GFLOP/s of large matrix products on the same
device (the fastest round of the best size), and $W$, the memory bandwidth, that of a large
streaming `a x + z`. Each case reports its median rate as a fraction of $P$ ("% of peak");
for known GPUs the published dense peak is reported beside the measured one
(`report.PUBLISHED`).

`run(setting)` returns the JSON-ready dict; `report` turns it into the table and the
roofline figure. `QUICK` and `FULL` are the two settings of the command.
"""
from __future__ import annotations

import datetime
import os
from typing import Callable

import jax

from funcnn.core.machine import machine, versions_line
from funcnn.bench import kernels, report, steps
from funcnn.bench.setting import FULL, QUICK, Setting
from funcnn.core import autotune


def run(setting: Setting = QUICK, *, peers: bool = True, log: Callable[[str], None] = print) -> dict:
    """Time the kernels and the model steps on the current backend.

    **Arguments:**

    - `setting`: `QUICK` or `FULL` (sizes, rounds, time budget).
    - `peers`: also time PyTorch's step (on CPU, when installed).
    - `log`: where progress lines go.

    **Returns:**

    The results as a JSON-ready dict: `setting`, `date`, `machine`, `load_average`,
    `versions`, `backend`, `device_kind`, `peak` (measured and published), `kernels` and
    `steps` (one row per case) and the `autotune` decisions.
    """
    log(f"funcnn bench ({setting.name}) on {machine()}")
    kernel_rows = kernels.run(setting, log=log)
    peak = max(r["flops"] / r["best_ms"] * 1e-6 for r in kernel_rows if r["kind"] == "gemm")
    bandwidth = max(r["bytes"] / r["best_ms"] * 1e-6 for r in kernel_rows if r["kind"] == "stream")
    step_rows = steps.run(setting, peers=peers, log=log)
    for row in kernel_rows + step_rows:
        row["pct_of_peak"] = 100 * row["gflops"] / peak if row["gflops"] is not None else None
    dev = jax.devices()[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "setting": setting._asdict(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": load,  # 1-minute load average at the end: how busy the machine was
        "versions": versions_line(),
        "backend": dev.platform,
        "device_kind": dev.device_kind,
        "peak": {"measured_gemm_gflops": peak, "measured_bandwidth_gbytes_per_s": bandwidth,
                 "published": report.published_peak(dev.device_kind)},
        "kernels": kernel_rows,
        "steps": step_rows,
        "autotune": autotune.decisions(),
    }


__all__ = ["FULL", "QUICK", "Setting", "run"]
