r"""The core kernels of funcnn's models, with FLOPs $F$ and bytes $B$ counted by hand (float32).

- GEMM `(n, n) @ (n, n)`: $F = 2n^3$, $B = 3 \cdot 4 n^2$; the peak $P$ is the largest rate
  over $n$ and over rounds (the fastest round: a peak is what the machine can do, not its
  median).
- Stream $y = a x + z$ over $n$ elements: $F = 2n$, $B = 3 \cdot 4 n$; its fastest round gives
  the bandwidth $W$.
- Convolution, the CNN's second layer `(batch, 14, 14, 32) -> 64`, 3x3 SAME, forward, as
  `lax.conv_general_dilated`: $F = 2 N H W \cdot 9\, C O$.
- The recurrent product of the LSTM step, `(batch, 128) @ (128, 512)`: $F = 2 B H \cdot 4H$.
- Attention $\operatorname{softmax}(Q K^\top / \sqrt d)\, V$ over `(8, 256, 64)`: $F = 4 B T^2 d$ (two products).
"""
from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnn.bench.setting import Setting
from funcnn.core import autotune


def time_cases(cases: list[dict], setting: Setting, log: Callable[[str], None] = print) -> list[dict]:
    """Compile every case's `fn(*args)` apart (timed), then time all of them in interleaved rounds.

    **Arguments:**

    - `cases`: dicts with `name`, `kind`, `fn`, `args`, `flops`, `bytes` (counted by hand;
      `bytes` may be None) and optionally `jit=False` (then `fn` is called as is and
      compiles on its first call).
    - `setting`: a `funcnn.bench.Setting` (rounds and time budget); `log`: progress lines.

    **Returns:**

    One row per case: the case's fields without `fn`/`args`/`jit`, plus `compile_ms`,
    `median_ms`, `iqr_ms`, `best_ms` and `gflops`.
    """
    calls, rows = {}, []
    for case in cases:
        row = {k: v for k, v in case.items() if k not in ("fn", "args", "jit")}
        t0 = time.perf_counter()
        if case.get("jit", True):
            f = jax.jit(case["fn"]).lower(*case["args"]).compile()  # tracing autotunes
        else:
            f = case["fn"]
        jax.block_until_ready(f(*case["args"]))
        row["compile_ms"] = 1e3 * (time.perf_counter() - t0)
        calls[case["name"]] = (lambda f=f, a=case["args"]: f(*a))
        rows.append(row)
    times = autotune.time_rounds(calls, rounds=setting.rounds, budget_s=setting.budget_s)
    for row in rows:
        t = np.asarray(times[row["name"]])
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        flops, nbytes = row.get("flops"), row.get("bytes")
        row.update(rounds=len(t), median_ms=1e3 * med, iqr_ms=1e3 * (q3 - q1), best_ms=1e3 * t.min(),
                   gflops=flops / med / 1e9 if flops else None,
                   gbytes_per_s=nbytes / med / 1e9 if nbytes else None,
                   intensity=flops / nbytes if flops and nbytes else None)
        log(f"  {row['name']}: {row['median_ms']:.3f} ms" + (f", {row['gflops']:.1f} GFLOP/s" if flops else ""))
    return rows


def _normal(*shape, seed=0):
    return autotune.dummy(shape, jnp.float32, seed)


def cases(setting: Setting) -> list[dict]:
    """The kernel cases of `setting` (module docstring), ready for `time_cases`."""
    out = []
    for n in setting.gemm_sizes:
        out.append(dict(name=f"gemm {n}x{n}x{n}", kind="gemm", fn=jnp.matmul, args=(_normal(n, n), _normal(n, n, seed=1)),
                        flops=2 * n ** 3, bytes=3 * 4 * n * n))
    n = setting.stream_elems
    out.append(dict(name=f"stream a*x+z, {n} floats", kind="stream", fn=lambda x, z: 1.5 * x + z,
                    args=(_normal(n), _normal(n, seed=1)), flops=2 * n, bytes=3 * 4 * n))
    batch = dict((m, b) for m, b, _ in setting.models).get("cnn", 64)
    x, w = _normal(batch, 14, 14, 32), _normal(3, 3, 32, 64, seed=1)
    conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
    out.append(dict(name=f"conv 3x3 ({batch},14,14,32)->64", kind="conv", fn=conv, args=(x, w),
                    flops=2 * batch * 14 * 14 * 9 * 32 * 64, bytes=4 * (x.size + w.size + batch * 14 * 14 * 64)))
    h = _normal(64, 128)
    w_hh = _normal(128, 512, seed=1)
    out.append(dict(name="recurrent product (64,128)@(128,512)", kind="recurrent", fn=jnp.matmul, args=(h, w_hh),
                    flops=2 * 64 * 128 * 512, bytes=4 * (h.size + w_hh.size + 64 * 512)))
    b, t, d = 8, 256, 64
    q, k, v = _normal(b, t, d), _normal(b, t, d, seed=1), _normal(b, t, d, seed=2)

    def attention(q, k, v):
        s = jnp.einsum("btd,bsd->bts", q, k) / np.sqrt(d)
        return jnp.einsum("bts,bsd->btd", jax.nn.softmax(s, axis=-1), v)

    out.append(dict(name=f"attention ({b},{t},{d})", kind="attention", fn=attention, args=(q, k, v),
                    flops=4 * b * t * t * d, bytes=4 * (4 * b * t * d + 2 * b * t * t)))
    return out


def run(setting: Setting, log: Callable[[str], None] = print) -> list[dict]:
    """Time every kernel of `setting`; one row per kernel (see `time_cases`)."""
    log("kernels:")
    return time_cases(cases(setting), setting, log=log)
