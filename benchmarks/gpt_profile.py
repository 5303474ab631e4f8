"""Where the GPT training step's time goes: funcnn's manual step cut into its pieces.

    python benchmarks/gpt_profile.py [--rounds 20] [--out benchmarks/results/gpt_profile.md]

The model and batch of ``benchmarks/contenders_gpt.py`` (4 blocks, 4 heads, width 128,
context 64, vocab 103, tied head, batch 32, AdamW). Each piece runs alone, compiled on its
own at the shape it has in the model, in the same interleaved rounds as the whole step:

* the whole step (manual and autodiff), the model's forward, its backward (from the
  forward's cache and the loss gradient), the loss value, the loss gradient, and the AdamW
  update over the gradients;
* one instance of every layer, forward and backward (the backward from a stored cache):
  the attention (and its core, softmax(QK^T)V, without the projections), LayerNorm, the
  MLP's two token-dense products, GELU, the tied readout, the embeddings; ``x n`` is how
  many such pieces one step runs, and "x n share" their estimated part of the step;
* the Embedding's host-side id check (``_check_ids`` on concrete ids): it runs only where
  ids are concrete (outside ``jit``), never inside the compiled step;
* the floor the products set: every matrix product shape the manual step runs (the four
  linear maps of a block and the tied readout, forward, dX and dW; the attention's batched
  scores and weighted sums, the scores recomputed in the backward), each timed alone as one
  XLA dot and as one ``torch.mm``/``torch.bmm`` on the same row-major operands, and PyTorch's
  whole training step (nanoGPT, fused AdamW). Summed with their counts, the products say how
  fast each library's GEMM alone would run the step. The PyTorch parts are timed in rounds of
  their own after the JAX parts, as in ``benchmarks/lstm_profile.py``;
* the same products on one core: a second process pinned to one CPU (``--one-core``, set
  before JAX and PyTorch start their thread pools; PyTorch with one thread) times them
  again, so the line under the table tells the GEMMs' speed on one core from how each
  library spreads one product over the cores.

Pieces compiled apart are not the step: XLA fuses across pieces in the whole step, so the
shares are estimates that need not add up to one.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if "--one-core" in sys.argv:  # before JAX and PyTorch size their thread pools
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contenders_gpt as C  # noqa: E402
from harness import adamw, load, time_interleaved, write_section  # noqa: E402

import funcnn as fn  # noqa: E402
from funcnn.core.machine import machine, versions_line as versions  # noqa: E402
from funcnn.layers import attention as A  # noqa: E402
from funcnn.layers.embedding import Embedding, TiedReadout, _check_ids  # noqa: E402
from funcnn.layers.gelu import GELU  # noqa: E402
from funcnn.layers.layernorm import LayerNorm  # noqa: E402
from funcnn.layers.positional import PositionalEmbedding  # noqa: E402
from funcnn.models import token_dense  # noqa: E402

CFG = C.SMALL
B, T, D, V, L, H = CFG["batch"], CFG["time"], CFG["width"], CFG["vocab"], CFG["layers"], CFG["heads"]
DEFAULT_OUT = str(Path(__file__).resolve().parent / "results" / "gpt_profile.md")


def _layer_parts(name, layer, x, count):
    """Forward and backward of one ``layer`` at input ``x``, each jitted on its own."""
    params, state = layer.init(jax.random.key(1), jax.tree_util.tree_map(lambda a: a.shape[1:], x))
    y, _, cache = layer.forward(params, state, x)
    dy = jax.tree_util.tree_map(jnp.ones_like, y)
    fwd = jax.jit(lambda p, x: layer.forward(p, state, x)[0])
    bwd = jax.jit(layer.backward)
    return {f"{name} forward": (lambda: fwd(params, x), count),
            f"{name} backward": (lambda: bwd(params, cache, dy), count)}


def parts():
    """{name: (zero-argument callable, how many such pieces one step runs)}."""
    model = C.funcnn_model(CFG)
    x, y = (jnp.asarray(a) for a in C.data(CFG))
    params, state = model.init(jax.random.key(0), (T,))
    loss = fn.losses.softmax_cross_entropy
    tx = adamw()
    opt = tx.init(params)
    step = {mode: C.funcnn_step(mode, params, CFG) for mode in ("manual", "autodiff")}
    logits, _, cache = jax.jit(lambda p, x: model.forward(p, state, x))(params, x)
    dlogits = jax.jit(loss.grad)(logits, y)
    grads = jax.jit(lambda p, c, d: model.backward(p, c, d)[0])(params, cache, dlogits)
    fwd = jax.jit(lambda p, x: model.forward(p, state, x))
    bwd = jax.jit(lambda p, c, d: model.backward(p, c, d)[0])
    value, gradient = jax.jit(loss.value), jax.jit(loss.grad)
    both = jax.jit(lambda z, t: (loss.value(z, t), loss.grad(z, t)))
    update = jax.jit(lambda g, o, p: tx.update(g, o, p))
    out = {
        "training step (manual)": (step["manual"], 1),
        "training step (autodiff)": (step["autodiff"], 1),
        "model forward": (lambda: fwd(params, x), 1),
        "model backward": (lambda: bwd(params, cache, dlogits), 1),
        "loss value": (lambda: value(logits, y), 1),
        "loss gradient": (lambda: gradient(logits, y), 1),
        "loss value and gradient (as the step runs them)": (lambda: both(logits, y), 1),
        "AdamW update": (lambda: update(grads, opt, params), 1),
    }
    h = jax.random.normal(jax.random.key(2), (B, T, D))
    q, k, v = (jax.random.normal(jax.random.key(i), (B, H, T, D // H)) for i in (3, 4, 5))
    o, lse = jax.jit(A.attention_forward, static_argnums=3)(q, k, v, True)
    core_f = jax.jit(A.attention_forward, static_argnums=3)
    core_b = jax.jit(A.attention_backward, static_argnums=6)
    out["attention core forward (softmax(QK^T)V)"] = (lambda: core_f(q, k, v, True), L)
    out["attention core backward"] = (lambda: core_b(o, q, k, v, o, lse, True), L)
    out.update(_layer_parts("attention", A.MultiHeadAttention(H, causal=True), h, L))
    out.update(_layer_parts("LayerNorm", LayerNorm(), h, 2 * L + 1))
    out.update(_layer_parts(f"token dense {D}->{4 * D}", token_dense(4 * D), h, L))
    out.update(_layer_parts("GELU", GELU(), jax.random.normal(jax.random.key(6), (B, T, 4 * D)), L))
    out.update(_layer_parts(f"token dense {4 * D}->{D}", token_dense(D),
                            jax.random.normal(jax.random.key(7), (B, T, 4 * D)), L))
    out.update(_layer_parts("tied readout", TiedReadout(V), (h, jax.random.normal(jax.random.key(8), (V, D))), 1))
    out.update(_layer_parts("token embedding", Embedding(V, D), x, 1))
    out.update(_layer_parts("position embedding", PositionalEmbedding(CFG["context"], D), h, 1))
    ids = np.asarray(x)
    out["Embedding id check on concrete ids (host; not in the jitted step)"] = (
        lambda: _check_ids(ids, V, "Embedding"), 0)
    return out


def products():
    """[(label, lhs shape, rhs shape, count per step)]: every matrix product of the manual step,
    each ``lhs @ rhs`` (weights laid out as the product reads them)."""
    n, hd = B * T, D // H
    out = []
    for name, i, o in (("qkv", D, 3 * D), ("attention out", D, D), ("MLP up", D, 4 * D), ("MLP down", 4 * D, D)):
        out += [(f"{name} forward", (n, i), (i, o), L), (f"{name} dX", (n, o), (o, i), L),
                (f"{name} dW", (o, n), (n, i), L)]
    out += [("readout forward", (n, D), (D, V), 1), ("readout dX", (n, V), (V, D), 1), ("readout dE", (V, n), (n, D), 1),
            ("scores QK^T, dO V^T (forward, backward, recomputed)", (B * H, T, hd), (B * H, hd, T), 3 * L),
            ("P V, P^T dO, dS K, dS^T Q", (B * H, T, T), (B * H, T, hd), 4 * L)]
    return out


def flops(lhs, rhs):
    return 2 * int(np.prod(lhs)) * rhs[-1]


def product_parts(with_step=True):
    """({"XLA: label": (callable, count)}, {"PyTorch: label": ...} with PyTorch's whole step
    unless ``with_step`` is False, or an empty dict without PyTorch)."""
    rng = np.random.default_rng(0)
    xla, torch_parts = {}, {}
    dot = jax.jit(jnp.matmul)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and len(os.sched_getaffinity(0)) == 1:
        torch.set_num_threads(1)
    for label, lhs, rhs, count in products():
        a, b = (rng.standard_normal(s).astype(np.float32) for s in (lhs, rhs))
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        xla[f"XLA: {label}"] = (lambda ja=ja, jb=jb: dot(ja, jb), count)
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            op = torch.mm if len(lhs) == 2 else torch.bmm
            torch_parts[f"PyTorch: {label}"] = (lambda ta=ta, tb=tb, op=op: op(ta, tb), count)
    if torch is not None and with_step:
        torch_parts["PyTorch training step (nanoGPT, fused AdamW)"] = (C.contenders(CFG, only=["pytorch"])["pytorch"], 1)
    return xla, torch_parts


def product_sums(med, counts):
    """{"XLA": ms, "PyTorch": ms}: the step's products (``product_parts``), each median x its count."""
    return {lib: sum(counts[n] * m for n, m in med.items() if n.startswith(f"{lib}: ")) for lib in ("XLA", "PyTorch")}


