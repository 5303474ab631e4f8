"""Inverted dropout; ``rate`` is the fraction of units dropped.

Training mode draws a Bernoulli mask m with P(m = 1) = 1 - rate and computes

    y = x * m / (1 - rate),      so that E[y] = x,

and the backward applies the same mask: dx = dy * m / (1 - rate). Eval mode (and
``rate == 0``) is the identity. The mask comes from the ``key`` argument only, so a
fixed key gives a fixed, differentiable function. ``dtype``: the computation's (None: the
input's).
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from funcnn.core.dtypes import float_dtype, with_compute_dtype
from funcnn.core.layer import Layer


def Dropout(rate: float, *, dtype=None) -> Layer:
    """Drop each unit with probability ``rate`` in training mode.

    Raises ``ValueError`` for a rate outside [0, 1) and, in training mode, when no
    ``key`` is given; ``TypeError`` for a non-floating-point x.
    """
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Dropout: rate must be a number in [0, 1) (the fraction dropped), got {rate!r}")
    keep = 1.0 - rate
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
        scale = jax.random.bernoulli(key, keep, x.shape).astype(x.dtype) / keep
        return x * scale, state, scale

    def backward(params, scale, dy):
        return {}, dy if scale is None else dy * scale

    return with_compute_dtype(Layer("dropout", init, forward, backward, tuple), dtype)
