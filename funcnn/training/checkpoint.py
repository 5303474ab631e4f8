"""Checkpoints of a training run with orbax-checkpoint: atomic step folders, the last `keep` kept.

A checkpoint of epoch k (k full epochs done; for the language-model trainer, k steps) is
one orbax step folder `DIR/k/` holding two items, written to a temporary folder and renamed
when complete (orbax's atomicity), so a run killed mid-save leaves the previous checkpoint
intact and no half-written one is read (leftover temporary folders are removed when the
folder is opened again):

* `arrays`: the leaves of the trainer's tree (for `fit`: `(params, state, opt_state, key)`;
  every trainer puts params and state first) in tree order, keyed by their position. The
  tree structure is not stored: it is rebuilt from a template (a fresh `model.init` and
  `optimizer.init`), so the user's tree comes back unchanged, optax NamedTuples and empty
  dicts included. A typed PRNG key is stored as `jax.random.key_data(key)` (uint32) and
  re-wrapped on restore.
* `meta`: JSON: the epoch and the history so far (non-finite values as `null`).

Restoring checks every array's shape and dtype against the template. On resume, a newest
checkpoint that cannot be read completely, or that disagrees with the template, is set aside
(renamed `DIR/k.damaged`, never deleted; one line on stderr names it and why) and the run
continues from the newest one that restores; if none does, `CheckpointError` says so.

No pickle anywhere: arrays are tensorstore/zarr, metadata JSON.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np


class CheckpointError(OSError):
    """A checkpoint folder that cannot be read or written: the message is one line naming the
    folder and what went wrong (the CLI exits 1 with it)."""


def _orbax():
    import orbax.checkpoint as ocp

    return ocp


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Orbax's absl warnings (a read-only manager, a missing metadata file) off: the caller
    reports what matters in one line."""
    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def read_arrays(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an orbax PyTree item (`arrays/` of a step folder, or a `save_tree`
    folder), read synchronously with tensorstore, by its stored name.

    Orbax's own restore reads the arrays concurrently on an event loop; when one file is
    damaged it stops at the first error and the other reads complete later into a closed
    loop, printing tracebacks. Reading one array after the other has no such tail.

    **Arguments:**

    - `folder`: the item folder (holding `manifest.ocdbt`).

    **Returns:**

    `{name: array}`: names `"00000"`, ... for what `Checkpoints.save`/`save_tree` wrote.

    **Raises:**

    Whatever tensorstore raises for a missing or damaged file (`ValueError`), or
    `FileNotFoundError` when `folder` holds no array store.
    """
    import tensorstore as ts

    base = os.path.abspath(os.fspath(folder))
    if not os.path.isfile(os.path.join(base, "manifest.ocdbt")):
        raise FileNotFoundError(f"no manifest.ocdbt in {base}")
    kvstore = {"driver": "ocdbt", "base": f"file://{base}/"}
    keys = ts.KvStore.open(kvstore).result().list().result()
    names = sorted(k.decode()[: -len("/.zarray")] for k in keys if k.endswith(b"/.zarray"))
    out = {}
    for name in names:
        store = ts.open({"driver": "zarr", "kvstore": {**kvstore, "path": name + "/"}}, open=True).result()
        out[name] = np.asarray(store.read().result())
    return out


def numbered(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The arrays named `"00000"`, `"00001"`, ... in order; a `ValueError` when the names are not that."""
    names = [f"{i:05d}" for i in range(len(arrays))]
    if sorted(arrays) != names:
        raise ValueError(f"expected arrays named 00000..{len(arrays) - 1:05d}, got {sorted(arrays)[:3]}...")
    return [arrays[k] for k in names]


def reason(error: BaseException, limit: int = 160) -> str:
    """The first line of `error`'s message, at most `limit` characters: what a one-line report
    of a failure from a lower library (orbax, tensorstore, json) quotes.

    **Arguments:**

    - `error`: the exception caught.
    - `limit`: the longest text returned.

    **Returns:**

    `"<ExceptionType>: <first line>"`, shortened with `...` past `limit`.
    """
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        lines = [s.strip() for s in str(error).splitlines() if s.strip()]
        text = lines[0] if lines else ""
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by `None` (strict JSON has no NaN).

    **Arguments:**

    - `value`: nested dicts, lists and tuples of numbers, strings, `None`.

    **Returns:**

    The same nesting (tuples as lists), NumPy scalars as Python numbers.
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def history_from_json(history: dict) -> dict:
    """The inverse of `json_safe` on a history: `null` back to `nan`.

    **Arguments:**

    - `history`: `{name: [number or None, ...]}`.

    **Returns:**

    `{name: [float, ...]}`.
    """
    return {k: [float("nan") if v is None else v for v in vs] for k, vs in history.items()}


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Write and remove a probe file in `folder`, so that a folder the run cannot write is found
    before any training (a real write: it also holds for root, for whom permission bits do
    not count, and for read-only file systems).

    **Arguments:**

    - `folder`: an existing folder.
    - `what`: how the one-line message names it, e.g. `"checkpoint folder"`.

    **Raises:**

    `CheckpointError`, one line naming the folder and the reason.
    """
    try:
        fd, probe = tempfile.mkstemp(prefix=".funcnn-probe-", dir=os.fspath(folder))
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(f"{what} {str(folder)!r} is not writable ({reason(e)})") from None


def _expected(like: Any) -> tuple[tuple[int, ...], np.dtype]:
    return tuple(np.shape(like)), np.asarray(like).dtype if not hasattr(like, "dtype") else np.dtype(like.dtype)


def check_arrays(where: str, arrays: list[np.ndarray], template_leaves: list[Any], what: str) -> None:
    """Every saved array has the shape and dtype of the template's leaf at its position.

    **Arguments:**

    - `where`: the file or folder named in the message.
    - `arrays`: the saved arrays, in tree order (at least as many as `template_leaves`).
    - `template_leaves`: the leaves they must match (arrays or `jax.ShapeDtypeStruct`s).
    - `what`: what the template is, e.g. `"the model and optimizer"`.

    **Raises:**

    `ValueError`, one line: the first array that disagrees, as `float32[8]` against the expected.
    """
    if len(arrays) < len(template_leaves):
        raise ValueError(f"{where}: holds {len(arrays)} arrays, {what} have {len(template_leaves)}; "
                         f"it was written by a different run")
    for i, like in enumerate(template_leaves):
        a = arrays[i]
        shape, dtype = _expected(like)
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(f"{where}: array {i} is {a.dtype}{list(a.shape)}, {what} expect "
                             f"{dtype}{list(shape)}; it was written by a different run")


class Checkpoints:
    """The checkpoints of one run in `directory`: `save(epoch, tree, history)`, `latest()`
    (newest complete epoch or `None`), `restore(epoch, template)`, `restore_newest(template)`
    (falling back past damaged ones), `read(epoch)` (the raw arrays and metadata).

    `read_only=True` opens an existing folder without creating or cleaning anything (for
    loading a run); otherwise the folder is created, must be writable (a probe file is
    written), and leftover temporary folders of a killed save are removed.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2, read_only: bool = False) -> None:
        ocp = _orbax()
        self.directory = os.path.abspath(os.fspath(directory))
        if not read_only:
            if os.path.exists(self.directory) and not os.path.isdir(self.directory):
                raise CheckpointError(f"checkpoint folder {self.directory!r} is a file, not a folder")
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as e:
                raise CheckpointError(f"checkpoint folder {self.directory!r} cannot be created ({reason(e)})") from None
            check_writable(self.directory, "checkpoint folder")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                               cleanup_tmp_directories=not read_only,
                                               enable_async_checkpointing=False)
        try:
            with _quiet():
                self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("arrays", "meta"))
        except Exception as e:  # noqa: BLE001 (orbax raises many kinds; the user gets one line)
            raise CheckpointError(f"checkpoint folder {self.directory!r} cannot be opened ({reason(e)})") from None

    def latest(self) -> int | None:
        """The newest step folder's number, or `None` when there is none."""
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        """Every step folder's number, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, tree: Any, history: dict) -> None:
        """Write `tree` (any pytree of arrays and typed keys) and `history` as step `epoch`.

        **Raises:**

        `CheckpointError` (one line) when the folder cannot be written; the half-written
        temporary folder is removed and the earlier checkpoints are left as they were.
        """
        ocp = _orbax()
        leaves = jax.tree_util.tree_leaves(_keys_to_data(tree))
        arrays = {f"{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
        meta = {"epoch": int(epoch), "history": json_safe(history)}
        try:
            with _quiet():
                self._manager.save(int(epoch), args=ocp.args.Composite(
                    arrays=ocp.args.PyTreeSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
                self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            self._remove_temporary(epoch)
            raise CheckpointError(f"checkpoint {self.directory}/{epoch}: cannot be written ({reason(e)})") from None

    def _remove_temporary(self, epoch: int) -> None:
        for p in Path(self.directory).glob(f"{int(epoch)}.orbax-checkpoint-tmp*"):
            shutil.rmtree(p, ignore_errors=True)

    def read(self, epoch: int) -> tuple[list[np.ndarray], dict]:
        """The saved arrays of step `epoch` in tree order, and its metadata.

        **Returns:**

        `(arrays, meta)`: `meta` is `{"epoch": int, "history": {...}}` (nulls as `nan`).

        **Raises:**

        `CheckpointError`, one line naming the step folder, when it cannot be read completely.
        """
        folder = Path(self.directory) / str(int(epoch))
        where = f"checkpoint {folder}"
        try:
            arrays = numbered(read_arrays(folder / "arrays"))
            meta = json.loads((folder / "meta" / "metadata").read_text())
            epoch_saved, history = int(meta["epoch"]), history_from_json(meta["history"])
        except Exception as e:  # noqa: BLE001 (zarr, tensorstore, json: one line)
            raise CheckpointError(f"{where}: cannot be read ({reason(e)})") from None
        if epoch_saved != int(epoch):
            raise CheckpointError(f"{where}: its metadata says step {epoch_saved}")
        return arrays, {"epoch": epoch_saved, "history": history}

    def restore(self, epoch: int, template: Any) -> tuple[Any, int, dict]:
        """Step `epoch` read into the structure of `template`.

        **Arguments:**

        - `epoch`: a step folder's number.
        - `template`: a pytree with the structure, shapes and dtypes of what was saved.

        **Returns:**

        `(tree, epoch, history)`: `tree` has the structure and dtypes of `template`.

        **Raises:**

        `CheckpointError` when the step cannot be read; `ValueError` when an array's count,
        shape or dtype disagrees with `template` (one line).
        """
        arrays, meta = self.read(epoch)
        leaves, treedef = jax.tree_util.tree_flatten(_keys_to_data(template))
        where = f"checkpoint {self.directory}/{epoch}"
        if len(arrays) != len(leaves):
            raise ValueError(f"{where}: holds {len(arrays)} arrays, the model and optimizer have {len(leaves)}; "
                             f"it was written by a different run")
        check_arrays(where, arrays, leaves, "the model and optimizer")
        tree = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in arrays])
        return _data_to_keys(tree, template), meta["epoch"], meta["history"]

    def restore_newest(self, template: Any, *, who: str, unit: str) -> tuple[Any, int, dict] | None:
        """The newest step that restores completely into `template`; newer ones that do not are
        set aside (renamed `k.damaged`, never deleted) with one line on stderr each.

        **Returns:**

        `(tree, epoch, history)` as `restore`, or `None` when there is no step folder.

        **Raises:**

        `CheckpointError` when no step restores (nothing is renamed then), naming the newest
        and why it failed.
        """
        steps = self.steps()[::-1]
        failed = []
        for step in steps:
            try:
                restored = self.restore(step, template)
            except (CheckpointError, ValueError) as e:
                text = str(e)
                failed.append((step, text.split(": ", 1)[-1] if text.startswith("checkpoint ") else text))
                continue
            for bad, why in failed:  # several processes: process 0 renames and reports
                if jax.process_index() == 0:
                    aside = self._set_aside(bad)
                    print(f"{who}: checkpoint {self.directory}/{bad} set aside as {aside.name} ({why}); "
                          f"resuming from {unit} {step}", file=sys.stderr)
            if failed:
                self._manager.reload()
            return restored
        if not failed:
            return None
        step, why = failed[0]
        raise CheckpointError(f"{who}: no checkpoint in {self.directory} can be restored (newest, {unit} {step}: "
                              f"{why})")

    def _set_aside(self, step: int) -> Path:
        src = Path(self.directory) / str(step)
        dst, n = src.with_name(f"{step}.damaged"), 1
        while dst.exists():
            n += 1
            dst = src.with_name(f"{step}.damaged-{n}")
        os.replace(src, dst)
        return dst

    def close(self) -> None:
        """Release orbax's manager (no more saves)."""
        self._manager.close()


