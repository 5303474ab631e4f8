"""Data parallelism on ``jax.sharding`` meshes, ``shard_map`` and ``jax.distributed``.

A batch of N examples is split over the D devices of a mesh axis ``"data"`` (shard d
holds the N/D examples B_d); every device holds the same parameters. For a loss that
is a mean over the batch,

    L = (1/N) sum_n l_n = (1/D) sum_d L_d,    L_d = (D/N) sum_{n in B_d} l_n,
    dL/dtheta = (1/D) sum_d dL_d/dtheta   (the mean over devices of per-shard gradients),

so each device runs the hand-written forward and backward on its own shard and the
gradients are averaged across devices: an all-reduce, after which every device applies
the same optimizer update to the same parameters. BatchNorm needs the statistics of
the global batch, mu = (1/D) sum_d mu_d and var = (1/D) sum_d var_d (with var_d taken
about the global mu), and its backward needs the global sums of dy and dy*xhat.

Two ways to write it:

* **mesh (GSPMD)**: the ordinary program, with the batch sharded ``P("data")`` and the
  parameters replicated ``P()``; XLA partitions it. Every contraction over the batch in
  a backward goes through ``funcnn.core.sharding.batch_dot_general``, which states that its
  output is replicated: that is where the all-reduce happens. Batch statistics
  (``jnp.mean`` over a sharded axis) are global automatically. ``fit(..., mesh=mesh)`` and
  ``train_lm(..., mesh=mesh)`` train this way (the sharded epoch of
  ``funcnn.training.epoch.make_epoch`` and its ``Placement``).
* **shard_map**: ``shard_map_value_and_grad`` writes the per-device program: local
  forward and hand-written backward on the shard, then ``lax.pmean`` of the loss and
  the gradients. BatchNorm must be built with ``BatchNorm(axis_name="data")`` for it
  to use global statistics (``lax.pmean`` of its means and sums); without it each shard
  normalises with its own statistics, a different model.

Multi-host (``initialize``): every process runs the same program; each one computes the
same shuffle from the same key and puts only its own rows of each batch on its devices
(``jax.make_array_from_process_local_data``); the parameters stay replicated on every
device of every process, so all processes end with the same parameters.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from funcnn.core.layer import Layer
from funcnn.gradients import value_and_grad
from funcnn.losses import Loss
from funcnn.regularization import Penalty

DATA = "data"


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join a multi-process JAX program (``jax.distributed.initialize``); call it first.

    Arguments left ``None`` come from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID`` when set, else from JAX's cluster detection (Slurm, Open MPI,
    TPU). On CPU the cross-process collectives are gloo's. Raises ``ValueError`` for an
    inconsistent triple.
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if num_processes is not None and (num_processes < 1 or isinstance(num_processes, bool)):
        raise ValueError(f"initialize: num_processes must be a positive integer, got {num_processes!r}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"initialize: process_id must be in [0, {num_processes}), got {process_id!r}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def setup(devices: int | None = None, coordinator: str | None = None, num_processes: int | None = None,
          process_id: int | None = None) -> jax.sharding.Mesh | None:
    """Devices and processes for a data-parallel run, before JAX starts its backend: the
    mesh ``("data",)`` over ``devices`` local devices of every process (all by default),
    or ``None`` when neither ``devices`` nor ``coordinator`` is given.

    On CPU ``devices`` sets the number of CPU devices (``jax_num_cpu_devices``; JAX reads
    it once, when the backend starts); on GPU it takes the first ``devices`` GPUs of each
    process. ``coordinator``/``num_processes``/``process_id`` go to ``initialize``.
    Raises ``ValueError`` when fewer devices are available than asked for.
    """
    if devices is None and coordinator is None:
        return None
    if devices is not None:
        try:
            jax.config.update("jax_num_cpu_devices", devices)
        except RuntimeError:  # the backend has started already: use the devices it has
            pass
    if coordinator is not None:
        initialize(coordinator, num_processes, process_id)
    local = jax.local_devices()
    n = len(local) if devices is None else devices
    if n > len(local):
        raise ValueError(f"setup: expected at most the {len(local)} local {local[0].platform} devices "
                         f"(on CPU, set before JAX starts), got {devices}")
    chosen = [d for p in range(jax.process_count())
              for d in [d for d in jax.devices() if d.process_index == p][:n]]
    return jax.make_mesh((len(chosen),), (DATA,), axis_types=(AxisType.Explicit,), devices=chosen)


def data_mesh(num_devices: int | None = None, *, axis_type: str = "Explicit") -> jax.sharding.Mesh:
    """A 1-D mesh ``("data",)`` over the first ``num_devices`` devices (all by default,
    of every process). ``axis_type``: ``"Explicit"`` (JAX's default) or ``"Auto"``."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(devices):
        raise ValueError(f"data_mesh: num_devices must be an integer in [1, {len(devices)}], got {num_devices!r}")
    if axis_type not in ("Explicit", "Auto"):
        raise ValueError(f"data_mesh: axis_type must be 'Explicit' or 'Auto', got {axis_type!r}")
    return jax.make_mesh((n,), (DATA,), axis_types=(getattr(AxisType, axis_type),), devices=devices[:n])


def data_shards(mesh: jax.sharding.Mesh, batch_size: int, where: str = "fit") -> int:
    """The number D of data shards of ``mesh``; ``ValueError`` unless it has a ``"data"``
    axis and D divides ``batch_size``."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"{where}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if DATA not in mesh.shape:
        raise ValueError(f"{where}: mesh must have a 'data' axis, got axes {tuple(mesh.axis_names)}")
    d = mesh.shape[DATA]
    if batch_size % d:
        raise ValueError(f"{where}: batch_size must be divisible by the {d} data shards of the mesh, "
                         f"got {batch_size}")
    return d


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Every leaf of ``tree`` (identical in every process) replicated on every device of
    ``mesh`` (sharding ``P()``): a tree of global arrays of the leaves' shapes."""
    sharding = NamedSharding(mesh, P())

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(put, tree)


def to_local(tree: Any) -> Any:
    """A replicated global tree as ordinary single-device arrays of this process (same shapes)."""
    return jax.tree_util.tree_map(lambda a: a.addressable_data(0), tree)


def _local_rows(sharding, shape):
    """The rows [lo, hi) of a batch of ``shape`` that live on this process's devices."""
    rows = [idx[0] for idx in sharding.addressable_devices_indices_map(shape).values()]
    lo, hi = min(r.start or 0 for r in rows), max(shape[0] if r.stop is None else r.stop for r in rows)
    return lo, hi


def shard_batch(batch: Any, mesh: jax.sharding.Mesh, local_rows: tuple[int, int] | None = None) -> Any:
    """Put a batch (host arrays `(B, ...)`, the whole global batch in every process) on
    ``mesh``, sharded over ``"data"`` (``P("data")``): each process transfers only its own
    rows (``local_rows`` ``(lo, hi)``, found from the sharding by default). Returns global
    arrays of the same shapes."""
    sharding = NamedSharding(mesh, P(DATA))

    def put(a):
        a = np.asarray(a)
        lo, hi = local_rows or _local_rows(sharding, a.shape)
        return jax.make_array_from_process_local_data(sharding, a[lo:hi], a.shape)

    return jax.tree_util.tree_map(put, batch)


def shard_map_value_and_grad(model: Layer, loss: Loss, mesh: jax.sharding.Mesh, *, mode: str = "manual",
                             l2: float = 0.0, penalty: Penalty | None = None) -> Callable:
    """Data parallelism written out per device: ``f(params, state, x, y, *, key=None,
    train=True) -> (loss, grads, state)``, the same contract as
    ``funcnn.gradients.value_and_grad`` and the same numbers as it gives under the mesh.

    Each device runs the forward and the hand-written backward (``mode="manual"``) or
    autodiff on its shard of x and y (split over ``"data"``), then

        L = pmean_d L_d,   g = pmean_d g_d,   state = pmean_d state_d,

    (module docstring). Every device uses the same ``key``: a layer that draws random
    numbers (Dropout, BayesDense) draws them per shard, so its masks differ from the
    masks of the unsplit batch. BatchNorm needs ``axis_name="data"`` for global statistics.
    """
    vg = value_and_grad(model, loss, mode=mode, l2=l2, penalty=penalty)

    def f(params, state, x, y, *, key=None, train=True):
        data_shards(mesh, x.shape[0], "shard_map_value_and_grad")

        def per_device(params, state, xs, ys, key):
            value, grads, new_state = vg(params, state, xs, ys, key=key, train=train)
            return jax.lax.pmean((value, grads, new_state), DATA)

        return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(DATA), P(DATA), P()),
                             out_specs=P(), check_vma=False)(params, state, x, y, key)

    return f
