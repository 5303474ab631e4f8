"""A small CNN against the MLP on handwritten digits, trained with funcnn's hand-written backward.

CNN (``funcnn.models.cnn``): conv 32 (3x3, SAME) - ReLU - maxpool 2 - conv 64 (3x3, SAME) -
ReLU - maxpool 2 - dense 128 - ReLU - dense 10. MLP (``funcnn.models.mlp``): 128 - 64 ReLU.
Both: Adam(1e-3), batch 64, softmax cross-entropy, manual gradients, on

* ``digits``: scikit-learn's 8x8 digits (1,437 train / 360 test),
* ``mnist5k``: 5,000 28x28 MNIST images (4,000 train / 1,000 test).

    python experiments/cnn_digits.py [--quick]

Writes experiments/results/cnn_digits.md (test accuracy, time per epoch) and
experiments/results/cnn_digits.png (test-accuracy curves and the CNN's learned first-layer
filters on mnist5k).
"""
from __future__ import annotations

import argparse
import pathlib
import time

import funcnn  # noqa: F401  (the library under study)

import jax
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from funcnn import data, models  # noqa: E402
from funcnn.losses import softmax_cross_entropy  # noqa: E402
from funcnn.training.fit import fit  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
BATCH = 64
EPOCHS = {"digits": 30, "mnist5k": 6}
MODELS = {"cnn": dict(hidden=(128,)), "mlp": dict(hidden=(128, 64))}


def run(dataset, name, epochs, seed=0):
    model = models.build(name, dataset.x_train.shape[1:], dataset.num_classes, **MODELS[name])
    t0 = time.perf_counter()
    result = fit(model, softmax_cross_entropy, optax.adam(1e-3), dataset, epochs=epochs, batch_size=BATCH,
                 key=jax.random.key(seed), grad="manual", progress=False)
    return result, (time.perf_counter() - t0) / epochs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (1 epoch, 640 training images)")
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)

    runs, rows = {}, []
    for ds_name, epochs in EPOCHS.items():
        ds = data.load(ds_name, seed=0)
        if args.quick:
            ds, epochs = ds._replace(x_train=ds.x_train[:640], y_train=ds.y_train[:640]), 1
        for name in MODELS:
            result, sec = run(ds, name, epochs)
            runs[ds_name, name] = result
            h = result.history
            rows.append(f"| {ds_name} {ds.x_train.shape[1:]} | {name} | {len(ds.x_train)}/{len(ds.x_test)} | "
                        f"{epochs} | {h['train_acc'][-1]:.4f} | {h['test_acc'][-1]:.4f} | "
                        f"{max(h['test_acc']):.4f} | {sec:.2f} |")
            print(rows[-1], flush=True)

    lines = ["# CNN vs MLP on handwritten digits (hand-written backward)", "",
             "Reproduce: `python experiments/cnn_digits.py`. CNN = conv32-pool-conv64-pool-dense128-dense10 "
             "(`funcnn.models.cnn`), MLP = 128-64 ReLU (`funcnn.models.mlp`); Adam(1e-3), batch "
             f"{BATCH}, seed 0, manual gradients. Accuracies in eval mode; time per epoch includes evaluation "
             "(and compilation in the first epoch) on a shared 2-core CPU.", "",
             "| data | model | train/test | epochs | train acc | test acc (final) | test acc (best) | s/epoch |",
             "|---|---|---:|---:|---:|---:|---:|---:|", *rows]
    (RESULTS / "cnn_digits.md").write_text("\n".join(lines) + "\n")

    fig = plt.figure(figsize=(11, 7.5))
    grid = fig.add_gridspec(2, 2, height_ratios=(1, 1.1))
    for i, ds_name in enumerate(EPOCHS):
        ax = fig.add_subplot(grid[0, i])
        for name in MODELS:
            h = runs[ds_name, name].history
            epochs = np.arange(1, len(h["test_acc"]) + 1)
            ax.plot(epochs, h["test_acc"], "-o", ms=3, label=f"{name} test")
            ax.plot(epochs, h["train_acc"], "--", lw=1, label=f"{name} train")
        ax.set(title=ds_name, xlabel="epoch", ylabel="accuracy", ylim=(0.8, 1.0))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    w = np.asarray(runs["mnist5k", "cnn"].params["0_conv2d"]["w"])[:, :, 0, :]  # (3, 3, 32)
    sub = grid[1, :].subgridspec(4, 8, wspace=0.1, hspace=0.1)
    lim = np.abs(w).max()
    for k in range(w.shape[-1]):
        ax = fig.add_subplot(sub[k // 8, k % 8])
        ax.imshow(w[:, :, k], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks([]), ax.set_yticks([])
    fig.text(0.5, 0.5, "learned first-layer 3x3 filters (CNN on mnist5k; red +, blue -)", ha="center", fontsize=10)
    fig.savefig(RESULTS / "cnn_digits.png", dpi=120, bbox_inches="tight")
    print((RESULTS / "cnn_digits.md").read_text())


if __name__ == "__main__":
    main()