def open_run(directory: str | os.PathLike, template: Any, *, keep: int, resume: bool, who: str,
             unit: str) -> tuple[Checkpoints, tuple[Any, int, dict] | None]:
    """The checkpoints of a run in `directory`, and what to continue from.

    Checkpoints already there without `resume` are refused: a new run never overwrites
    another. With `resume`, the newest checkpoint that restores completely into `template`
    is returned; damaged newer ones are set aside (`Checkpoints.restore_newest`).

    **Arguments:**

    - `directory`: the checkpoint folder (created when missing; must be writable).
    - `template`: the tree the trainer saves, freshly initialised (structure, shapes, dtypes).
    - `keep`: how many newest checkpoints orbax keeps.
    - `resume`: continue from the newest checkpoint.
    - `who`, `unit`: the caller's name and what a step folder counts (`"epoch"`, `"step"`).

    **Returns:**

    `(checkpoints, restored)`: `restored` is `(tree, done, history)` when resuming from a
    checkpoint, else `None`.

    **Raises:**

    `ValueError` for checkpoints there without `resume`; `CheckpointError` for a folder that
    cannot be written or a resume where no checkpoint restores.
    """
    checkpoints = Checkpoints(directory, keep=keep)
    latest = checkpoints.latest()
    if latest is not None and not resume:
        checkpoints.close()
        raise ValueError(f"{who}: checkpoint_dir {str(directory)!r} already holds checkpoints (newest: {unit} "
                         f"{latest}); pass resume=True to continue that run, or a new folder")
    if latest is None:
        return checkpoints, None
    try:
        return checkpoints, checkpoints.restore_newest(template, who=who, unit=unit)
    except BaseException:
        checkpoints.close()
        raise


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _data_to_keys(tree: Any, template: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x, like: jax.random.wrap_key_data(x, impl=jax.random.key_impl(like)) if _is_key(like) else x,
        tree, template)