def floor_line(med, counts, one_core=None):
    """The products' sums against the manual step and PyTorch's step; ``one_core``: the products'
    medians on one core (``one_core_times``), or None."""
    total = sum(count * flops(lhs, rhs) for _, lhs, rhs, count in products())
    step = med["training step (manual)"]
    sums = product_sums(med, counts)
    line = (f"The step's matrix products ({total / 1e9:.2f} GFLOP), each shape timed alone and summed with its count: "
            f"XLA {sums['XLA']:.1f} ms ({total / sums['XLA'] / 1e6:.0f} GFLOP/s, {sums['XLA'] / step:.2f} of funcnn's "
            "manual step)")
    if sums["PyTorch"]:
        torch_step = med["PyTorch training step (nanoGPT, fused AdamW)"]
        line += (f", PyTorch {sums['PyTorch']:.1f} ms ({total / sums['PyTorch'] / 1e6:.0f} GFLOP/s, "
                 f"{sums['PyTorch'] / torch_step:.2f} of its own step of {torch_step:.1f} ms); XLA's products alone "
                 f"take {sums['XLA'] / sums['PyTorch']:.2f} x PyTorch's products and {sums['XLA'] / torch_step:.2f} x "
                 f"PyTorch's whole step; funcnn's manual step takes {step / torch_step:.2f} x PyTorch's step")
    line += "."
    one = product_sums(one_core, counts) if one_core else None
    if one and one["PyTorch"]:
        x1, t1 = one["XLA"], one["PyTorch"]
        line += (f" On one core (a process pinned to one CPU, PyTorch with one thread) the same products take: XLA "
                 f"{x1:.1f} ms ({total / x1 / 1e6:.0f} GFLOP/s), PyTorch {t1:.1f} ms ({total / t1 / 1e6:.0f} GFLOP/s), "
                 f"XLA / PyTorch {x1 / t1:.2f}; from one core to all, XLA's products run {x1 / sums['XLA']:.2f} x as fast "
                 f"and PyTorch's {t1 / sums['PyTorch']:.2f} x.")
    return line


