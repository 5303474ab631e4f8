"""``funcnn train``: train a network with the hand-written backward (or autodiff).

Prints a progress bar, the final train/test accuracy and the largest relative
difference between the manual and autodiff gradients at the first step. The run folder
``--out`` (default ``runs/<timestamp>``), checked before any work and created after every
argument is checked, holds ``run.json`` (arguments, model, versions: enough to rebuild the
run), ``checkpoints/`` (orbax, every epoch), ``model/`` (the trained params and state,
orbax), ``metrics.json`` (strict JSON, non-finite values as null) and ``curves.png``.
``--resume DIR`` continues an interrupted run with its recorded arguments. Ctrl-C or
SIGTERM checkpoints, prints one line and exits 130 / 143; a non-finite step exits 1.
``--precision`` picks a ``funcnn.Policy`` preset; ``fp64`` runs under ``jax.enable_x64``.
``--devices``/``--coordinator`` train data-parallel (``funcnn.training.distributed``), for every model;
with several processes every one trains and takes part in each orbax save (``checkpoints/``,
``model/``; process 0 writes them, into a folder every process sees, so ``--resume`` works
the same), and only process 0 prints and writes ``run.json``, ``metrics.json`` and the plot.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from funcnn.cli import gpt
from funcnn.cli.args import (
    UsageError, check_out_dir, int_list, nonnegative_float, positive_float, positive_int, seed, nonnegative_int,
)

DATASETS = ("digits", "mnist5k", "mnist1d", "xor", "blobs", "moons", "pydoc")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
LOSSES = ("softmax_cross_entropy", "mse")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "exponential", "step", "cosine")
PRECISIONS = ("fp32", "fp64", "bf16-mixed", "fp16-mixed", "fp16")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network on an embedded dataset", description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=DATASETS, default="digits")
    p.add_argument("--model", default="mlp", help="mlp, cnn or gpt (with --data pydoc)")
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
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", default=None, help="output folder, new or empty (default runs/<timestamp>)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the interrupted run in DIR with its recorded arguments")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gpt.add_arguments(p)
    p.add_argument("--devices", type=positive_int, default=None,
                   help="data-parallel over N local devices (on CPU: N virtual CPU devices)")
    p.add_argument("--coordinator", default=None, help="multi-host: HOST:PORT of process 0")
    p.add_argument("--num-processes", type=positive_int, default=None, help="multi-host: number of processes")
    p.add_argument("--process-id", type=nonnegative_int, default=None, help="multi-host: this process, 0..P-1")
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


RUN_ARGS = ("data", "model", "hidden", "activation", "loss", "optimizer", "lr", "schedule", "epochs",
            "batch_size", "grad", "l2", "seed", "precision")


def _validate(args):
    """Every check that needs no data, before anything is loaded or written (and before
    JAX starts: ``--devices`` must be known by then)."""
    from funcnn import models

    multi = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in multi) and any(v is None for v in multi):
        raise UsageError("--coordinator, --num-processes and --process-id: expected all three or none")
    if args.process_id is not None and args.process_id >= args.num_processes:
        raise UsageError(f"--process-id: expected 0..{args.num_processes - 1}, got {args.process_id}")
    if args.resume is not None:
        args = _resumed_args(args)
    else:
        if args.model not in models.MODELS:
            raise UsageError(f"--model: expected one of {', '.join(sorted(models.MODELS))}, got {args.model!r}")
        if args.model == "cnn" and args.data not in ("digits", "mnist5k"):
            raise UsageError(f"--model: cnn needs an image dataset (digits or mnist5k), got {args.data!r}")
        if args.out is None:
            args.out = Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = check_out_dir(args.out)
    if args.devices is not None:
        _check_batch_divides(args.batch_size, args.devices * (args.num_processes or 1),
                             f"--devices {args.devices}" + (f" x --num-processes {args.num_processes}"
                                                            if args.num_processes else ""))
    return args


def _check_batch_divides(batch_size, devices, where):
    """Data parallelism splits each batch evenly over the devices of every process."""
    if batch_size % devices:
        raise UsageError(f"--batch-size: expected a multiple of the {devices} devices ({where}), got {batch_size}")


def _resumed_args(args):
    """The recorded arguments of the run in ``--resume DIR``; no other training flag allowed."""
    run_dir = args.resume
    defaults = build_defaults()
    given = [k for k in (*RUN_ARGS, *gpt.GPT_ARGS, "out") if getattr(args, k) != defaults[k]]
    if given:
        raise UsageError(f"--resume: continues with the run's recorded arguments; drop --{given[0].replace('_', '-')}")
    if not (run_dir / "run.json").is_file():
        raise UsageError(f"--resume: expected a run folder written by funcnn train (with run.json), got {str(run_dir)!r}")
    if (run_dir / "model").exists() or (run_dir / "params").exists():
        raise UsageError(f"--resume: the run in {str(run_dir)!r} is complete; see: funcnn evaluate {run_dir}")
    try:
        recorded = json.loads((run_dir / "run.json").read_text())["args"]
        for k in RUN_ARGS:
            setattr(args, k, tuple(recorded[k]) if k == "hidden" else recorded[k])
        if recorded["model"] == "gpt":
            for k in gpt.GPT_ARGS:
                setattr(args, k, recorded[k])
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--resume: {str(run_dir / 'run.json')!r} is not a funcnn run record ({e})") from None
    args.out = run_dir
    return args


def build_defaults():
    import argparse as _argparse

    sub = _argparse.ArgumentParser().add_subparsers()
    register(sub)
    return vars(sub.choices["train"].parse_args([]))


def _versions():
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("funcnn", "jax", "jaxlib", "optax", "orbax-checkpoint", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def run(args: argparse.Namespace) -> int:
    from funcnn.training.interrupt import Interrupted, catching_signals
    from funcnn.training.precision import context
    from funcnn.training.fit import NonFiniteError

    from funcnn.training import distributed

    args = _validate(args)
    resuming = args.resume is not None
    try:  # before JAX starts its backend
        mesh = distributed.setup(args.devices, args.coordinator, args.num_processes, args.process_id)
    except ValueError as e:
        raise UsageError(f"--devices: {str(e).split(': ', 1)[1]}") from None
    if mesh is not None:  # e.g. --coordinator without --devices: every local device of every process
        import jax

        _check_batch_divides(args.batch_size, mesh.size,
                             f"{mesh.size // jax.process_count()} devices x {jax.process_count()} processes")
    try:
        with catching_signals(), context(args.precision):  # fp64: the whole run in 64-bit JAX
            if args.model == "gpt" or args.data == "pydoc":
                return gpt.run(args, mesh)
            return _train(args, resuming, mesh)
    except Interrupted as e:
        unit = "step" if args.model == "gpt" else "epoch"
        print(f"interrupted at {unit} {e.epoch}; resume with: funcnn train --resume {args.out}", file=sys.stderr)
        return e.exit_code
    except NonFiniteError as e:
        print(f"funcnn train: {e}", file=sys.stderr)
        return 1


def _train(args, resuming, mesh):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from funcnn import data as datasets
    from funcnn import losses, models
    from funcnn.training.checkpoint import json_safe, save_tree
    from funcnn.training.plot import training_curves
    from funcnn.training.precision import Policy, prepare
    from funcnn.training.fit import fit

    d = datasets.load(args.data, seed=args.seed)
    if args.batch_size > len(d.x_train):
        raise UsageError(f"--batch-size: expected at most {len(d.x_train)} (the training set), got {args.batch_size}")
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
    layers = [" ".join([name] + [f"{p}{list(np.shape(v))}" for p, v in params[name].items()]) for name in params]
    out = args.out
    run_record = {"command": "train", "args": {**{k: getattr(args, k) for k in RUN_ARGS}, "devices": args.devices},
                  "model": {"builder": args.model, "input_shape": list(d.x_train.shape[1:]),
                            "outputs": d.num_classes, "hidden": list(args.hidden), "activation": args.activation,
                            "layers": layers},
                  "data": {"name": args.data, "seed": args.seed, "train": len(d.x_train), "test": len(d.x_test)},
                  "versions": _versions()}
    primary = jax.process_index() == 0  # several processes: every one trains and checkpoints, process 0 writes
    if not resuming and primary:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(json_safe(run_record), indent=2, allow_nan=False))

    xb, yb = jnp.asarray(d.x_train[: args.batch_size]), jnp.asarray(d.y_train[: args.batch_size])
    gap = first_step_gradient_gap(policy_model, policy_loss, params, state, xb, yb, key, args.l2)

    result = fit(model, loss, optimizer, d, epochs=args.epochs, batch_size=args.batch_size, key=key,
                 grad=args.grad, l2=args.l2, progress=not args.no_progress and primary,
                 params=params, state=state, mesh=mesh, resume=resuming, policy=policy,
                 checkpoint_dir=out / "checkpoints")
    save_tree(out / "model", {"params": result.params, "state": result.state})  # orbax: every process calls
    if not primary:  # multi-host: every process trains, process 0 reports
        return 0
    h = result.history
    print(f"data {args.data}: {len(d.x_train)} train / {len(d.x_test)} test, model {args.model} "
          f"hidden {','.join(map(str, args.hidden))} {args.activation}, {args.grad} gradients, "
          f"precision {args.precision} ({policy})")
    print(f"train accuracy {h['train_acc'][-1]:.4f}  test accuracy {h['test_acc'][-1]:.4f}  "
          f"test loss {h['test_loss'][-1]:.4f}")
    print(f"first-step gradients, manual vs autodiff ({policy.compute.name}): max relative difference {gap:.2e}")
    metrics = {"args": run_record["args"], "first_step_grad_rel_diff": gap, "history": h,
               "final": {k: v[-1] for k, v in h.items()}}
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False))
    training_curves(h, out / "curves.png", f"{args.model} on {args.data} ({args.grad} backward)")
    print(f"wrote {out / 'metrics.json'}, {out / 'curves.png'} and the trained model in {out / 'model'}")
    return 0
