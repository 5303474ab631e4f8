r"""One pass over the training set: one shuffle schedule, three ways to run its steps.

**The schedule** (``shuffle``). An epoch of $n$ examples in batches of $B$ draws, from its
own key, a permutation $\pi$ of $0..n-1$ and one key per step:

$$
K = \lfloor n / B \rfloor \text{ steps}, \qquad
\text{batch}_k = \bigl(\pi_{kB}, \dots, \pi_{kB + B - 1}\bigr), \quad k = 0..K-1,
$$

so the last $n - K B$ examples of the permutation are dropped (a different remainder each
epoch). The schedule depends on the key, $n$ and $B$ only: every way of running the epoch
below trains on the same batches with the same step keys, so they train to the same
parameters (up to the rounding of the order of work).

**Three ways to run it** (``make_epoch``), each with the step of ``funcnn.training.step``:

* scanned (``scan=True``): the whole epoch is one jit-compiled ``lax.scan`` over the steps;
* stepped (``scan=False``): the jit-compiled step is called once per batch from Python;
* sharded (``mesh=``): stepped, with every batch sharded over the mesh's ``"data"`` axis and
  the carry replicated (``funcnn.training.distributed``), one compiled step per batch.

Why stepping at all: XLA:CPU compiles a convolution inside a loop body to a generic path
that is ~7x slower than the same convolution at the top level of a program (an mnist5k CNN
epoch: 11.3 s scanned vs 1.6 s stepped, measured on one machine). Which is faster is
measured, not guessed (``scan_is_slow``, through ``funcnn.core.autotune``).

A stepped or sharded epoch checks for SIGINT/SIGTERM (``funcnn.training.interrupt``) before
every step: a signal stops it with ``Interrupted`` and the epoch is dropped.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn.core import autotune
from funcnn.core.layer import Layer
from funcnn.losses import Loss
from funcnn.regularization import Penalty
from funcnn.training import distributed, interrupt
from funcnn.training.step import Carry, PyTree, Step, make_step

Epoch = Callable[..., tuple]
"""``epoch(params, state, opt_state, x, y, key) -> (params, state, opt_state, mean_loss, flags)``."""


def shuffle(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The schedule of one epoch: which examples each step trains on, and each step's key.

    **Arguments:**

    - `key`: the epoch's PRNG key.
    - `n`: the number of training examples (static under ``jit``).
    - `batch_size`: `B` (static under ``jit``).

    **Returns:**

    `(idx, keys)`: `idx` int of shape `(n // B, B)`, row `k` the examples of step `k` (a
    permutation of `0..n-1` cut into full batches); `keys` `(n // B,)` PRNG keys, one per step.
    """
    n_batches = n // batch_size
    k_perm, k_steps = jax.random.split(key)
    idx = jax.random.permutation(k_perm, n)[: n_batches * batch_size]
    return idx.reshape(n_batches, batch_size), jax.random.split(k_steps, n_batches)


_shuffle = jax.jit(shuffle, static_argnums=(1, 2))


class Placement:
    """Where a stepped trainer puts its arrays: nowhere special without a mesh; with one, the
    carry replicated, each batch sharded over ``"data"`` (this process's rows only), and back
    to this process's single-device copies for evaluation and checkpoints.

    **Arguments:**

    - `mesh`: a ``jax.sharding.Mesh`` with a ``"data"`` axis, or ``None``.
    - `batch_size`: the global batch size `B`, divisible by the number of data shards.
    - `who`: the caller's name, for the error message of a bad mesh or batch size.
    """

    def __init__(self, mesh: jax.sharding.Mesh | None, batch_size: int, who: str = "fit"):
        if mesh is not None:
            distributed.data_shards(mesh, batch_size, who)
        self.mesh = mesh

    def replicate(self, tree: PyTree) -> PyTree:
        """``tree`` (identical in every process) on every device of the mesh."""
        return tree if self.mesh is None else distributed.replicate(tree, self.mesh)

    def shard(self, batch: PyTree) -> PyTree:
        """A global batch (leaves `(B, ...)`, host arrays) sharded over ``"data"``."""
        return batch if self.mesh is None else distributed.shard_batch(batch, self.mesh)

    def local(self, tree: PyTree) -> PyTree:
        """A replicated tree as this process's single-device arrays."""
        return tree if self.mesh is None else distributed.to_local(tree)

    def context(self) -> contextlib.AbstractContextManager:
        """``jax.set_mesh(mesh)``, or a no-op without a mesh."""
        return contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh)


def _run_steps(one_step: Callable[[Carry, int], tuple[Carry, tuple[jax.Array, jax.Array]]], carry: Carry,
               n_steps: int) -> tuple[Carry, list, list]:
    """``one_step(carry, k)`` for ``k = 0..n_steps-1`` from Python, a signal checked before each."""
    losses, flags = [], []
    for k in range(n_steps):
        interrupt.check()  # a signal stops between steps; the epoch is dropped
        carry, (value, bad) = one_step(carry, k)
        losses.append(value)
        flags.append(bad)
    return carry, losses, flags


def _scanned(step: Step, batch_size: int) -> Epoch:
    @jax.jit
    def epoch(params, state, opt_state, x, y, key):
        idx, keys = shuffle(key, x.shape[0], batch_size)
        carry, (losses, flags) = jax.lax.scan(step, (params, state, opt_state), (x[idx], y[idx], keys))
        return (*carry, losses.mean(), flags)

    return epoch


