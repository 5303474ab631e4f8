"""Batch normalization in a deep MLP: epochs to a target accuracy and gradient norms per layer.

An 8-hidden-layer MLP (width 64) on the 8x8 digits, sigmoid or ReLU hidden units,
with and without BatchNorm before each activation (Dense -> BatchNorm -> f), all
trained with the same SGD + momentum and the hand-written backward. The table gives
the epochs to reach the target test accuracy and the final accuracy; the figure
shows the test accuracy per epoch and the norm of dL/dW for every Dense layer at
initialisation, the vanishing-gradient picture: without normalisation the
sigmoid network's gradient shrinks by a factor of about four per layer
(sigma' <= 1/4) on its way back to the input.

    python experiments/batchnorm.py [--quick]

Writes experiments/results/batchnorm.md and batchnorm.png (``--quick``: under
experiments/results/quick/, or ``--out DIR``).
"""
from __future__ import annotations

import time

import funcnn  # noqa: F401  (the library under study)

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from funcnn import data  # noqa: E402
from funcnn.gradients import value_and_grad  # noqa: E402
from funcnn.core.layer import serial  # noqa: E402
from funcnn.layers import activations  # noqa: E402
from funcnn.layers.batchnorm import BatchNorm  # noqa: E402
from funcnn.layers.dense import Dense  # noqa: E402
from funcnn.layers.flatten import Flatten  # noqa: E402
from funcnn.losses import softmax_cross_entropy  # noqa: E402
from funcnn.training.fit import fit  # noqa: E402

from _common import parse, write  # noqa: E402

TARGET = 0.90
LR, MOMENTUM = 0.05, 0.9


def deep_mlp(depth, width, activation, batchnorm):
    """Flatten -> depth x [Dense(width) (-> BatchNorm) -> activation] -> Dense(10)."""
    w_init = "he_normal" if activation == "relu" else "glorot_uniform"
    stack = [Flatten()]
    for _ in range(depth):
        stack += [Dense(width, w_init=w_init), *([BatchNorm()] if batchnorm else []), activations.get(activation)]
    return serial(*stack, Dense(10))


def dense_grad_norms(model, params, state, x, y):
    """||dL/dW|| of every Dense layer, input side first, in training mode."""
    _, grads, _ = jax.jit(value_and_grad(model, softmax_cross_entropy))(params, state, x, y)
    names = sorted((k for k in grads if k.split("_", 1)[1] == "dense"), key=lambda k: int(k.split("_")[0]))
    return [float(jnp.linalg.norm(grads[k]["w"])) for k in names]


def main(argv=None):
    args, out = parse(__doc__, argv)
    depth, width, epochs, seeds = (3, 16, 2, 1) if args.quick else (8, 64, 40, 3)

    ds = data.load("digits")
    x_probe, y_probe = jnp.asarray(ds.x_train[:256]), jnp.asarray(ds.y_train[:256])
    start = time.perf_counter()
    rows, curves, norms = [], {}, {}
    for activation in ("sigmoid", "relu"):
        for bn in (False, True):
            name = f"{activation}{' + BatchNorm' if bn else ''}"
            model = deep_mlp(depth, width, activation, bn)
            params, state = model.init(jax.random.key(0), ds.x_train.shape[1:])
            norms[name] = dense_grad_norms(model, params, state, x_probe, y_probe)
            runs = [fit(model, softmax_cross_entropy, optax.sgd(LR, momentum=MOMENTUM), ds, epochs=epochs,
                        batch_size=32, key=jax.random.key(seed), progress=False).history for seed in range(seeds)]
            reached = [next((e + 1 for e, a in enumerate(h["test_acc"]) if a >= TARGET), None) for h in runs]
            final = float(np.median([h["test_acc"][-1] for h in runs]))
            best = float(np.median([max(h["test_acc"]) for h in runs]))
            ratio = norms[name][0] / norms[name][-1]
            rows.append((name, reached, best, final, ratio))
            curves[name] = runs[0]
            print(f"{name:20s} epochs to {TARGET:.0%}: {reached}  best {best:.3f}  final {final:.3f}  "
                  f"|dW_1|/|dW_out| {ratio:.2g}", flush=True)
    elapsed = time.perf_counter() - start

    def epochs_cell(reached):
        """Median over seeds, a seed that never reaches the target counting as infinity."""
        median = sorted(float("inf") if e is None else e for e in reached)[len(reached) // 2]
        hit = sum(e is not None for e in reached)
        return (f"> {epochs}" if median == float("inf") else f"{median:.0f}") + f" ({hit}/{len(reached)} seeds)"

    lines = [
        f"# BatchNorm in a {depth}-hidden-layer MLP",
        "",
        f"Digits (1,437 train / 360 test), width {width}, SGD lr {LR:g} momentum {MOMENTUM:g}, batch 32, "
        f"{epochs} epochs, {seeds} seed(s); BatchNorm between each Dense and its activation; hand-written "
        f"backward. \"Epochs to {TARGET:.0%}\" is the median over seeds of the first epoch whose test accuracy "
        f"reaches {TARGET:.0%}. The last column is ||dL/dW|| of the first Dense layer over that of the output "
        f"layer at initialisation (256 training digits): far below 1 means the gradient vanishes on its way "
        f"to the input. Total time {elapsed:.0f} s.",
        "",
        f"| network | epochs to {TARGET:.0%} test acc | best test acc | final test acc | "
        "first / last layer gradient norm at init |",
        "|---|---:|---:|---:|---:|",
        *[f"| {n} | {epochs_cell(r)} | {b:.3f} | {f:.3f} | {q:.2g} |" for n, r, b, f, q in rows],
        "",
        "![batchnorm](batchnorm.png)",
        "",
    ]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in curves.items():
        style = "-" if "BatchNorm" in name else "--"
        axes[0].plot(range(1, epochs + 1), h["test_acc"], style, label=name)
        axes[1].semilogy(range(1, len(norms[name]) + 1), norms[name], style, marker="o", label=name)
    axes[0].axhline(TARGET, color="grey", lw=0.8)
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title="test accuracy per epoch", ylim=(0, 1))
    axes[1].set(xlabel="Dense layer (1 = input side)", ylabel="||dL/dW|| at init",
                title="gradient norm per layer at initialisation")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    write(out, "batchnorm", lines, fig, elapsed)


if __name__ == "__main__":
    main()
