"""``funcnn evaluate DIR``: the loss and accuracy of a saved run's model.

Loads the run with ``funcnn.load_run`` and evaluates it in eval mode on the test and
training splits of its dataset (the recorded name and seed), or of ``--data NAME``
when the examples have the same shape and the same classes.
"""
from __future__ import annotations

from pathlib import Path

from funcnn.cli.args import UsageError


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="loss and accuracy of a saved run", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, metavar="DIR", help="a run folder written by funcnn train --out DIR")
    p.add_argument("--data", default=None, help="dataset name (default: the run's)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from funcnn import data as datasets
    from funcnn import losses
    from funcnn.training.runs import load_run
    from funcnn.training.fit import evaluate

    if args.data is not None and args.data not in datasets.LOADERS:
        raise UsageError(f"--data: expected one of {', '.join(sorted(datasets.LOADERS))}, got {args.data!r}")
    try:
        r = load_run(args.run_dir)
    except ValueError as e:
        raise UsageError(f"DIR: {str(e).removeprefix('load_run: ')}") from None
    name = args.data or r.args["data"]
    d = datasets.load(name, seed=r.args["seed"])
    classes = r.model.output_shape(r.input_shape)[-1]
    if tuple(d.x_train.shape[1:]) != r.input_shape or d.num_classes != classes:
        raise UsageError(f"--data: the model takes examples of shape {r.input_shape} in {classes} classes, "
                         f"{name!r} has {tuple(d.x_train.shape[1:])} in {d.num_classes}")
    loss = losses.get(r.args["loss"])
    if r.args["loss"] == "mse":
        eye = np.eye(d.num_classes, dtype=np.float32)
        d = d._replace(y_train=eye[d.y_train], y_test=eye[d.y_test])
    state = "" if r.complete else " (interrupted run: its newest checkpoint)"
    for split, x, y in (("test", d.x_test, d.y_test), ("train", d.x_train, d.y_train)):
        value, acc = evaluate(r.model, loss, r.params, r.state, x, y)
        print(f"{split} loss {value:.4f}  {split} accuracy {acc:.4f}  ({name}, {len(x)} examples){state}")
    return 0

