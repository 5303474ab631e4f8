"""Regularisation on a small training set: none, L2, dropout, both (and AdamW).

An over-parameterised MLP (64 -> 512 -> 512 -> 10, ReLU, ~300k weights) is trained
on 500 of the 8x8 digits with Adam and the hand-written backward, and evaluated on
the 360 held-out digits. Each row is the median over seeds of the final train and
test accuracy and of the generalisation gap (train - test).

    python experiments/regularization.py [--quick]

Writes experiments/results/regularization.md and regularization.png (``--quick``: under
experiments/results/quick/, or ``--out DIR``).
"""
from __future__ import annotations

import time

import funcnn  # noqa: F401  (the library under study)

import jax
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from funcnn import data  # noqa: E402
from funcnn.core.layer import serial  # noqa: E402
from funcnn.layers.activations import ReLU  # noqa: E402
from funcnn.layers.dense import Dense  # noqa: E402
from funcnn.layers.dropout import Dropout  # noqa: E402
from funcnn.layers.flatten import Flatten  # noqa: E402
from funcnn.losses import softmax_cross_entropy  # noqa: E402
from funcnn.regularization import adamw  # noqa: E402
from funcnn.training.fit import fit  # noqa: E402

from _common import parse, write  # noqa: E402

LR, L2, WEIGHT_DECAY, RATE = 1e-3, 1e-3, 0.1, 0.5


def mlp(width, rate):
    """Flatten -> 2 x [Dense(width) -> ReLU (-> Dropout(rate))] -> Dense(10)."""
    block = [Dense(width, w_init="he_normal"), ReLU()] + ([Dropout(rate)] if rate else [])
    return serial(Flatten(), *block, *block, Dense(10))


def configs():
    """name -> (dropout rate, l2 coefficient, optimizer)."""
    return {
        "none": (0.0, 0.0, optax.adam(LR)),
        f"L2 ({L2:g})": (0.0, L2, optax.adam(LR)),
        f"dropout ({RATE:g})": (RATE, 0.0, optax.adam(LR)),
        "L2 + dropout": (RATE, L2, optax.adam(LR)),
        f"AdamW ({WEIGHT_DECAY:g}, decoupled)": (0.0, 0.0, adamw(LR, WEIGHT_DECAY)),
    }


def main(argv=None):
    args, out = parse(__doc__, argv)
    epochs, seeds, width, n_train = (3, 1, 64, 200) if args.quick else (100, 3, 512, 500)

    ds = data.load("digits")
    subset = (ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test, ds.y_test)
    start = time.perf_counter()
    rows, curves = [], {}
    for name, (rate, l2, opt) in configs().items():
        model = mlp(width, rate)
        runs = [fit(model, softmax_cross_entropy, opt, subset, epochs=epochs, batch_size=50,
                    key=jax.random.key(seed), l2=l2, progress=False).history for seed in range(seeds)]
        tr = np.median([h["train_acc"][-1] for h in runs])
        te = np.median([h["test_acc"][-1] for h in runs])
        gap = np.median([h["train_acc"][-1] - h["test_acc"][-1] for h in runs])
        loss = np.median([h["test_loss"][-1] for h in runs])
        rows.append((name, tr, te, gap, loss))
        curves[name] = runs[0]
        print(f"{name:28s} train {tr:.3f}  test {te:.3f}  gap {gap:+.3f}  test loss {loss:.3f}", flush=True)
    elapsed = time.perf_counter() - start

    lines = [
        "# Regularisation on 500 training digits",
        "",
        f"MLP 64-{width}-{width}-10 (ReLU, He init), Adam lr {LR:g}, batch 50, {epochs} epochs, "
        f"{n_train} training / {len(ds.x_test)} test digits; median of {seeds} seed(s); "
        f"hand-written backward. L2 excludes biases. Total time {elapsed:.0f} s.",
        "",
        "| regulariser | train acc | test acc | gap (train - test) | test loss |",
        "|---|---:|---:|---:|---:|",
        *[f"| {n} | {tr:.3f} | {te:.3f} | {gap:+.3f} | {loss:.3f} |" for n, tr, te, gap, loss in rows],
        "",
        "![regularization](regularization.png)",
        "",
    ]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in curves.items():
        (line,) = axes[0].plot(h["test_acc"], label=f"{name} (test)")
        axes[0].plot(h["train_acc"], color=line.get_color(), ls=":", lw=1)
        axes[1].plot(h["test_loss"], color=line.get_color(), label=name)
    axes[0].set(xlabel="epoch", ylabel="accuracy", title="train (dotted) and test (solid) accuracy",
                ylim=(0.8 if not args.quick else 0.0, 1.005))
    axes[1].set(xlabel="epoch", ylabel="test cross-entropy", title="test loss", yscale="log")
    axes[0].legend(fontsize=8)
    write(out, "regularization", lines, fig, elapsed)


if __name__ == "__main__":
    main()
