"""Saved runs: ``load_run(DIR)`` rebuilds what ``funcnn train --out DIR`` trained.

A run folder holds ``run.json`` (the arguments, the model's builder and shapes, the data,
the versions), ``model/`` (the trained params and state, orbax), ``checkpoints/``,
``metrics.json`` (the history, non-finite values as null) and ``curves.png``. The model is
rebuilt from ``run.json`` with ``funcnn.models.build`` and a fresh ``init`` gives the tree
structure the saved arrays are read into: no pickle, no code is stored.

An interrupted run (no ``model/`` yet) loads from its newest checkpoint, with
``complete=False``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple


class Run(NamedTuple):
    model: object
    params: dict
    state: dict
    history: dict
    args: dict
    complete: bool
    input_shape: tuple


def _record(path: Path) -> dict:
    if not (path / "run.json").is_file():
        raise ValueError(f"load_run: expected a run folder written by funcnn train (with run.json), got {str(path)!r}")
    try:
        record = json.loads((path / "run.json").read_text())
        record["args"], record["model"]["input_shape"]  # noqa: B018 (the keys must be there)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"load_run: {str(path / 'run.json')!r} is not a funcnn run record ({e})") from None
    return record


def load_run(path) -> Run:
    """The model, trained params and state, history and arguments of the run in ``path``."""
    import jax

    from funcnn import models
    from funcnn.training.checkpoint import Checkpoints, load_tree

    path = Path(path)
    record = _record(path)
    spec, args = record["model"], record["args"]
    shape = tuple(spec["input_shape"])
    model = models.build(spec["builder"], shape, spec["outputs"], hidden=tuple(spec["hidden"]),
                         activation=spec["activation"])
    params, state = model.init(jax.random.key(0), shape)
    if (path / "model").is_dir():
        tree = load_tree(path / "model", {"params": params, "state": state})
        history = {}
        if (path / "metrics.json").is_file():
            history = json.loads((path / "metrics.json").read_text())["history"]
            history = {k: [float("nan") if v is None else v for v in vs] for k, vs in history.items()}
        return Run(model, tree["params"], tree["state"], history, args, True, shape)
    from funcnn.cli.train import make_optimizer

    if not (path / "checkpoints").is_dir():
        raise ValueError(f"load_run: {str(path)!r} holds no trained model and no checkpoint yet")
    checkpoints = Checkpoints(path / "checkpoints")
    try:
        latest = checkpoints.latest()
        if latest is None:
            raise ValueError(f"load_run: {str(path)!r} holds no trained model and no checkpoint yet")
        n_train = record["data"]["train"]
        optimizer = make_optimizer(args["optimizer"], args["lr"], args["schedule"],
                                   args["epochs"] * (n_train // args["batch_size"]))
        key = jax.random.split(jax.random.key(args["seed"]))[0]
        (params, state, _, _), _, history = checkpoints.restore(
            latest, (params, state, optimizer.init(params), key))
    finally:
        checkpoints.close()
    return Run(model, params, state, history, args, False, shape)
