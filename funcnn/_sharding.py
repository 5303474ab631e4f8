"""Contractions over the batch axis in hand-written backwards.

A parameter gradient is a sum over the examples of the batch, e.g. Dense's
dW = dY^T X = sum_n dy_n x_n^T. When the batch axis is sharded over a device mesh
(data parallelism), that sum is a contraction over a sharded axis: each device
contracts its own shard and the partial sums are all-reduced. ``batch_dot_general``
is the one place every backward writes such a contraction, so that the output's
sharding (replicated: the all-reduce of data parallelism) is stated once.

Without a mesh it is ``lax.dot_general``.
"""
from __future__ import annotations

from jax import lax


def batch_dot_general(lhs, rhs, dimension_numbers, **kwargs):
    """``lax.dot_general`` whose contracting dimensions include the batch axis."""
    return lax.dot_general(lhs, rhs, dimension_numbers, **kwargs)


def batch_outer(dy, x):
    """``dy^T x`` summed over every leading axis: (..., S), (..., R) -> (S, R)."""
    axes = tuple(range(dy.ndim - 1))
    return batch_dot_general(dy, x, ((axes, axes), ((), ())))