def save_tree(directory: str | os.PathLike, tree: Any) -> None:
    """Write `tree` (e.g. the trained `{"params", "state"}`) as one orbax checkpoint, atomically
    (a temporary folder beside it, renamed when complete).

    **Arguments:**

    - `directory`: the folder to create; it must not exist yet.
    - `tree`: a pytree of arrays; its leaves are stored in tree order.

    **Raises:**

    `CheckpointError` (one line) when it cannot be written; nothing half-written is left.
    """
    ocp = _orbax()
    path = os.path.abspath(os.fspath(directory))
    leaves = jax.tree_util.tree_leaves(tree)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(path, {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    except Exception as e:  # noqa: BLE001
        for p in Path(path).parent.glob(f"{Path(path).name}.orbax-checkpoint-tmp*"):
            shutil.rmtree(p, ignore_errors=True)
        raise CheckpointError(f"{path}: cannot be written ({reason(e)})") from None


def read_tree(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays `save_tree` wrote into `directory`, by stored name (`read_arrays`).

    **Raises:**

    `CheckpointError`, one line naming the folder, when it cannot be read completely.
    """
    path = os.path.abspath(os.fspath(directory))
    try:
        return read_arrays(path)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be read ({reason(e)})") from None


def load_tree(directory: str | os.PathLike, template: Any) -> Any:
    """Read what `save_tree` wrote, into the structure of `template`, every array's shape and
    dtype checked. A folder whose arrays are named by their path in the tree (orbax's
    `StandardCheckpointer` on a nested dict, e.g. `"0_dense.w"`) is read by those paths.

    **Raises:**

    `CheckpointError` when it cannot be read; `ValueError` (one line) when an array disagrees.
    """
    leaves, treedef = jax.tree_util.tree_flatten(template)
    stored = read_tree(directory)
    where = os.fspath(directory)
    if stored and all(k.isdigit() for k in stored):
        arrays = numbered(stored)
    else:
        paths = [".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
                 for path, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
        missing = [p for p in paths if p not in stored]
        if missing:
            raise ValueError(f"{where}: holds no array {missing[0]!r}; it was written for a different model")
        arrays = [stored[p] for p in paths]
    if len(arrays) != len(leaves):
        raise ValueError(f"{where}: holds {len(arrays)} arrays, the model has {len(leaves)}; "
                         f"it was written for a different model")
    check_arrays(where, arrays, leaves, "the model's params and state")
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in arrays])