def report(times, counts, command, one_core=None):
    med = {n: 1e3 * float(np.median(t)) for n, t in times.items()}
    step = med["training step (manual)"]
    lines = [
        f"### GPT step profile: {C.TITLE} ({jax.devices()[0].platform})", "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} ({load()}); {versions()}.",
        f"Reproduce: `{command}`. {len(next(iter(times.values())))} interleaved rounds; median ms of each "
        "piece compiled alone; x n: such pieces per step; x n share: n x median / the manual step's median; "
        "one core ms: the matrix products again in a process pinned to one CPU (PyTorch with one thread).", "",
        "| piece | median ms | x n | x n share of step | one core ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for n, m in med.items():
        alone = f"{one_core[n]:.3f}" if one_core and n in one_core else ""
        lines.append(f"| {n} | {m:.3f} | {counts[n]} | {counts[n] * m / step:.2f} | {alone} |")
    if any(n.startswith("XLA: ") for n in med):
        lines += ["", floor_line(med, counts, one_core)]
    return "\n".join(lines) + "\n"


def time_apart(jax_parts, torch_parts, rounds):
    """Seconds per call of every part: ``{name: (callable, count)}``, JAX's parts in interleaved
    rounds, then PyTorch's in rounds of their own (as ``lstm_profile.py``)."""
    times = time_interleaved({n: f for n, (f, _) in jax_parts.items()}, rounds=rounds)
    if torch_parts:
        times.update(time_interleaved({n: f for n, (f, _) in torch_parts.items()}, rounds=rounds))
    return times


def timed_products(rounds):
    """{name: median ms} of the products alone (``time_apart``)."""
    times = time_apart(*product_parts(with_step=False), rounds)
    return {n: 1e3 * float(np.median(t)) for n, t in times.items()}


def one_core_times(rounds):
    """``timed_products`` in a process pinned to one CPU, or None where pinning is unavailable."""
    if not hasattr(os, "sched_setaffinity") or jax.devices()[0].platform != "cpu":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "one_core.json"
        subprocess.run([sys.executable, __file__, "--one-core", "--rounds", str(rounds), "--json", str(out)], check=True)
        return json.loads(out.read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--one-core", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.json:  # the pinned worker of one_core_times
        Path(args.json).write_text(json.dumps(timed_products(args.rounds)))
        return
    t0 = time.perf_counter()
    one_core = one_core_times(args.rounds)
    xla, torch_parts = product_parts()
    pieces = {**parts(), **xla}
    times = time_apart(pieces, torch_parts, args.rounds)
    pieces.update(torch_parts)
    command = "python benchmarks/gpt_profile.py" + (f" --rounds {args.rounds}" if args.rounds != 20 else "")
    text = report(times, {n: c for n, (_, c) in pieces.items()}, command, one_core)
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s)")
    path = Path(args.out)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# GPT training-step profile\n\nWritten by `benchmarks/gpt_profile.py`.\n")
    write_section(path, f"gpt-profile-{jax.devices()[0].platform}", text)


if __name__ == "__main__":
    main()
