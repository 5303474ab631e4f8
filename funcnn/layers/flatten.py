r"""Flatten: `(N, d_1, ..., d_k) -> (N, d_1 \cdots d_k)`, row-major.

**Forward.** $y_{n, j} = x_{n, i_1, \dots, i_k}$ with $j$ the row-major index of
$(i_1, \dots, i_k)$: a reshape, no arithmetic. The cache is $x$'s shape (static).

**Backward.** A reshape moves values without changing them: each $y_{n,j}$ is exactly one
entry of $x$, with derivative 1, so $\partial L / \partial x$ is $dy$ `(N, D)` reshaped back
to `(N, d_1, ..., d_k)`. `dtype` (None: the input's) casts x, as every layer's does.
"""
from __future__ import annotations

import math
from typing import Any

import jax

from funcnn.core.dtypes import float_dtype, with_compute_dtype
from funcnn.core.layer import Layer, Shape
from funcnn.core.validate import example_shape


def flatten_forward(x: jax.Array) -> tuple[jax.Array, Shape]:
    """Every axis but the batch axis merged: `(N, d_1, ..., d_k) -> (N, d_1 ... d_k)`.

    **Returns:**

    `(y, cache)`: `y` of shape `(N, D)`; `cache` is `x`'s shape.
    """
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dy: jax.Array, cache: Shape) -> jax.Array:
    """`dy` `(N, D)` reshaped back to the input's shape `cache`. **Returns:** `dx`."""
    return dy.reshape(cache)


def Flatten(*, dtype: Any = None) -> Layer:
    """`(N, d_1, ..., d_k) -> (N, d_1 ... d_k)`.

    **Arguments:**

    - `dtype`: the computation's dtype (None: the input's).

    **Returns:**

    The `Layer`. Its forward raises `ValueError` for an input without a batch axis.
    """
    dtype = float_dtype(dtype, "dtype", "Flatten", allow_none=True)

    def init(key, input_shape):
        return {}, {}

    def output_shape(input_shape):
        return (math.prod(example_shape(input_shape, "Flatten")),)

    def forward(params, state, x, *, key=None, train=False):
        if x.ndim < 1:
            raise ValueError(f"Flatten: x must have a batch axis, got shape {x.shape}")
        y, cache = flatten_forward(x)
        return y, state, cache

    def backward(params, cache, dy):
        return {}, flatten_backward(dy, cache)

    return with_compute_dtype(Layer("flatten", init, forward, backward, output_shape), dtype)
