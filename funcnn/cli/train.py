"""``funcnn train``: train a network with the hand-written backward (or autodiff).

Prints a progress bar, the final train/test accuracy and the largest relative
difference between the manual and autodiff gradients at the first step; writes
``metrics.json`` and ``curves.png`` into ``--out`` (default ``runs/<timestamp>``).
``--precision`` picks a ``funcnn.Policy`` preset; ``fp64`` runs under ``jax.enable_x64``.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from funcnn.cli.args import UsageError, int_list, nonnegative_float, positive_float, positive_int

DATASETS = ("digits", "mnist5k", "xor", "blobs", "moons")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
LOSSES = ("softmax_cross_entropy", "mse")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "exponential", "step", "cosine")
PRECISIONS = ("fp32", "fp64", "bf16-mixed", "fp16-mixed", "fp16")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network on an embedded dataset", description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=DATASETS, default="digits")
    p.add_argument("--model", default="mlp", help="mlp or cnn")
    p.add_argument("--hidden", type=int_list, default=(128, 64), help="hidden sizes, e.g. 128,64")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    p.add_argument("--loss", choices=LOSSES, default="softmax_cross_entropy")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--schedule", choices=SCHEDULES, default="constant")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--grad", choices=("manual", "autodiff"), default="manual")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32, fp64 (all float64), bf16-mixed or fp16-mixed (float32 params; fp16: loss scaling)")
    p.add_argument("--l2", type=nonnegative_float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def make_optimizer(name: str, lr: float, schedule: str, total_steps: int):
    """An optax optimiser with a learning-rate schedule over ``total_steps`` steps."""
    import optax

    rate = {
        "constant": lambda: lr,
        "exponential": lambda: optax.exponential_decay(lr, transition_steps=max(total_steps // 10, 1), decay_rate=0.8),
        "step": lambda: optax.piecewise_constant_schedule(
            lr, {int(total_steps * 0.5): 0.1, int(total_steps * 0.75): 0.1}),
        "cosine": lambda: optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1)),
    }[schedule]()
    return {
        "sgd": lambda: optax.sgd(rate),
        "momentum": lambda: optax.sgd(rate, momentum=0.9),
        "adam": lambda: optax.adam(rate),
    }[name]()


def first_step_gradient_gap(model, loss, params, state, x, y, key, l2):
    """max over leaves of max|g_manual - g_autodiff| / max|g_autodiff| at the first batch."""
    import jax
    import numpy as np

    from funcnn.gradients import value_and_grad

    g_m = jax.jit(value_and_grad(model, loss, mode="manual", l2=l2))(params, state, x, y, key=key)[1]
    g_a = jax.jit(value_and_grad(model, loss, mode="autodiff", l2=l2))(params, state, x, y, key=key)[1]
    gaps = jax.tree_util.tree_map(
        lambda m, a: float(np.max(np.abs(m - a)) / max(float(np.max(np.abs(a))), 1e-30)), g_m, g_a)
    return max(jax.tree_util.tree_leaves(gaps))


def _validate(args):
    from funcnn import models

    if args.model not in models.MODELS:
        raise UsageError(f"--model: expected one of {', '.join(sorted(models.MODELS))}, got {args.model!r}")
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        raise UsageError(f"--out: expected a new or empty folder, {str(args.out)!r} is not empty")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    from funcnn.precision import context

    with context(args.precision):  # fp64: the whole run in 64-bit JAX
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from funcnn import data as datasets
    from funcnn import losses, models
    from funcnn.plot import training_curves
    from funcnn.precision import Policy, prepare
    from funcnn.train import fit

    d = datasets.load(args.data, seed=args.seed)
    if args.batch_size > len(d.x_train):
        raise UsageError(f"--batch-size: expected at most {len(d.x_train)} (the training set), got {args.batch_size}")
    if args.model == "cnn" and len(d.x_train.shape) != 4:
        raise UsageError(f"--model: cnn needs an image dataset (digits or mnist5k), got {args.data!r}")
    loss = losses.get(args.loss)
    if args.loss == "mse":
        eye = np.eye(d.num_classes, dtype=np.float32)
        d = d._replace(y_train=eye[d.y_train], y_test=eye[d.y_test])
    model = models.build(args.model, d.x_train.shape[1:], d.num_classes, hidden=args.hidden, activation=args.activation)
    steps = args.epochs * (len(d.x_train) // args.batch_size)
    optimizer = make_optimizer(args.optimizer, args.lr, args.schedule, steps)
    key = jax.random.key(args.seed)

    k_init = jax.random.split(key)[1]
    policy = Policy.parse(args.precision)
    policy_model, policy_loss, _ = prepare(model, loss, optimizer, policy)
    params, state = policy_model.init(k_init, d.x_train.shape[1:])
    xb, yb = jnp.asarray(d.x_train[: args.batch_size]), jnp.asarray(d.y_train[: args.batch_size])
    gap = first_step_gradient_gap(policy_model, policy_loss, params, state, xb, yb, key, args.l2)

    out = args.out or Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    result = fit(model, loss, optimizer, d, epochs=args.epochs, batch_size=args.batch_size, key=key,
                 grad=args.grad, l2=args.l2, progress=not args.no_progress, params=params, state=state,
                 policy=policy)
    h = result.history
    print(f"data {args.data}: {len(d.x_train)} train / {len(d.x_test)} test, model {args.model} "
          f"hidden {','.join(map(str, args.hidden))} {args.activation}, {args.grad} gradients, "
          f"precision {args.precision} ({policy})")
    print(f"train accuracy {h['train_acc'][-1]:.4f}  test accuracy {h['test_acc'][-1]:.4f}  "
          f"test loss {h['test_loss'][-1]:.4f}")
    print(f"first-step gradients, manual vs autodiff ({policy.compute.name}): max relative difference {gap:.2e}")
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
               "first_step_grad_rel_diff": gap, "history": h,
               "final": {k: v[-1] for k, v in h.items()}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=list))
    training_curves(h, out / "curves.png", f"{args.model} on {args.data} ({args.grad} backward)")
    print(f"wrote {out / 'metrics.json'} and {out / 'curves.png'}")
    return 0
