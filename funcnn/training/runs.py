"""Run folders: one format for every model `funcnn train` trains (MLP, CNN, GPT), one `load_run`.

A run folder `DIR` holds

* `run.json`: the record, written first (atomically) and never changed afterwards:
  `{"format": 2, "command": "train", "kind": "mlp" | "cnn" | "gpt", "args": {...},
  "model": {"builder", "input_shape", "outputs", "options", "layers"}, "data": {...},
  "versions": {...}}` and, for a GPT, `"vocab"` (the characters, id order);
* `checkpoints/`: orbax step folders (`funcnn.training.checkpoint`), params and state first;
* `metrics.json`: the history and the final values (strict JSON, non-finite values as null);
* `curves.png`: the training curves;
* `model/`: the trained `{"params", "state"}` (orbax), written last: a run is complete when
  `model/` is there.

Every JSON file and the plot are written to a temporary file in the same folder and renamed;
`model/` is orbax's atomic folder. The model is rebuilt from `run.json` with
`funcnn.models.build`, and a fresh `init` gives the tree structure and every array's shape
and dtype that the saved arrays must match: no pickle, no code is stored.

A run whose final files are missing (killed after its last checkpoint) loads from its newest
checkpoint that reads completely (`Run.complete` is `False`, `Run.source` says which);
`funcnn train --resume DIR` writes the final files. Folders written before this format (an
MLP/CNN `run.json` without `"format"`; a GPT run with `params/` and a `run.json` whose
`"model"` is `"gpt"`) load as they are.

Every failure is one line naming the folder or file: `RunRecordError` (a `ValueError`) for a
folder that is not a run of the kind asked for or whose record or arrays disagree,
`funcnn.training.checkpoint.CheckpointError` (an `OSError`) for files that cannot be read
or written.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

from funcnn import models
from funcnn.core.extras import MissingExtra
from funcnn.core.layer import Layer
from funcnn.core.machine import versions
from funcnn.training.checkpoint import (
    CheckpointError, Checkpoints, check_arrays, history_from_json, json_safe, load_tree, reason, save_tree,
)

FORMAT = 2
RECORD, METRICS, CURVES, FINAL, CHECKPOINTS = "run.json", "metrics.json", "curves.png", "model", "checkpoints"
LEGACY_FINAL = "params"  # GPT runs written before this format
KINDS = ("mlp", "cnn", "gpt")
REQUIRED_ARGS = ("data", "seed", "loss")  # what evaluating or sampling a run reads
VERSIONS = ("funcnn", "jax", "jaxlib", "optax", "orbax-checkpoint", "numpy")


class RunRecordError(ValueError):
    """A folder that is not a run of the kind asked for, a damaged record, or saved arrays that
    disagree with the record: one line naming the folder or file and what was expected (the
    CLI exits 2 with it)."""


class Run(NamedTuple):
    """A loaded run: `model` rebuilt from the record, `params` and `state` (the trained ones,
    or the newest checkpoint's when `complete` is `False`), `history` (`{name: [float]}`),
    `args` (the training arguments), `input_shape` (one example's shape, e.g. `(2,)` or
    `(context,)`), `kind` (`"mlp"`, `"cnn"`, `"gpt"`), `vocab` (a GPT's characters, else
    `None`) and `source` (the folder the arrays were read from)."""

    model: Layer
    params: dict
    state: dict
    history: dict
    args: dict
    complete: bool
    input_shape: tuple
    kind: str = "mlp"
    vocab: str | None = None
    source: str = ""


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as strict JSON (non-finite floats as null) atomically: a temporary file in
    the same folder, flushed and renamed over `path`.

    **Raises:**

    `CheckpointError` (one line naming the file) when it cannot be written; no temporary
    file is left.
    """
    text = json.dumps(json_safe(value), indent=2, allow_nan=False)
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def write_atomically(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call `write(tmp)` on a temporary path beside `path` (same suffix), then rename it to `path`.

    **Raises:**

    `CheckpointError`, one line naming `path`, when writing or renaming fails (the temporary
    file is removed).
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # as a plain open() would create it (mkstemp makes it private)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"{path}: cannot be written ({reason(e)})") from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def model_spec(builder: str, input_shape: tuple, outputs: int, options: dict, params: dict) -> dict:
    """The record's `"model"`: what `build_model` rebuilds the model from.

    **Arguments:**

    - `builder`: a name in `funcnn.models.MODELS`.
    - `input_shape`: one example's shape.
    - `outputs`: classes (or the vocabulary size of a GPT).
    - `options`: the builder's keyword arguments (`hidden`, `activation`; `layers`, `heads`, `width`).
    - `params`: the initial params, listed per layer for a reader of the record.

    **Returns:**

    A JSON-ready dict.
    """
    import numpy as np

    layers = [" ".join([name] + [f"{p}{list(np.shape(v))}" for p, v in sorted(_named_leaves(params[name]))])
              for name in params]
    return {"builder": builder, "input_shape": list(input_shape), "outputs": int(outputs),
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}, "layers": layers}


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """`(path, leaf)` pairs of a params subtree, paths as `a/b`."""
    import jax

    return [("/".join(str(getattr(k, "key", k)) for k in path), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def build_model(spec: dict) -> Layer:
    """The model a record's `"model"` describes (`model_spec`), untrained."""
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["options"].items()}
    return models.build(spec["builder"], tuple(spec["input_shape"]), spec["outputs"], **options)


def make_record(kind: str, args: dict, spec: dict, data: dict, vocab: str | None = None) -> dict:
    """A run record (module docstring) with this machine's versions.

    **Arguments:**

    - `kind`: `"mlp"`, `"cnn"` or `"gpt"`.
    - `args`: the training arguments, JSON-ready.
    - `spec`: `model_spec(...)`.
    - `data`: the dataset's name, seed and sizes.
    - `vocab`: a GPT's characters.
    """
    record = {"format": FORMAT, "command": "train", "kind": kind, "args": args, "model": spec, "data": data,
              "versions": versions(VERSIONS)}
    if vocab is not None:
        record["vocab"] = vocab
    return record


def write_record(out: str | os.PathLike, record: dict) -> None:
    """Create the run folder `out` (its parents too) and write `out/run.json` atomically."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{out}: cannot be created ({reason(e)})") from None
    write_json(out / RECORD, record)


def _legacy_gpt(record: dict) -> dict:
    config = record["config"]
    vocab = record["vocab"]
    if not isinstance(vocab, str) or not vocab:
        raise TypeError("vocab is not a string of characters")
    options = {k: config[k] for k in ("layers", "heads", "width")}
    return {"format": 1, "command": "train", "kind": "gpt", "args": record["args"], "vocab": vocab,
            "model": {"builder": "gpt", "input_shape": [config["context"]], "outputs": len(vocab),
                      "options": options},
            "data": {"name": "pydoc", "seed": record["args"]["seed"]}, "history": record.get("history")}


def _legacy_classifier(record: dict) -> dict:
    spec = record["model"]
    options = {"hidden": spec["hidden"], "activation": spec["activation"]}
    kind = spec["builder"]
    return {**record, "format": 1, "kind": kind, "model": {**spec, "options": options}}


def read_record(path: str | os.PathLike, *, who: str = "load_run") -> dict:
    """The record of the run in `path`, in this format whatever version wrote it.

    **Raises:**

    `RunRecordError`, one line: no such folder, no `run.json`, a `run.json` that is not
    valid JSON or lacks what a record holds, or names a model `funcnn.models` does not have.
    """
    path = Path(path)
    file = path / RECORD
    if not file.is_file():
        raise RunRecordError(f"{who}: expected a run folder written by funcnn train (with {RECORD}), got "
                             f"{str(path)!r}")
    try:
        raw = json.loads(file.read_text())
        if not isinstance(raw, dict):
            raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
        if raw.get("format") == FORMAT:
            record = raw
        elif "format" in raw:
            raise ValueError(f"format {raw['format']!r}: written by another funcnn version; this one reads {FORMAT}")
        elif raw.get("model") == "gpt":
            record = _legacy_gpt(raw)
        else:
            record = _legacy_classifier(raw)
        spec, args = record["model"], record["args"]
        if record["kind"] not in KINDS or spec["builder"] != record["kind"]:
            raise ValueError(f"model {spec['builder']!r} is not one of {', '.join(KINDS)}")
        if not isinstance(args, dict) or not isinstance(spec["options"], dict):
            raise TypeError("args and model options must be JSON objects")
        tuple(int(n) for n in spec["input_shape"]), int(spec["outputs"])  # noqa: B018 (must be numbers)
        if record["kind"] == "gpt" and not isinstance(record.get("vocab"), str):
            raise TypeError("a gpt record holds its vocabulary as a string")
        for k in REQUIRED_ARGS:
            args[k]  # noqa: B018 (KeyError names it)
        if record["kind"] != "gpt" and spec["options"].keys() != {"hidden", "activation"}:
            raise ValueError(f"model options {sorted(spec['options'])} are not hidden and activation")
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as e:
        text = f"missing {e}" if isinstance(e, KeyError) else reason(e)
        raise RunRecordError(f"{who}: {str(file)!r} is not a funcnn run record ({text})") from None
    return record


def is_complete(path: str | os.PathLike) -> bool:
    """Whether the run in `path` has its trained model written (`model/`, or a legacy GPT's `params/`)."""
    path = Path(path)
    return (path / FINAL).exists() or (path / LEGACY_FINAL).exists()


def save_run(out: str | os.PathLike, *, params: dict, state: dict, metrics: dict,
             plot: Callable[[str], None] | None = None, primary: bool = True) -> None:
    """Write a trained run's final files into the run folder `out` (`write_record` made it):
    `metrics.json`, `curves.png` (`plot(path)` draws it), then `model/` last.

    Each is written atomically, so a run killed between them has no half-written file and no
    `model/`; `funcnn train --resume` writes them again from the last checkpoint.

    **Arguments:**

    - `out`: the run folder.
    - `params`, `state`: the trained model's.
    - `metrics`: `{"args", "history", "final", ...}`, JSON-ready but for non-finite floats.
    - `plot`: draws the curves into the path it is given (any suffix `.png`).
    - `primary`: this process writes the JSON and the plot (several processes: every one
      calls, orbax writes `model/` from process 0).
    """
    out = Path(out)
    if primary:
        remove_stale_temporaries(out)
        write_json(out / METRICS, metrics)
        if plot is not None:
            try:
                write_atomically(out / CURVES, plot)
            except MissingExtra as e:  # the run is complete without its figure
                print(f"{CURVES} skipped: {e}", file=sys.stderr)
    save_tree(out / FINAL, {"params": params, "state": state})


def remove_stale_temporaries(out: str | os.PathLike) -> None:
    """Remove what a write killed midway left in the run folder `out`: the temporary files of
    `write_atomically` (`.metrics.json.*.tmp.json`, ...) and orbax's temporary `model/`."""
    out = Path(out)
    for name in (RECORD, METRICS, CURVES):
        for stale in out.glob(f".{name}.*.tmp*"):
            stale.unlink(missing_ok=True)
    for stale in out.glob(f"{FINAL}.orbax-checkpoint-tmp*"):
        shutil.rmtree(stale, ignore_errors=True)


def _history(path: Path, record: dict) -> dict:
    file = path / METRICS
    if file.is_file():
        try:
            return history_from_json(json.loads(file.read_text())["history"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RunRecordError(f"load_run: {str(file)!r} is not a funcnn metrics file ({reason(e)})") from None
    if record.get("history"):
        return history_from_json(record["history"])
    return {}


def _from_checkpoints(path: Path, leaves: list) -> tuple[list, dict, str]:
    """The params-and-state arrays of the newest checkpoint that reads completely and matches."""
    folder = path / CHECKPOINTS
    if not folder.is_dir():
        raise RunRecordError(f"load_run: {str(path)!r} holds no trained model ({FINAL}/) and no checkpoint yet")
    checkpoints = Checkpoints(folder, read_only=True)
    failed = []
    try:
        for step in checkpoints.steps()[::-1]:
            try:
                arrays, meta = checkpoints.read(step)
                check_arrays(f"checkpoint {folder}/{step}", arrays, leaves, "the record's model")
                return arrays[: len(leaves)], meta["history"], str(folder / str(step))
            except (CheckpointError, ValueError) as e:
                failed.append(str(e))
    finally:
        checkpoints.close()
    if failed:
        raise CheckpointError(f"load_run: no checkpoint of {str(path)!r} can be read ({failed[0]})")
    raise RunRecordError(f"load_run: {str(path)!r} holds no trained model ({FINAL}/) and no checkpoint yet")


def load_run(path: str | os.PathLike, *, kind: str | tuple[str, ...] | None = None) -> Run:
    """The model, trained params and state, history and arguments of the run in `path`.

    The model is rebuilt from `run.json`; the saved arrays must have the shape and dtype of
    its fresh `init`, leaf by leaf. A run without `model/` loads from its newest checkpoint
    that reads completely (`complete=False`).

    **Arguments:**

    - `path`: a run folder (module docstring).
    - `kind`: the kind(s) of run the caller can use (`"gpt"` for sampling); `None`: any.

    **Returns:**

    A `Run`; `params` and `state` have the structure of `run.model.init(key, run.input_shape)`.

    **Raises:**

    `RunRecordError` (a `ValueError`) for a folder that is not a run (of `kind`), a damaged
    record or arrays that disagree with it; `CheckpointError` (an `OSError`) when no saved
    arrays can be read. One line each.
    """
    import jax

    path = Path(path)
    record = read_record(path)
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and record["kind"] not in wanted:
        raise RunRecordError(f"load_run: {str(path)!r} holds a {record['kind']} run, expected a "
                             f"{' or '.join(wanted)} run")
    spec = record["model"]
    try:
        model = build_model(spec)
        shape = tuple(int(n) for n in spec["input_shape"])
        params, state = jax.eval_shape(lambda k: model.init(k, shape), jax.random.key(0))
    except (ValueError, TypeError) as e:
        raise RunRecordError(f"load_run: {str(path / RECORD)!r} describes a model that cannot be built "
                             f"({reason(e)})") from None
    template = {"params": params, "state": state}
    leaves, treedef = jax.tree_util.tree_flatten(template)
    complete = is_complete(path)
    if (path / FINAL).exists():
        source, history = str(path / FINAL), _history(path, record)
        arrays = _checked(lambda: jax.tree_util.tree_leaves(load_tree(path / FINAL, template)))
    elif (path / LEGACY_FINAL).exists():
        source, history = str(path / LEGACY_FINAL), _history(path, record)
        if jax.tree_util.tree_leaves(state):
            raise RunRecordError(f"load_run: {str(path)!r}: {LEGACY_FINAL}/ holds params only, the model has state")
        arrays = _checked(lambda: jax.tree_util.tree_leaves(load_tree(path / LEGACY_FINAL, params)))
    else:
        arrays, history, source = _from_checkpoints(path, leaves)
    tree = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in arrays])
    return Run(model, tree["params"], tree["state"], history, record["args"], complete, shape, record["kind"],
               record.get("vocab"), source)


def _checked(read: Callable[[], list]) -> list:
    try:
        return read()
    except CheckpointError:
        raise
    except ValueError as e:
        raise RunRecordError(f"load_run: {e}") from None
