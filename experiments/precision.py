"""Mixed precision: the digits MLP and the mnist5k CNN trained in fp32, bf16-mixed and fp16-mixed.

Each precision is a ``funcnn.Policy`` preset (float32 master params; compute in float32,
bfloat16 or float16; float32 output and loss; fp16 with dynamic loss scaling), trained by
``fit(..., policy=...)`` with the hand-written backward, Adam(1e-3), batch 64. Reported:

* test accuracy after training (same seed, same batches in every precision);
* time per training step: one compiled step, timed over TIMED_STEPS steps after a warm-up
  pass over the same steps (on CPU, bfloat16 and float16 are emulated: slower, not faster);
* the largest manual-vs-autodiff gradient difference at the first batch, per leaf
  max|g_manual - g_autodiff| / max|g_autodiff| (both computed in the policy's dtypes).

    python experiments/precision.py [--quick] [--out DIR]

Writes precision.md (table) and precision.png (figure) into experiments/results/.
"""
from __future__ import annotations

import time

import jax
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import parse, write  # noqa: E402

from funcnn import data, models, precision  # noqa: E402
from funcnn.gradients import value_and_grad  # noqa: E402
from funcnn.losses import softmax_cross_entropy  # noqa: E402
from funcnn.train import fit, make_epoch  # noqa: E402

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
BATCH = 64
TIMED_STEPS = 5
SETUPS = {"digits MLP": ("digits", "mlp", dict(hidden=(128, 64)), 20),
          "mnist5k CNN": ("mnist5k", "cnn", dict(hidden=(128,)), 2)}


def grad_gap(model, loss, params, state, x, y):
    """max over leaves of max|g_manual - g_autodiff| / max|g_autodiff|."""
    key = jax.random.key(1)
    g_m = jax.jit(value_and_grad(model, loss, mode="manual"))(params, state, x, y, key=key)[1]
    g_a = jax.jit(value_and_grad(model, loss, mode="autodiff"))(params, state, x, y, key=key)[1]
    gaps = [float(np.max(np.abs(m - a)) / max(float(np.max(np.abs(a))), 1e-30))
            for m, a in zip(jax.tree_util.tree_leaves(g_m), jax.tree_util.tree_leaves(g_a)) if a.size]
    return max(gaps)


def step_time(model, loss, optimizer, params, state, x, y):
    """Seconds per compiled training step, over TIMED_STEPS steps after a warm-up pass."""
    x, y = x[:TIMED_STEPS * BATCH], y[:TIMED_STEPS * BATCH]
    epoch = make_epoch(model, loss, optimizer, batch_size=BATCH, scan=False)
    carry = (params, state, optimizer.init(params))
    out = epoch(*carry, x, y, jax.random.key(2))
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    jax.block_until_ready(epoch(*carry, x, y, jax.random.key(3)))
    return (time.perf_counter() - t0) / (len(x) // BATCH)


def run(ds, name, kwargs, epochs, prec):
    model = models.build(name, ds.x_train.shape[1:], ds.num_classes, **kwargs)
    opt = optax.adam(1e-3)
    result = fit(model, softmax_cross_entropy, opt, ds, epochs=epochs, batch_size=BATCH,
                 key=jax.random.key(0), progress=False, policy=prec)
    pm, pl, popt = precision.prepare(model, softmax_cross_entropy, opt, prec)
    params, state = pm.init(jax.random.key(0), ds.x_train.shape[1:])
    x, y = jax.numpy.asarray(ds.x_train), jax.numpy.asarray(ds.y_train)
    gap = grad_gap(pm, pl, params, state, x[:BATCH], y[:BATCH])
    return result.history["test_acc"][-1], step_time(pm, pl, popt, params, state, x, y), gap


def main(argv=None):
    args, out = parse(__doc__, argv)
    t_start = time.perf_counter()
    rows = {}
    for setup, (ds_name, name, kwargs, epochs) in SETUPS.items():
        ds = data.load(ds_name, seed=0)
        if args.quick:
            ds, epochs = ds._replace(x_train=ds.x_train[:320], y_train=ds.y_train[:320],
                                     x_test=ds.x_test[:200], y_test=ds.y_test[:200]), 1
        for prec in PRECISIONS:
            rows[setup, prec] = run(ds, name, kwargs, epochs, prec)
            acc, t, gap = rows[setup, prec]
            print(f"{setup:12s} {prec:10s} test acc {acc:.4f}  {1e3 * t:7.2f} ms/step  grad gap {gap:.1e}")

    lines = [f"Backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); batch {BATCH}, Adam(1e-3); "
             + ("quick run." if args.quick else
              "epochs: " + ", ".join(f"{k} {v[3]}" for k, v in SETUPS.items()) + "."),
             "", "| model | precision | test accuracy | vs fp32 (points) | ms / step "
             "| max manual-vs-autodiff grad diff |",
             "|---|---|---|---|---|---|"]
    for (setup, prec), (acc, t, gap) in rows.items():
        delta = 100 * (acc - rows[setup, "fp32"][0])
        lines.append(f"| {setup} | {prec} | {acc:.4f} | {delta:+.1f} | {1e3 * t:.2f} | {gap:.1e} |")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    width = 0.25
    for i, prec in enumerate(PRECISIONS):
        xs = np.arange(len(SETUPS)) + (i - 1) * width
        vals = [rows[s, prec] for s in SETUPS]
        for ax, j in zip(axes, range(3)):
            ax.bar(xs, [v[j] * (1e3 if j == 1 else 1) for v in vals], width, label=prec)
    for ax, title in zip(axes, ("test accuracy", "ms per training step (CPU: bf16/fp16 emulated)",
                                "max |g_manual - g_autodiff| / max |g|")):
        ax.set_xticks(np.arange(len(SETUPS)), list(SETUPS))
        ax.set_title(title, fontsize=10)
    axes[0].set_ylim(0.8, 1.0)
    axes[2].set_yscale("log")
    axes[0].legend()
    write(out, "precision", lines, fig, time.perf_counter() - t_start)


if __name__ == "__main__":
    main()
