r"""Inverted dropout; `rate` is the fraction of units dropped.

**Forward (training).** For $x$ of any shape, e.g. `(N, F)`, draw a Bernoulli mask $m$ of
the same shape with $P(m = 1) = 1 - \text{rate}$ (from the `key` argument only) and scale
the kept units so that the expectation is unchanged:

$$
y = x \odot s, \qquad s = \frac{m}{1 - \text{rate}}, \qquad
\mathbb{E}[y] = x \cdot \frac{P(m = 1)}{1 - \text{rate}} = x .
$$

The cache is $s$ (the input's shape: 0 where dropped, $1 / (1 - \text{rate})$ where kept).

**Backward.** For a fixed mask $y$ is linear in $x$, elementwise, with
$\partial y_k / \partial x_k = s_k$:

$$
\frac{\partial L}{\partial x} = \frac{\partial L}{\partial y} \odot s \qquad \text{(the input's shape)}:
$$

the same mask, the same scale. A fixed key gives a fixed, differentiable function.

**Eval mode** (and `rate == 0`) is the identity, $dx = dy$; its cache is `None`.
`dtype`: the computation's (None: the input's).
"""
from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from funcnn.core.dtypes import float_dtype, with_compute_dtype
from funcnn.core.layer import Layer


def dropout_forward(x: jax.Array, key: jax.Array, rate: float) -> tuple[jax.Array, jax.Array]:
    r"""Training-mode dropout: $y = x \odot m / (1 - \text{rate})$.

    **Arguments:**

    - `x`: input, any shape, e.g. `(N, F)`.
    - `key`: the PRNG key the mask is drawn from.
    - `rate`: the fraction dropped, in [0, 1).

    **Returns:**

    `(y, cache)`: `y` of `x`'s shape; `cache` the scale $s = m / (1 - \text{rate})$, `x`'s
    shape and dtype.
    """
    keep = 1.0 - rate
    scale = jax.random.bernoulli(key, keep, x.shape).astype(x.dtype) / keep
    return x * scale, scale


def dropout_backward(dy: jax.Array, cache: jax.Array | None) -> jax.Array:
    r"""$dx = dy \odot s$, or $dy$ when the forward was the identity (`cache` `None`).

    **Arguments:**

    - `dy`: the output's gradient, the input's shape.
    - `cache`: the forward's scale, or `None`.

    **Returns:**

    `dx` of `dy`'s shape.
    """
    return dy if cache is None else dy * cache


def Dropout(rate: float, *, dtype: Any = None) -> Layer:
    """Drop each unit with probability `rate` in training mode; any input shape.

    **Arguments:**

    - `rate`: the fraction of units dropped, in [0, 1).
    - `dtype`: the computation's dtype (None: the input's).

    **Returns:**

    The `Layer`. Raises `ValueError` for a rate outside [0, 1) and, in training mode, when
    no `key` is given; `TypeError` for a non-floating-point x.
    """
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Dropout: rate must be a number in [0, 1) (the fraction dropped), got {rate!r}")
    dtype = float_dtype(dtype, "dtype", "Dropout", allow_none=True)

    def init(key, input_shape):
        return {}, {}

    def forward(params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"Dropout: x must be a floating-point array, got dtype {jnp.result_type(x)}")
        if isinstance(train, jax.core.Tracer):
            raise TypeError("Dropout: train must be a Python bool, got a traced value; "
                            "mark it static under jit (static_argnames='train')")
        if not train or rate == 0.0:
            return x, state, None
        if key is None:
            raise ValueError(
                "Dropout: a PRNG key is required in training mode; pass key=jax.random.key(...) "
                "or call with train=False"
            )
        y, cache = dropout_forward(x, key, rate)
        return y, state, cache

    def backward(params, cache, dy):
        return {}, dropout_backward(dy, cache)

    return with_compute_dtype(Layer("dropout", init, forward, backward, tuple), dtype)
