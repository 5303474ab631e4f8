"""Checkpoints of a training run with orbax-checkpoint: atomic step folders, the last ``keep`` kept.

A checkpoint of epoch k (k full epochs done) is one orbax step folder ``DIR/k/`` holding two
items, written to a temporary folder and renamed when complete (orbax's atomicity), so a
run killed mid-save leaves the previous checkpoint intact and no half-written one is read:

* ``arrays``: the leaves of ``(params, state, opt_state, key_data)`` in tree order, keyed by
  their position. The tree structure is not stored: it is rebuilt from a template (a fresh
  ``model.init`` and ``optimizer.init``), so the user's tree comes back unchanged, optax
  NamedTuples and empty dicts included. A typed PRNG key is stored as
  ``jax.random.key_data(key)`` (uint32) and re-wrapped on restore.
* ``meta``: JSON: the epoch and the history so far (non-finite values as ``null``).

No pickle anywhere: arrays are tensorstore/zarr, metadata JSON.
"""
from __future__ import annotations

import math
import os

import jax
import numpy as np


def _orbax():
    import orbax.checkpoint as ocp

    return ocp


def json_safe(value):
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _history_from_json(history):
    return {k: [float("nan") if v is None else v for v in vs] for k, vs in history.items()}


class Checkpoints:
    """The checkpoints of one run in ``directory``: ``save(epoch, tree, history)``,
    ``latest()`` (newest complete epoch or ``None``), ``restore(epoch, template)``."""

    def __init__(self, directory, *, keep: int = 2):
        ocp = _orbax()
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("arrays", "meta"))

    def latest(self):
        return self._manager.latest_step()

    def save(self, epoch: int, tree, history: dict) -> None:
        ocp = _orbax()
        leaves = jax.tree_util.tree_leaves(_keys_to_data(tree))
        arrays = {f"{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
        meta = {"epoch": int(epoch), "history": json_safe(history)}
        self._manager.save(int(epoch), args=ocp.args.Composite(
            arrays=ocp.args.PyTreeSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()

    def restore(self, epoch: int, template):
        """``(tree, epoch, history)``: ``tree`` has the structure and dtypes of ``template``."""
        ocp = _orbax()
        data_template = _keys_to_data(template)
        leaves, treedef = jax.tree_util.tree_flatten(data_template)
        restored = self._manager.restore(int(epoch), args=ocp.args.Composite(
            arrays=ocp.args.PyTreeRestore(), meta=ocp.args.JsonRestore()))
        arrays = restored["arrays"]
        if len(arrays) != len(leaves):
            raise ValueError(f"checkpoint {self.directory}/{epoch}: holds {len(arrays)} arrays, the model and "
                             f"optimizer have {len(leaves)}; it was written by a different run")
        out = []
        for i, like in enumerate(leaves):
            a = np.asarray(arrays[f"{i:05d}"])
            if a.shape != np.shape(like) or a.dtype != np.asarray(like).dtype:
                raise ValueError(f"checkpoint {self.directory}/{epoch}: array {i} is {a.dtype}{list(a.shape)}, "
                                 f"the run expects {np.asarray(like).dtype}{list(np.shape(like))}; "
                                 f"it was written by a different run")
            out.append(jax.numpy.asarray(a))
        tree = _data_to_keys(jax.tree_util.tree_unflatten(treedef, out), template)
        meta = restored["meta"]
        return tree, int(meta["epoch"]), _history_from_json(meta["history"])

    def close(self) -> None:
        self._manager.close()


def open_run(directory, template, *, keep: int, resume: bool, who: str, unit: str):
    """``(checkpoints, restored)`` for a run checkpointed in ``directory``: ``restored`` is
    ``(tree, done, history)`` of the newest checkpoint (into ``template``) when resuming, else
    ``None``. Checkpoints already there without ``resume`` are refused: a new run never
    overwrites another. ``who``/``unit`` name the caller and what a step folder counts."""
    checkpoints = Checkpoints(directory, keep=keep)
    latest = checkpoints.latest()
    if latest is not None and not resume:
        checkpoints.close()
        raise ValueError(f"{who}: checkpoint_dir {str(directory)!r} already holds checkpoints (newest: {unit} "
                         f"{latest}); pass resume=True to continue that run, or a new folder")
    return checkpoints, None if latest is None else checkpoints.restore(latest, template)


def _is_key(x):
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree):
    return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _data_to_keys(tree, template):
    return jax.tree_util.tree_map(
        lambda x, like: jax.random.wrap_key_data(x, impl=jax.random.key_impl(like)) if _is_key(like) else x,
        tree, template)


def save_tree(directory, tree) -> None:
    """Write ``tree`` (e.g. the trained ``{"params", "state"}``) as one orbax checkpoint."""
    ocp = _orbax()
    leaves = jax.tree_util.tree_leaves(tree)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(os.fspath(directory)), {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})


def load_tree(directory, template):
    """Read what ``save_tree`` wrote, into the structure of ``template``."""
    ocp = _orbax()
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with ocp.StandardCheckpointer() as ckptr:
        arrays = ckptr.restore(os.path.abspath(os.fspath(directory)))
    if len(arrays) != len(leaves):
        raise ValueError(f"load: {directory} holds {len(arrays)} arrays, the model has {len(leaves)}")
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(arrays[f"{i:05d}"]) for i in range(len(leaves))])
