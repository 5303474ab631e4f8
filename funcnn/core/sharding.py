r"""Contractions over the batch axis in hand-written backwards.

A parameter gradient is a sum over the examples of the batch, e.g. Dense's
$dW = dY^\top X = \sum_n dy_n x_n^\top$. When the batch axis is sharded over a device mesh
(data parallelism over $D$ devices, shard $d$ holding the examples $n \in B_d$),

$$
dW = \sum_d \sum_{n \in B_d} dy_n x_n^\top,
$$

each device contracts its own shard and the $D$ partial sums are all-reduced: the result is
replicated. `batch_dot_general` is the one place every backward writes such a contraction,
so that this is stated once:

- no mesh, or a mesh whose axes are all `Auto` (GSPMD chooses): plain `lax.dot_general`;
- a mesh with `Explicit` axes (the default of `jax.make_mesh` in JAX 0.10), where
  contracting a sharded axis has no implied output sharding: the output keeps the
  operands' shardings on the axes that survive (none, for a parameter gradient:
  replicated, `P()`) and JAX inserts the all-reduce;
- a kernel gradient written as a convolution whose contracted feature axis is the batch
  (`batch_conv_general_dilated`): replicated under explicit axes, likewise;
- an embedding, a gather of the rows of a replicated table at batch-sharded ids
  (`batch_take`: the rows come out sharded as the ids are), and its gradient, a
  scatter-add of batch-sharded rows into a replicated table (`batch_scatter_add`: each
  device adds its own rows, the $D$ partial tables are all-reduced, `P()`);
- inside `shard_map` (manual axes) each device contracts its local shard; the caller
  all-reduces (`funcnn.training.distributed.shard_map_value_and_grad` does, with `lax.pmean`).
"""
from __future__ import annotations

from typing import Any

import jax
from jax import lax
from jax.sharding import AxisType, PartitionSpec


def _explicit_mesh() -> bool:
    mesh = jax.sharding.get_abstract_mesh()
    return not mesh.empty and AxisType.Explicit in mesh.axis_types


def _spec(a) -> tuple:
    """The `PartitionSpec` of `a` under explicit axes, one entry per axis."""
    spec = tuple(jax.typeof(a).sharding.spec)
    return spec + (None,) * (a.ndim - len(spec))


def _explicit_out_spec(lhs, rhs, dimension_numbers):
    """The output `PartitionSpec` of the contraction under explicit axes, or `None` when no
    explicit mesh is in context (then XLA/GSPMD decides, as without a mesh)."""
    if not _explicit_mesh():
        return None
    (lc, rc), (lb, rb) = dimension_numbers
    lspec, rspec = _spec(lhs), _spec(rhs)
    if not any(lspec[i] is not None for i in lc) and not any(rspec[i] is not None for i in rc):
        return None  # no sharded contracting axis: the default rule is unambiguous
    batch = [lspec[i] for i in lb]
    free_l = [lspec[i] for i in range(lhs.ndim) if i not in lc and i not in lb]
    free_r = [rspec[i] for i in range(rhs.ndim) if i not in rc and i not in rb]
    return PartitionSpec(*batch, *free_l, *free_r)


def batch_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, **kwargs: Any) -> jax.Array:
    """`lax.dot_general` whose contracting dimensions include the batch axis; under an
    explicit mesh its output sharding is stated (module docstring).

    Arguments and the result's shape are `lax.dot_general`'s: batch dimensions, then
    `lhs`'s free dimensions, then `rhs`'s.
    """
    if "out_sharding" not in kwargs:
        spec = _explicit_out_spec(lhs, rhs, dimension_numbers)
        if spec is not None:
            kwargs["out_sharding"] = spec
    return lax.dot_general(lhs, rhs, dimension_numbers, **kwargs)


def batch_outer(dy: jax.Array, x: jax.Array) -> jax.Array:
    r"""$dy^\top x$ summed over every leading axis: `(..., S)`, `(..., R)` -> `(S, R)`."""
    axes = tuple(range(dy.ndim - 1))
    return batch_dot_general(dy, x, ((axes, axes), ((), ())))


def batch_conv_general_dilated(lhs: jax.Array, rhs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
    """`lax.conv_general_dilated` contracting the batch axis (a kernel gradient): its output,
    the kernel gradient, is replicated under explicit axes. Arguments and shapes are
    `lax.conv_general_dilated`'s."""
    if "out_sharding" not in kwargs and _explicit_mesh():
        kwargs["out_sharding"] = PartitionSpec()
    return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


def batch_take(table: jax.Array, ids: jax.Array) -> jax.Array:
    """`table[ids]` along axis 0 (`jnp.take`'s semantics: negative ids wrap, ids past the end
    give NaN rows): `(V, F)`, `(...)` -> `(..., F)`. Under explicit axes the rows are sharded
    as `ids` is (a batch-sharded gather from a replicated table needs no communication)."""
    out_sharding = PartitionSpec(*_spec(ids), None) if _explicit_mesh() else None
    return table.at[ids].get(mode="fill", out_sharding=out_sharding)


def batch_scatter_add(target: jax.Array, ids: jax.Array, updates: jax.Array) -> jax.Array:
    """`target` with `updates[n]` added to row `ids[n]` for every n (repeated ids add up):
    `(V, F)`, `(N,)`, `(N, F)` -> `(V, F)`; a sum over the batch, so under explicit axes the
    result is replicated, `P()` (the all-reduce of the per-device partial tables)."""
    out_sharding = PartitionSpec() if _explicit_mesh() else None
    return target.at[ids].add(updates, out_sharding=out_sharding)
