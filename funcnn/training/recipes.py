r"""The runs `funcnn train` starts, as library calls: a classifier (MLP or CNN) on an embedded
dataset with `fit`, or a character-level GPT on the pydoc corpus with `train_lm`, written as a
run folder (`funcnn.training.runs`).

`train_run(options, out, resume=...)` takes the training options as a dict (the keys of
`RUN_ARGS`, `GPT_ARGS` and `"devices"`, as `run.json`'s `"args"` records them), writes
`run.json` first (new runs), trains with checkpoints in `out/checkpoints`, and writes the
final files (`runs.save_run`). Resuming (`resume=True`) continues from the newest checkpoint
that restores (damaged newer ones are set aside), with the same batches and keys, so the run
ends bitwise equal to one left alone; when every epoch is already done (a run killed between
its last files) it only writes the final files.

Before any training: every option is checked (`OptionError` names it), the output folder and
its checkpoint folder must be writable.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import data as datasets
from funcnn import losses, models
from funcnn.data import text
from funcnn.training import lm, runs
from funcnn.training.checkpoint import CheckpointError, check_writable
from funcnn.training.diagnostics import first_step_gradient_gap
from funcnn.training.fit import fit
from funcnn.training.interrupt import catching_signals
from funcnn.training.optimizers import make_optimizer
from funcnn.training.plot import lm_curves, training_curves
from funcnn.training.precision import Policy, context, prepare

RUN_ARGS = ("data", "model", "hidden", "activation", "loss", "optimizer", "lr", "schedule", "epochs",
            "batch_size", "grad", "l2", "seed", "precision")
GPT_ARGS = ("steps", "context", "layers", "heads", "width", "eval_every", "eval_windows")


class OptionError(ValueError):
    """A training option that does not fit the data or the other options: `option` is its
    name as `run.json` records it (`"batch_size"`), the message one line."""

    def __init__(self, option: str, expected: str) -> None:
        super().__init__(f"{option}: {expected}")
        self.option, self.expected = option, expected


class TrainReport(NamedTuple):
    """What a finished `train_run` reports: `lines` to print (empty on every process but 0)."""

    out: Path
    lines: list[str]


def resume_options(path: str | os.PathLike, *, who: str = "--resume") -> dict:
    """The recorded training options of the unfinished run in `path`.

    **Raises:**

    `runs.RunRecordError`, one line: not a run folder, a damaged record, or a complete run
    (its `model/` is written).
    """
    path = Path(path)
    if not (path / runs.RECORD).is_file():
        return runs.read_record(path, who=who)  # raises: no run.json
    if runs.is_complete(path):
        raise runs.RunRecordError(f"{who}: the run in {str(path)!r} is complete; see: funcnn evaluate {path}")
    record = runs.read_record(path, who=who)
    args = dict(record["args"])
    keys = RUN_ARGS + (GPT_ARGS if record["kind"] == "gpt" else ())
    missing = [k for k in keys if k not in args]
    if missing:
        raise runs.RunRecordError(f"{who}: {str(path / runs.RECORD)!r} is not a funcnn run record "
                                  f"(missing {missing[0]!r})")
    args["hidden"] = tuple(args["hidden"])
    return args


def check_run_folder(out: str | os.PathLike, *, resume: bool) -> None:
    """The run folder (existing when resuming) and its checkpoint folder can be written: a probe
    file in the nearest existing folder of each; raises `CheckpointError` in one line."""

    out = Path(out)
    for folder, what in ((out, "run folder"), (out / runs.CHECKPOINTS, "checkpoint folder")):
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise CheckpointError(f"{what} {str(folder)!r} cannot be created: {str(existing)!r} is a file")
        check_writable(existing, what)
        if existing != folder:
            break  # the rest is created by this run


def train_run(options: dict, out: str | os.PathLike, *, resume: bool, mesh: Any = None,
              progress: bool = True) -> TrainReport:
    """Train the run `options` describe into the run folder `out` (module docstring).

    **Arguments:**

    - `options`: `{key: value}` for every key of `RUN_ARGS` (and `GPT_ARGS` for a GPT), and
      `"devices"`; `hidden` a tuple.
    - `out`: the run folder: new or empty, or the run to continue when `resume`.
    - `resume`: continue the run in `out` from its newest restorable checkpoint.
    - `mesh`: a `jax.sharding.Mesh` with a `"data"` axis for data parallelism, or `None`.
    - `progress`: show a progress bar (process 0 only).

    **Returns:**

    A `TrainReport` whose `lines` summarise the run.

    **Raises:**

    `OptionError` (an option out of range for the data), `runs.RunRecordError`,
    `CheckpointError`, `funcnn.training.fit.NonFiniteError`, `Interrupted`.
    """
    out = Path(out)
    with catching_signals(), context(options["precision"]):  # fp64: the whole run in 64-bit JAX
        if options["model"] == "gpt":
            return _train_gpt(options, out, resume, mesh, progress)
        return _train_classifier(options, out, resume, mesh, progress)


def _classifier_data(options: dict) -> Any:
    d = datasets.load(options["data"], seed=options["seed"])
    if options["batch_size"] > len(d.x_train):
        raise OptionError("batch_size", f"expected at most {len(d.x_train)} (the training set), "
                                        f"got {options['batch_size']}")
    if options["loss"] == "mse":
        eye = np.eye(d.num_classes, dtype=np.float32)
        d = d._replace(y_train=eye[d.y_train], y_test=eye[d.y_test])
    return d


def _train_classifier(options: dict, out: Path, resume: bool, mesh: Any, progress: bool) -> TrainReport:
    d = _classifier_data(options)
    loss = losses.get(options["loss"])
    shape = tuple(d.x_train.shape[1:])
    model_options = {"hidden": tuple(options["hidden"]), "activation": options["activation"]}
    model = models.build(options["model"], shape, d.num_classes, **model_options)
    steps = options["epochs"] * (len(d.x_train) // options["batch_size"])
    optimizer = make_optimizer(options["optimizer"], options["lr"], options["schedule"], steps)
    key = jax.random.key(options["seed"])
    policy = Policy.parse(options["precision"])
    policy_model, policy_loss, _ = prepare(model, loss, optimizer, policy)
    init = jax.jit(policy_model.init, static_argnums=1)  # one program, run twice (below), not op by op
    params, state = init(jax.random.split(key)[1], shape)
    primary = jax.process_index() == 0  # several processes: every one trains and checkpoints, process 0 writes
    if not resume and primary:
        record = runs.make_record(options["model"], _json_args(options),
                                  runs.model_spec(options["model"], shape, d.num_classes, model_options, params),
                                  {"name": options["data"], "seed": options["seed"], "train": len(d.x_train),
                                   "test": len(d.x_test)})
        runs.write_record(out, record)
    result = fit(model, loss, optimizer, d, epochs=options["epochs"], batch_size=options["batch_size"], key=key,
                 grad=options["grad"], l2=options["l2"], progress=progress and primary, params=params, state=state,
                 mesh=mesh, resume=resume, policy=policy, checkpoint_dir=out / runs.CHECKPOINTS)
    # after training (a resume that cannot restore fails before this compiles), at a fresh init:
    # the same params as the run started from
    xb, yb = jnp.asarray(d.x_train[: options["batch_size"]]), jnp.asarray(d.y_train[: options["batch_size"]])
    gap = first_step_gradient_gap(policy_model, policy_loss, *init(jax.random.split(key)[1], shape),
                                  xb, yb, key, options["l2"])
    h = result.history
    title = f"{options['model']} on {options['data']} ({options['grad']} backward)"
    runs.save_run(out, params=result.params, state=result.state, metrics=_metrics(options, gap, h),
                  plot=lambda path: training_curves(h, path, title), primary=primary)
    if not primary:
        return TrainReport(out, [])
    return TrainReport(out, [
        f"data {options['data']}: {len(d.x_train)} train / {len(d.x_test)} test, model {options['model']} "
        f"hidden {','.join(map(str, options['hidden']))} {options['activation']}, {options['grad']} gradients, "
        f"precision {options['precision']} ({policy})",
        f"train accuracy {h['train_acc'][-1]:.4f}  test accuracy {h['test_acc'][-1]:.4f}  "
        f"test loss {h['test_loss'][-1]:.4f}",
        f"first-step gradients, manual vs autodiff ({policy.compute.name}): max relative difference {gap:.2e}",
        f"wrote {out / runs.METRICS}, {out / runs.CURVES} and the trained model in {out / runs.FINAL}"])


def _json_args(options: dict) -> dict:
    keys = RUN_ARGS + (GPT_ARGS if options["model"] == "gpt" else ()) + ("devices",)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, options.get(k)) for k in keys)}


def _metrics(options: dict, gap: float, history: dict) -> dict:
    return {"args": _json_args(options), "first_step_grad_rel_diff": gap, "history": history,
            "final": {k: v[-1] for k, v in history.items() if v}}


def _train_gpt(options: dict, out: Path, resume: bool, mesh: Any, progress: bool) -> TrainReport:
    corpus = text.load_pydoc(options["seed"])
    o = options
    if o["context"] >= len(corpus.validation):
        raise OptionError("context", f"expected below {len(corpus.validation)} (the validation text), "
                                     f"got {o['context']}")
    steps = o["steps"] or o["epochs"] * (len(corpus.train) // (o["batch_size"] * o["context"]))
    model_options = {"layers": o["layers"], "heads": o["heads"], "width": o["width"]}
    model = models.build("gpt", (o["context"],), corpus.vocab_size, **model_options)
    optimizer = make_optimizer(o["optimizer"], o["lr"], o["schedule"], steps)
    policy = Policy.parse(o["precision"])
    policy_model, policy_loss, _ = prepare(model, losses.softmax_cross_entropy, optimizer, policy)
    init = jax.jit(policy_model.init, static_argnums=1)  # one program, run twice (below), not op by op
    params, state = init(jax.random.key(o["seed"]), (o["context"],))
    primary = jax.process_index() == 0
    if not resume and primary:
        record = runs.make_record("gpt", _json_args(o),
                                  runs.model_spec("gpt", (o["context"],), corpus.vocab_size, model_options, params),
                                  {"name": "pydoc", "seed": o["seed"], "train": len(corpus.train),
                                   "validation": len(corpus.validation)}, vocab=corpus.vocab)
        runs.write_record(out, record)
    result = lm.train_lm(model, corpus, context=o["context"], steps=steps, batch_size=o["batch_size"],
                         optimizer=optimizer, grad=o["grad"], eval_every=o["eval_every"],
                         eval_windows=o["eval_windows"], seed=o["seed"], params=params,
                         progress=progress and primary, policy=policy, checkpoint_dir=out / runs.CHECKPOINTS,
                         resume=resume, mesh=mesh)
    x, y = next(lm.batches(corpus.train, context=o["context"], batch_size=o["batch_size"], steps=1, seed=o["seed"]))
    gap = first_step_gradient_gap(policy_model, policy_loss, *init(jax.random.key(o["seed"]), (o["context"],)), x, y,
                                  None, 0.0)
    h = result.history
    runs.save_run(out, params=result.params, state=state, metrics=_metrics(o, gap, h),
                  plot=lambda path: lm_curves(h, path, f"gpt on pydoc ({o['grad']} backward)"), primary=primary)
    if not primary:
        return TrainReport(out, [])
    return TrainReport(out, [
        f"data pydoc: {len(corpus.train)} train / {len(corpus.validation)} validation characters, "
        f"vocabulary {corpus.vocab_size}; model gpt {o['layers']} layers x {o['heads']} heads, width "
        f"{o['width']}, context {o['context']}; {o['grad']} gradients, {steps} steps of {o['batch_size']}, "
        f"precision {o['precision']}",
        *(f"step {s:6d}  train loss {tr:.4f}  validation loss {va:.4f} nats/char"
          for s, tr, va in zip(h["step"], h["train_loss"], h["val_loss"])),
        f"first-step gradients, manual vs autodiff ({policy.compute.name}): max relative difference {gap:.2e}",
        f"wrote {out / runs.RECORD}, {out / runs.FINAL}, {out / runs.METRICS} and {out / runs.CURVES}"])
