"""``funcnn perceptron``: the Rosenblatt rule on a 2-D dataset.

Prints the number of updates, whether it converged and the accuracy; on ``blobs``
(linearly separable) it converges, on ``xor`` it cannot.
"""
from __future__ import annotations

import argparse

from funcnn import data
from funcnn.cli.args import arg_type, seed
from funcnn.science import perceptron

MAX_EPOCHS = 100_000
epochs = arg_type("epochs", int, lambda v: 1 <= v <= MAX_EPOCHS, f"an integer in [1, {MAX_EPOCHS}]")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``perceptron`` parser to ``sub``."""
    p = sub.add_parser("perceptron", help="train a perceptron with the Rosenblatt rule",
                       description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("blobs", "xor", "moons"), default="blobs")
    p.add_argument("--epochs", type=epochs, default=100)
    p.add_argument("--seed", type=seed, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train the perceptron on the dataset and print updates, convergence and accuracy."""
    import jax
    import numpy as np


    d = data.load(args.data, seed=args.seed)
    r = perceptron.train(d.x_train, d.y_train, epochs=args.epochs, key=jax.random.key(args.seed))
    errors = np.asarray(r.errors_per_epoch)
    acc_tr = float(np.mean(np.asarray(perceptron.predict(r.w, r.b, d.x_train))[:, 0] == d.y_train))
    acc_te = float(np.mean(np.asarray(perceptron.predict(r.w, r.b, d.x_test))[:, 0] == d.y_test))
    clean = np.flatnonzero(errors == 0)
    status = (f"converged in epoch {clean[0] + 1}" if clean.size else
              f"did not converge in {args.epochs} epochs (errors in the last epoch: {errors[-1]})")
    print(f"perceptron on {args.data}: {int(r.updates)} updates, {status}")
    print(f"train accuracy {acc_tr:.4f}  test accuracy {acc_te:.4f}")
    fmt = {"float_kind": lambda v: f"{v:.3f}"}
    print(f"W = {np.array2string(np.asarray(r.w), formatter=fmt)}  b = {np.array2string(np.asarray(r.b), formatter=fmt)}")
    return 0