def _stepped(step: Step, batch_size: int) -> Epoch:
    @jax.jit
    def indexed_step(carry, x, y, idx, keys, k):
        return step(carry, (x[idx[k]], y[idx[k]], keys[k]))

    def epoch(params, state, opt_state, x, y, key):
        idx, keys = _shuffle(key, x.shape[0], batch_size)
        carry, losses, flags = _run_steps(lambda c, k: indexed_step(c, x, y, idx, keys, k),
                                          (params, state, opt_state), idx.shape[0])
        return (*carry, jnp.mean(jnp.stack(losses)), jnp.stack(flags))

    return epoch


def _sharded(step: Step, batch_size: int, mesh: jax.sharding.Mesh) -> Epoch:
    place = Placement(mesh, batch_size)

    @jax.jit
    def mesh_step(carry, xb, yb, key_data):
        return step(carry, (xb, yb, jax.random.wrap_key_data(key_data)))

    def epoch(params, state, opt_state, x, y, key):
        x, y = np.asarray(x), np.asarray(y)
        idx, keys = _shuffle(key, x.shape[0], batch_size)
        idx = np.asarray(idx)
        with place.context():
            carry = place.replicate((params, state, opt_state))
            keys = place.replicate(jax.random.key_data(keys))
            carry, losses, flags = _run_steps(
                lambda c, k: mesh_step(c, *place.shard((x[idx[k]], y[idx[k]])), keys[k]), carry, idx.shape[0])
            mean = float(np.mean([np.asarray(v) for v in place.local(losses)]))
            flags = np.stack([np.asarray(f) for f in place.local(flags)])
        return (*place.local(tuple(carry)), mean, flags)

    return epoch


def make_epoch(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, *, batch_size: int,
               grad: str = "manual", l2: float = 0.0, penalty: Penalty | None = None, scan: bool = True,
               mesh: jax.sharding.Mesh | None = None) -> Epoch:
    """One epoch of training: every full batch of a shuffled pass, through ``make_step``.

    **Arguments:**

    - `model`, `loss`, `optimizer`, `grad`, `l2`, `penalty`: the step's (``make_step``).
    - `batch_size`: `B`; the epoch runs `n // B` steps.
    - `scan`: one jit-compiled ``lax.scan`` (``True``) or the compiled step per batch
      (``False``); ignored with a mesh (always stepped).
    - `mesh`: a ``jax.sharding.Mesh`` with a ``"data"`` axis: the sharded epoch (module
      docstring); `B` must divide by its number of data shards.

    **Returns:**

    `epoch(params, state, opt_state, x, y, key) -> (params, state, opt_state, mean_loss, flags)`:
    `x` `(n, ...)`, `y` `(n, ...)`, `key` the epoch's PRNG key; `mean_loss` the mean of the
    steps' losses; `flags` bool `(n // B, len(guard_names(params)))`, which watched value of
    which step was non-finite (``funcnn.training.step``). With a mesh, inputs and outputs are
    this process's ordinary arrays.
    """
    step = make_step(model, loss, optimizer, grad=grad, l2=l2, penalty=penalty)
    if mesh is not None:
        return _sharded(step, batch_size, mesh)
    return _scanned(step, batch_size) if scan else _stepped(step, batch_size)


def scan_is_slow(model: Layer, loss: Loss, params: PyTree, state: PyTree, x: Any, y: Any, *, batch_size: int,
                 grad: str = "manual", optimizer: optax.GradientTransformation | None = None,
                 steps: int = 4) -> bool:
    """Whether an epoch should run as the compiled step per batch rather than one ``lax.scan``.

    Measured, not guessed (``funcnn.core.autotune``, op ``"fit"``: force with
    ``FUNCNN_IMPL=fit:scan`` or ``fit:step``): ``steps`` training steps on rows of ``x`` and
    ``y`` are compiled and timed both ways, once per step program (keyed by its jaxpr) and
    process. A step of fewer than ``autotune.MIN_WORK`` FLOPs, or ``FUNCNN_AUTOTUNE=0``, scans.

    **Arguments:**

    - `model`, `loss`, `grad`: the step's; `optimizer` defaults to ``optax.sgd(1e-3)``.
    - `params`, `state`: the model's, as from ``model.init``.
    - `x`, `y`: training inputs `(n, ...)` and targets `(n, ...)` (rows are reused when
      `n < steps * batch_size`).
    - `batch_size`: `B`; `steps`: how many steps each way is timed over.

    **Returns:**

    ``True`` when the stepped epoch is the faster.
    """
    optimizer = optimizer or optax.sgd(1e-3)
    step = make_step(model, loss, optimizer, grad=grad)
    idx = np.arange(steps * batch_size) % len(x)

    def inputs():  # the timed runs' (carry, batches): built only when the choice is measured
        xs, ys = (jnp.asarray(np.asarray(a)[idx]).reshape(steps, batch_size, *np.shape(a)[1:]) for a in (x, y))
        return (params, state, optimizer.init(params)), (xs, ys, jax.random.split(jax.random.key(0), steps))

    carry, batches = jax.eval_shape(inputs)  # shapes only: nothing runs or compiles here
    batch0 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), batches)
    jaxpr = str(jax.make_jaxpr(step)(carry, batch0))
    key = (jax.default_backend(), hashlib.sha256(jaxpr.encode()).hexdigest()[:16])

    scanned = jax.jit(lambda c, b: jax.lax.scan(step, c, b)[1])
    stepped = jax.jit(step)

    def work():  # lowers the step: only when the choice is measured
        cost = stepped.lower(carry, batch0).cost_analysis() or {}
        return steps * float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))

    def run_stepped(c, b):
        values = []
        for i in range(steps):
            c, v = stepped(c, jax.tree_util.tree_map(lambda a: a[i], b))
            values.append(v)
        return values

    choice = autotune.choose("fit", key, {"scan": scanned, "step": run_stepped}, inputs,
                             fallback="scan", work=work, jit=False)
    return choice == "step"
