"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"): logistic regression, MLP, CNN and GRU.

The data come from the ``mnist1d`` package's own generator with its default arguments
(``make_dataset(get_dataset_args())``: 5000 sequences of length 40, seed 42, split
4000 train / 1000 test), made offline. The models follow the paper's
``notebooks/models.py`` where funcnn has the layers:

* logistic regression: Dense(10) on the 40 values;
* MLP: Dense(100) -> ReLU -> Dense(100) -> ReLU -> Dense(10) (the paper's second
  layer is residual, h + relu(W h));
* CNN: 3 x [Conv1D(25, k, stride 2, padding 1) -> ReLU] (k = 5, 3, 3) -> Flatten -> Dense(10);
* GRU: GRU(12) over the 40 steps (1 feature), all hidden states flattened -> Dense(10)
  (the paper's GRU is bidirectional with 6 units per direction, the same width).

All trained with Adam (lr 1e-2 as in the paper's notebook, except the GRU at 3e-3),
batch 100, softmax cross-entropy and the hand-written backward, over several seeds.

    python experiments/mnist1d.py [--quick]

Writes experiments/results/mnist1d.md and mnist1d.png.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import funcnn  # noqa: F401  (the library under study)

import jax
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from funcnn.core.layer import serial  # noqa: E402
from funcnn.layers.activations import ReLU  # noqa: E402
from funcnn.layers.conv import Conv1D  # noqa: E402
from funcnn.layers.dense import Dense  # noqa: E402
from funcnn.layers.flatten import Flatten  # noqa: E402
from funcnn.layers.recurrent import GRU  # noqa: E402
from funcnn.losses import softmax_cross_entropy  # noqa: E402
from funcnn.training.fit import fit  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
# Test accuracies reported in the mnist1d README / paper (Greydanus 2020, table 1).
PAPER = {"logistic": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91}
BATCH = 100


def models():
    return {
        "logistic": (serial(Flatten(), Dense(10)), 1e-2),
        "MLP": (serial(Flatten(), Dense(100, w_init="he_normal"), ReLU(), Dense(100, w_init="he_normal"), ReLU(),
                       Dense(10)), 1e-2),
        "CNN": (serial(Conv1D(25, 5, stride=2, padding=1, w_init="he_normal"), ReLU(),
                       Conv1D(25, 3, stride=2, padding=1, w_init="he_normal"), ReLU(),
                       Conv1D(25, 3, stride=2, padding=1, w_init="he_normal"), ReLU(), Flatten(), Dense(10)), 1e-2),
        "GRU": (serial(GRU(12), Flatten(), Dense(10)), 3e-3),
    }


def load():
    """(x_train (4000, 40, 1), y_train, x_test (1000, 40, 1), y_test) from the package's generator."""
    here = pathlib.Path(__file__).resolve().parent
    saved = sys.path[:]
    sys.path[:] = [d for d in sys.path if pathlib.Path(d or ".").resolve() != here]  # this file is mnist1d.py too
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    finally:
        sys.path[:] = saved

    args = get_dataset_args()
    ds = make_dataset(args)
    x_tr, x_te = (np.asarray(ds[k], np.float32)[..., None] for k in ("x", "x_test"))
    y_tr, y_te = (np.asarray(ds[k], np.int32) for k in ("y", "y_test"))
    return x_tr, y_tr, x_te, y_te, args


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (one seed, two epochs, 500 examples)")
    args = p.parse_args(argv)
    epochs, seeds = (2, 1) if args.quick else (60, 3)
    x_tr, y_tr, x_te, y_te, ds_args = load()
    if args.quick:
        x_tr, y_tr = x_tr[:500], y_tr[:500]
    print(f"MNIST-1D: train {x_tr.shape}, test {x_te.shape}, length {ds_args.final_seq_length}", flush=True)

    start = time.perf_counter()
    rows, curves = [], {}
    for name, (model, lr) in models().items():
        accs, t0 = [], time.perf_counter()
        for seed in range(seeds):
            res = fit(model, softmax_cross_entropy, optax.adam(lr), (x_tr, y_tr, x_te, y_te), epochs=epochs,
                      batch_size=BATCH, key=jax.random.key(seed), progress=False)
            accs.append(res.history["test_acc"][-1])
            curves.setdefault(name, res.history["test_acc"])
        seconds = (time.perf_counter() - t0) / seeds
        rows.append((name, np.mean(accs), np.std(accs), accs, seconds))
        print(f"{name:9s} test acc {np.mean(accs):.3f} +- {np.std(accs):.3f} {np.round(accs, 3).tolist()} "
              f"(paper {PAPER[name]:.0%}; {seconds:.0f} s per run)", flush=True)
    elapsed = time.perf_counter() - start

    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        "# MNIST-1D",
        "",
        f"Data: the `mnist1d` package's generator with its default arguments ({len(x_tr)} train / {len(x_te)} "
        f"test, length {ds_args.final_seq_length}, seed {ds_args.seed}). Adam, batch {BATCH}, {epochs} epochs "
        f"({epochs * (len(x_tr) // BATCH)} steps), softmax cross-entropy, hand-written backward; test accuracy "
        f"after the last epoch, mean and standard deviation over {seeds} seed(s). Paper: Greydanus (2020), "
        "\"Scaling down deep learning\", as listed in the mnist1d README. Models as in the paper's "
        "`notebooks/models.py`, except: the MLP has no residual connection, and the GRU is unidirectional "
        f"with 12 units (the paper's is bidirectional, 6 per direction). Total time {elapsed:.0f} s.",
        "",
        "| model | test accuracy (mean +- std) | per seed | paper | s per run |",
        "|---|---:|---|---:|---:|",
        *[f"| {n} | {m:.3f} +- {s:.3f} | {', '.join(f'{a:.3f}' for a in accs)} | {PAPER[n]:.2f} | {t:.0f} |"
          for n, m, s, accs, t in rows],
        "",
        "![mnist1d](mnist1d.png)",
        "",
    ]
    (RESULTS / "mnist1d.md").write_text("\n".join(lines))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, c) in enumerate(curves.items()):
        axes[0].plot(range(1, len(c) + 1), c, color=f"C{i}", label=name)
        axes[0].axhline(PAPER[name], color=f"C{i}", ls=":", lw=0.8)
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title="MNIST-1D test accuracy (seed 0; dotted: paper)",
                ylim=(0, 1))
    axes[0].legend()
    for label in range(3):
        idx = np.flatnonzero(y_tr == label)[:3]
        for j, k in enumerate(idx):
            axes[1].plot(x_tr[k, :, 0] + 4 * label, color=f"C{label}", alpha=1 - 0.25 * j)
    axes[1].set(xlabel="position", yticks=[0, 4, 8], yticklabels=["digit 0", "digit 1", "digit 2"],
                title="examples (three per class, offset)")
    fig.tight_layout()
    fig.savefig(RESULTS / "mnist1d.png", dpi=120)
    print(f"wrote {RESULTS / 'mnist1d.md'} and .png in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
