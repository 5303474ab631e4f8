"""Where the LSTM training step's time goes, and what a second core would buy.

    python benchmarks/lstm_profile.py [--rounds 30] [--runs 3]

The step of ``benchmarks/contenders_lstm.py`` (LSTM(128), T = 40, batch 64, 1 feature,
last h -> Dense(10), AdamW) is cut into its parts, each compiled on its own and timed in
the same interleaved rounds as the whole step:

* the layer's forward (input product + forward scan) and backward (reverse scan +
  the hoisted products dW_ih = dA_x^T X, dW_hh = dA_h^T H_prev, dX = dA_x W_ih);
* the two scans alone, and the hoisted products alone;
* the floor of each scan: a chain of the same T = 40 dependent recurrent products,
  h <- (h W_hh^T)[:, :H] forward, (64, 128) x (128, 512), and dh <- [dh, dh, dh, dh] W_hh
  backward, (64, 512) x (512, 128), 8.4 MFLOP each: nothing else but the loop;
* the same two chains in PyTorch (``torch.mm`` in a Python loop) with its default
  threads (one per core) and with one thread, and PyTorch's whole ``nn.LSTM`` step.

The JAX parts are timed in interleaved rounds among themselves, then the PyTorch parts among
themselves: after a call PyTorch's OpenMP threads keep spinning for a while, which would
slow whatever XLA runs next on the same two cores.

A chain of dependent products cannot be batched into one bigger product: each waits for
the last, so its speed is that of one small GEMM, and only a GEMM that splits one
(64, 128) x (128, 512) product over cores goes faster. The table gives every part's
median time per run, its share of the step, and the GFLOP/s of the products it runs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contenders_lstm as C  # noqa: E402
from harness import load, time_interleaved, write_section  # noqa: E402

from funcnn.core.machine import machine, versions_line as versions  # noqa: E402

B, T, F, H = C.BATCH, C.TIME, C.FEATURES, C.HIDDEN
G = 4 * H
MATMUL = 2 * B * H * G  # FLOPs of one recurrent product, either direction
FLOPS = {  # the products each part runs (elementwise work not counted)
    "training step (manual)": 3 * T * MATMUL,
    "LSTM forward": T * MATMUL,
    "LSTM backward": 2 * T * MATMUL,
    "forward scan": T * MATMUL,
    "reverse scan": T * MATMUL,
    "hoisted products (dW_ih, dW_hh, dX)": T * MATMUL,
    "XLA chain, forward products": T * MATMUL,
    "XLA chain, backward products": T * MATMUL,
    "PyTorch chain, forward products": T * MATMUL,
    "PyTorch chain, backward products": T * MATMUL,
    "PyTorch chain, forward products (1 thread)": T * MATMUL,
    "PyTorch chain, backward products (1 thread)": T * MATMUL,
    "PyTorch nn.LSTM training step": 3 * T * MATMUL,
}


def parts():
    """({name: zero-argument callable returning something to block on} of the JAX parts, the same of
    the PyTorch parts)."""
    from funcnn.layers.recurrent import LSTM, lstm
    from funcnn.layers.recurrent._shell import time_sum_product

    layer = LSTM(H, return_sequences=False)
    x, _ = C.data()
    x = jnp.asarray(x)
    params, _ = layer.init(jax.random.key(0), x.shape[1:])
    _, _, cache = layer.forward(params, {}, x)
    dy = jnp.ones((B, H), x.dtype)
    x_tm, h0, hs, cell_cache = cache.x_tm, cache.h0, cache.hs, cache.cell
    xp = x_tm @ params["w_ih"].T + params["b"]
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    dcarry = (dy, jnp.zeros_like(dy))
    da = jax.jit(lambda p, c, hp, d: lstm.lstm_backward(p, c, hp, None, d)[0])(params, cell_cache, h_prev, dcarry)

    def hoisted(params, da, x_tm, h_prev):
        return time_sum_product(da, x_tm), time_sum_product(da, h_prev), da @ params["w_ih"]

    def chain_forward(w_hh, h0):
        w_t = w_hh.T
        return jax.lax.scan(lambda h, _: ((h @ w_t)[:, :H], None), h0, None, length=T)[0]

    def chain_backward(w_hh, dh0):
        return jax.lax.scan(lambda dh, _: (jnp.tile(dh, (1, 4)) @ w_hh, None), dh0, None, length=T)[0]

    fwd = jax.jit(lambda p, x: layer.forward(p, {}, x)[2])
    bwd = jax.jit(layer.backward)
    scan = jax.jit(lambda p, xp, c: lstm.lstm_forward(p, xp, c))
    rscan = jax.jit(lambda p, c, hp, d: lstm.lstm_backward(p, c, hp, None, d))
    prod = jax.jit(hoisted)
    cf, cb = jax.jit(chain_forward), jax.jit(chain_backward)
    h = 0.1 * jnp.ones((B, H), x.dtype)
    out = {
        "training step (manual)": C.funcnn_step("manual"),
        "LSTM forward": lambda: fwd(params, x),
        "LSTM backward": lambda: bwd(params, cache, dy),
        "forward scan": lambda: scan(params, xp, (jnp.zeros_like(h), jnp.zeros_like(h))),
        "reverse scan": lambda: rscan(params, cell_cache, h_prev, dcarry),
        "hoisted products (dW_ih, dW_hh, dX)": lambda: prod(params, da, x_tm, h_prev),
        "XLA chain, forward products": lambda: cf(params["w_hh"], h),
        "XLA chain, backward products": lambda: cb(params["w_hh"], h),
    }
    return out, _torch_parts(np.asarray(params["w_hh"]))


def _torch_parts(w_hh):
    try:
        import torch
    except ImportError:
        return {}
    w, w_t = torch.from_numpy(w_hh.copy()), torch.from_numpy(w_hh.T.copy())
    h0 = torch.full((B, H), 0.1)
    default = torch.get_num_threads()

    def chains(threads):
        def fwd():
            torch.set_num_threads(threads)
            h = h0
            with torch.no_grad():
                for _ in range(T):
                    h = torch.mm(h, w_t)[:, :H]
            torch.set_num_threads(default)

        def bwd():
            torch.set_num_threads(threads)
            dh = h0
            with torch.no_grad():
                for _ in range(T):
                    dh = torch.mm(dh.repeat(1, 4), w)
            torch.set_num_threads(default)
        return fwd, bwd

    f2, b2 = chains(default)
    f1, b1 = chains(1)
    return {"PyTorch chain, forward products": f2, "PyTorch chain, backward products": b2,
            "PyTorch chain, forward products (1 thread)": f1, "PyTorch chain, backward products (1 thread)": b1,
            "PyTorch nn.LSTM training step": C.contenders()["pytorch"]}


def report(runs: list, command: str) -> str:
    names = [n for n in FLOPS if n in runs[0]]
    med = {n: [1e3 * float(np.median(r[n])) for r in runs] for n in names}
    step = med["training step (manual)"]
    k = len(runs)
    lines = [
        f"### LSTM step profile: {C.TITLE} ({jax.devices()[0].platform})", "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} ({load()}); {versions()}.",
        f"Reproduce: `{command}`. {k} separate runs (processes), each {len(runs[0][names[0]])} interleaved "
        "rounds; median ms per run; share = median over runs / the manual step's; GFLOP/s of the "
        "recurrent-sized products each part runs (elementwise work not counted).", "",
        "| part | " + " | ".join(f"run {i + 1} ms" for i in range(k)) + " | share of step | GFLOP/s |",
        "|---|" + "---:|" * (k + 2),
    ]
    for n in names:
        m = float(np.median(med[n]))
        lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in med[n])
                     + f" | {m / float(np.median(step)):.2f} | {FLOPS[n] / m / 1e6:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_step.md"))
    args = p.parse_args(argv)
    if args.json:
        jax_parts, torch_parts = parts()
        times = time_interleaved(jax_parts, rounds=args.rounds)  # apart: PyTorch's idle threads spin a while
        times.update(time_interleaved(torch_parts, rounds=args.rounds) if torch_parts else {})
        Path(args.json).write_text(json.dumps(times))
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}.json"
            subprocess.run([sys.executable, __file__, "--rounds", str(args.rounds), "--json", str(out)], check=True)
            runs.append(json.loads(out.read_text()))
    text = report(runs, f"python benchmarks/lstm_profile.py --rounds {args.rounds} --runs {args.runs}")
    print(text)
    write_section(args.out, f"lstm-profile-{jax.devices()[0].platform}", text)


if __name__ == "__main__":
    main()
