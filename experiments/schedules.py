"""Learning-rate schedules: constant, exponential decay, step decay, cosine, and Adam.

The same MLP (64 -> 128 -> 64 -> 10, ReLU) on the 8x8 digits, trained by minibatch
SGD with four schedules of the same initial rate, and by Adam at its usual rate, all
with the hand-written backward and the same seeds (so the same initial weights and
batches). The figure puts the training loss of every run on one plot, beside the
learning rate each schedule gives per step.

    python experiments/schedules.py [--quick]

Writes experiments/results/schedules.md and schedules.png (``--quick``: under
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

from funcnn import data, models  # noqa: E402
from funcnn.losses import softmax_cross_entropy  # noqa: E402
from funcnn.training.fit import fit  # noqa: E402

from _common import parse, write  # noqa: E402

LR, ADAM_LR, BATCH = 0.5, 1e-3, 32


def schedules(total_steps):
    """name -> learning rate per step (a float or an optax schedule)."""
    return {
        f"constant {LR:g}": LR,
        "exponential (x0.01 over the run)": optax.exponential_decay(LR, transition_steps=total_steps,
                                                                    decay_rate=0.01),
        "step (x0.1 at 50% and 75%)": optax.piecewise_constant_schedule(
            LR, {total_steps // 2: 0.1, (3 * total_steps) // 4: 0.1}),
        "cosine": optax.cosine_decay_schedule(LR, decay_steps=total_steps),
    }


def main(argv=None):
    args, out = parse(__doc__, argv)
    epochs, seeds = (2, 1) if args.quick else (40, 3)

    ds = data.load("digits")
    total_steps = epochs * (len(ds.x_train) // BATCH)
    runs = {name: optax.sgd(rate) for name, rate in schedules(total_steps).items()}
    runs[f"Adam {ADAM_LR:g} (constant)"] = optax.adam(ADAM_LR)
    model = models.mlp(ds.x_train.shape[1:], 10, hidden=(128, 64), activation="relu")

    start = time.perf_counter()
    rows, curves = [], {}
    for name, opt in runs.items():
        hist = [fit(model, softmax_cross_entropy, opt, ds, epochs=epochs, batch_size=BATCH,
                    key=jax.random.key(seed), progress=False).history for seed in range(seeds)]
        curves[name] = np.median([h["train_loss"] for h in hist], axis=0)
        final = float(np.median([h["train_loss"][-1] for h in hist]))
        test_loss = float(np.median([h["test_loss"][-1] for h in hist]))
        test_acc = float(np.median([h["test_acc"][-1] for h in hist]))
        rows.append((name, final, test_loss, test_acc))
        print(f"{name:36s} final train loss {final:.2e}  test loss {test_loss:.3f}  test acc {test_acc:.3f}",
              flush=True)
    elapsed = time.perf_counter() - start

    lines = [
        "# Learning-rate schedules",
        "",
        f"MLP 64-128-64-10 (ReLU) on digits (1,437 train / 360 test), batch {BATCH}, {epochs} epochs "
        f"({total_steps} steps); SGD from lr {LR:g} under each schedule, and Adam at {ADAM_LR:g}; "
        f"median of {seeds} seed(s); hand-written backward. The train loss is the full training set's "
        f"cross-entropy at the end of each epoch (eval mode). Total time {elapsed:.0f} s.",
        "",
        "| optimiser / schedule | final train loss | final test loss | final test acc |",
        "|---|---:|---:|---:|",
        *[f"| {n} | {loss:.2e} | {test_loss:.3f} | {acc:.3f} |" for n, loss, test_loss, acc in rows],
        "",
        "![schedules](schedules.png)",
        "",
    ]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for name, curve in curves.items():
        axes[0].semilogy(range(1, epochs + 1), curve, label=name)
    axes[0].set(xlabel="epoch", ylabel="training cross-entropy", title="training loss (median over seeds)")
    axes[0].legend(fontsize=8)
    steps = np.arange(total_steps)
    for name, rate in schedules(total_steps).items():
        axes[1].plot(steps, jax.vmap(rate)(steps) if callable(rate) else np.full(total_steps, rate), label=name)
    axes[1].set(xlabel="step", ylabel="SGD learning rate", title="the schedules")
    axes[1].legend(fontsize=8)
    write(out, "schedules", lines, fig, elapsed)


if __name__ == "__main__":
    main()
