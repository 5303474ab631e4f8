"""``funcnn evaluate``: the loss and accuracy of a saved run's model.

Loads the run with ``funcnn.load_run`` (a classifier: ``mlp`` or ``cnn``) and evaluates it in
eval mode on the test and training splits of its dataset (the recorded name and seed), or of
``--data NAME`` when the examples have the same shape and the same classes. A run whose
final files are missing is evaluated at its newest checkpoint, and the line says so.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from funcnn import data as datasets
from funcnn import losses
from funcnn.cli.args import UsageError
from funcnn.training.fit import evaluate
from funcnn.training.runs import RunRecordError, load_run

if TYPE_CHECKING:
    from funcnn.training.runs import Run


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` parser to ``sub``."""
    p = sub.add_parser("evaluate", help="loss and accuracy of a saved run", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, metavar="DIR", help="a run folder written by funcnn train --out DIR")
    p.add_argument("--data", default=None, help="dataset name (default: the run's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the run, evaluate it on both splits, print one line per split."""

    if args.data == "pydoc":
        raise UsageError("--data: pydoc is text; evaluate takes the datasets of mlp and cnn runs")
    if args.data is not None and args.data not in datasets.LOADERS:
        raise UsageError(f"--data: expected one of {', '.join(sorted(datasets.LOADERS))}, got {args.data!r}")
    try:
        r = load_run(args.run_dir, kind=("mlp", "cnn"))
    except RunRecordError as e:
        raise UsageError(f"DIR: {str(e).removeprefix('load_run: ')}") from None
    name = args.data or r.args["data"]
    d, loss = _dataset(name, r)
    state = "" if r.complete else f" (unfinished run: its newest checkpoint, {r.source})"
    for split, x, y in (("test", d.x_test, d.y_test), ("train", d.x_train, d.y_train)):
        value, acc = evaluate(r.model, loss, r.params, r.state, x, y)
        print(f"{split} loss {value:.4f}  {split} accuracy {acc:.4f}  ({name}, {len(x)} examples){state}")
    return 0


def _dataset(name: str, r: "Run") -> tuple:
    """The dataset ``name`` as the run's model and loss take it."""
    import numpy as np


    try:
        d = datasets.load(name, seed=r.args["seed"])
        loss = losses.get(r.args["loss"])
    except (ValueError, TypeError) as e:
        raise UsageError(f"DIR: the run's record does not fit this version ({e})") from None
    classes = r.model.output_shape(r.input_shape)[-1]
    if tuple(d.x_train.shape[1:]) != r.input_shape or d.num_classes != classes:
        raise UsageError(f"--data: the model takes examples of shape {r.input_shape} in {classes} classes, "
                         f"{name!r} has {tuple(d.x_train.shape[1:])} in {d.num_classes}")
    if r.args["loss"] == "mse":
        eye = np.eye(d.num_classes, dtype=np.float32)
        d = d._replace(y_train=eye[d.y_train], y_test=eye[d.y_test])
    return d, loss

