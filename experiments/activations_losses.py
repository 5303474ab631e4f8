"""Hidden activations (sigmoid, tanh, ReLU) and output losses (MSE vs cross-entropy).

1. The same MLP (64 -> 64 -> 64 -> 10) on the 8x8 digits with sigmoid, tanh or ReLU
   hidden units, softmax cross-entropy, plain SGD.
2. Sigmoid output units trained with the quadratic cost (MSE on one-hot targets)
   or with the cross-entropy cost (binary cross-entropy on the same units' logits).
   With a = sigma(z) the output delta is
       MSE:  dL/dz = 2 (a - y) sigma'(z) / size,     CE:  dL/dz = (a - y) / size,
   so a saturated, badly wrong output unit (sigma'(z) ~ 0) learns slowly under MSE
   and fast under cross-entropy: the learning slowdown that cross-entropy removes.
3. Nielsen's one-neuron example: x = 1, target 0, starting at w = b = 2 (output
   0.98), gradient descent at rate 0.15 on either cost.

All gradients are funcnn's hand-written backward.

    python experiments/activations_losses.py [--quick]

Writes experiments/results/activations_losses.md and activations_losses.png (``--quick``: under
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

from funcnn import data, models  # noqa: E402
from funcnn.gradients import value_and_grad  # noqa: E402
from funcnn.core.layer import serial  # noqa: E402
from funcnn.layers.activations import Sigmoid  # noqa: E402
from funcnn.layers.dense import Dense  # noqa: E402
from funcnn.layers.flatten import Flatten  # noqa: E402
from funcnn.losses import Loss, binary_cross_entropy, mse, softmax_cross_entropy  # noqa: E402
from funcnn.training.fit import fit  # noqa: E402

from _common import parse, write  # noqa: E402

BATCH = 32


def on_one_hot(loss: Loss, classes: int, name: str) -> Loss:
    """``loss`` against one-hot targets, taking integer labels (so ``fit`` reports accuracy)."""
    onehot = lambda y: jax.nn.one_hot(y, classes)  # noqa: E731
    return Loss(name, lambda p, y: loss.value(p, onehot(y)), lambda p, y: loss.grad(p, onehot(y)))


def median_history(model, loss, opt, ds, epochs, seeds):
    hist = [fit(model, loss, opt, ds, epochs=epochs, batch_size=BATCH, key=jax.random.key(s),
                progress=False).history for s in range(seeds)]
    return {k: np.median([h[k] for h in hist], axis=0) for k in ("train_loss", "test_acc")}


def one_neuron(cost: str, steps: int, lr=0.15):
    """Output of a single sigmoid neuron per step of gradient descent from w = b = 2 (x = 1, y = 0)."""
    if cost == "mse":
        model, loss, y = serial(Dense(1), Sigmoid()), mse, jnp.zeros((1, 1))
    else:
        model, loss, y = serial(Dense(1)), binary_cross_entropy, jnp.zeros((1, 1))
    params, state = model.init(jax.random.key(0), (1,))
    params["0_dense"] = {"w": jnp.full((1, 1), 2.0), "b": jnp.full((1,), 2.0)}
    vg = value_and_grad(model, loss)
    x = jnp.ones((1, 1))

    def step(p, _):
        _, g, _ = vg(p, state, x, y)
        p = jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)
        z = x @ p["0_dense"]["w"].T + p["0_dense"]["b"]
        return p, jax.nn.sigmoid(z)[0, 0]

    _, outputs = jax.jit(lambda p: jax.lax.scan(step, p, None, length=steps))(params)
    return np.concatenate([[float(jax.nn.sigmoid(4.0))], np.asarray(outputs)])


def main(argv=None):
    args, out = parse(__doc__, argv)
    epochs, seeds, neuron_steps = (2, 1, 20) if args.quick else (40, 3, 300)

    ds = data.load("digits")
    shape = ds.x_train.shape[1:]
    start = time.perf_counter()

    act_rows, act_curves = [], {}
    for activation in ("sigmoid", "tanh", "relu"):
        model = models.mlp(shape, 10, hidden=(64, 64), activation=activation)
        h = median_history(model, softmax_cross_entropy, optax.sgd(0.1), ds, epochs, seeds)
        act_curves[activation] = h
        act_rows.append((activation, h["train_loss"][-1], h["test_acc"][-1]))
        print(f"hidden {activation:8s} train loss {h['train_loss'][-1]:.3f}  test acc {h['test_acc'][-1]:.3f}",
              flush=True)

    loss_rows, loss_curves = [], {}
    hidden = [Flatten(), Dense(30), Sigmoid()]
    variants = {
        "quadratic (MSE) on sigmoid outputs": (serial(*hidden, Dense(10), Sigmoid()),
                                               on_one_hot(mse, 10, "mse(one-hot)")),
        "cross-entropy on sigmoid outputs": (serial(*hidden, Dense(10)),
                                             on_one_hot(binary_cross_entropy, 10, "bce(one-hot)")),
    }
    for name, (model, loss) in variants.items():
        h = median_history(model, loss, optax.sgd(3.0), ds, epochs, seeds)
        loss_curves[name] = h
        loss_rows.append((name, h["test_acc"][-1], next((e + 1 for e, a in enumerate(h["test_acc"]) if a >= 0.9),
                                                         None)))
        print(f"{name:36s} test acc {h['test_acc'][-1]:.3f}", flush=True)

    neuron = {cost: one_neuron(cost, neuron_steps) for cost in ("mse", "cross-entropy")}
    elapsed = time.perf_counter() - start

    def steps_below(out, level=0.2):
        return next((i for i, a in enumerate(out) if a < level), None)

    lines = [
        "# Activations and output losses",
        "",
        f"Digits (1,437 train / 360 test), batch {BATCH}, {epochs} epochs, median of {seeds} seed(s), "
        f"hand-written backward. Total time {elapsed:.0f} s.",
        "",
        "## Hidden units (MLP 64-64-64-10, softmax cross-entropy, SGD lr 0.1)",
        "",
        "| hidden activation | final train loss | final test acc |",
        "|---|---:|---:|",
        *[f"| {n} | {loss:.3f} | {acc:.3f} |" for n, loss, acc in act_rows],
        "",
        "## Output cost with sigmoid output units (MLP 64-30-10, sigmoid hidden, SGD lr 3.0)",
        "",
        "| output cost | final test acc | first epoch with test acc >= 90% |",
        "|---|---:|---:|",
        *[f"| {n} | {acc:.3f} | {'-' if e is None else e} |" for n, acc, e in loss_rows],
        "",
        "## One sigmoid neuron, x = 1, target 0, from w = b = 2 (output 0.98), gradient descent at 0.15",
        "",
        "| cost | steps until the output falls below 0.2 | output after "
        f"{neuron_steps} steps |",
        "|---|---:|---:|",
        *[f"| {c} | {'-' if steps_below(o) is None else steps_below(o)} | {o[-1]:.3f} |" for c, o in neuron.items()],
        "",
        "![activations and losses](activations_losses.png)",
        "",
    ]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, h in act_curves.items():
        axes[0].plot(range(1, epochs + 1), h["test_acc"], label=name)
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title="hidden activation (softmax CE, SGD 0.1)", ylim=(0, 1))
    for name, h in loss_curves.items():
        axes[1].plot(range(1, epochs + 1), h["test_acc"], label=name)
    axes[1].set(xlabel="epoch", ylabel="test accuracy", title="output cost with sigmoid outputs (SGD 3.0)",
                ylim=(0, 1))
    for cost, trace in neuron.items():
        axes[2].plot(trace, label=cost)
    axes[2].set(xlabel="gradient-descent step", ylabel="neuron output (target 0)",
                title="one neuron from w = b = 2", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=8)
    write(out, "activations_losses", lines, fig, elapsed)


if __name__ == "__main__":
    main()
