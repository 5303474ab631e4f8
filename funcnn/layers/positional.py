"""Learned positional embedding: a trainable vector per position, added to the input.

For x of shape (B, T, F) and a table P of shape (L, F) with T <= L (the max length),

    y[b, t] = x[b, t] + P[t].

Backward, given dy: dx = dy, and the first T rows of dP are the sums over the batch,

    dP[t] = sum_b dy[b, t]   (t < T),   dP[t] = 0   (T <= t < L).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.validate import positive_int
from funcnn.core.layer import Layer


def gpt2_normal(key, shape, fan_in=None, fan_out=None, dtype=jnp.float32):
    """N(0, 0.02^2) entries: GPT-2's initialisation of its position table."""
    return 0.02 * jax.random.normal(key, shape, dtype)


def PositionalEmbedding(max_len: int, features: int, *, w_init=gpt2_normal, param_dtype=jnp.float32,
                        dtype=None) -> Layer:
    """``y = x + w[:T]`` for x of shape (batch, T, features), T <= ``max_len``.

    Params ``{"w": (max_len, features)}`` (N(0, 0.02^2) by default) in ``param_dtype``;
    ``dtype`` is the compute dtype (None: the input's).

    Raises ``ValueError`` for an input that is not (batch, T, features) with T <= max_len.
    """
    positive_int(max_len, "max_len", "PositionalEmbedding")
    positive_int(features, "features", "PositionalEmbedding")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "PositionalEmbedding")
    w_init = initializers.get(w_init, "w_init")

    def check_shape(shape):
        shape = tuple(shape)
        if len(shape) != 2 or shape[0] > max_len or shape[1] != features:
            raise ValueError(f"PositionalEmbedding: input must be (time <= {max_len}, {features}) per example, "
                             f"got {shape}")
        return shape

    def init(key, input_shape):
        check_shape(input_shape)
        return {"w": w_init(key, (max_len, features), max_len, features, dtype=param_dtype)}, {}

    def output_shape(input_shape):
        return check_shape(input_shape)

    def forward(params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"PositionalEmbedding: x must be a floating-point array, got dtype {jnp.result_type(x)}")
        if jnp.ndim(x) != 3:
            raise ValueError(f"PositionalEmbedding: x must have shape (batch, time, {features}), got {jnp.shape(x)}")
        check_shape(jnp.shape(x)[1:])
        return x + params["w"][: x.shape[1]], state, None

    def backward(params, cache, dy):
        dw = jnp.zeros_like(params["w"]).at[: dy.shape[1]].set(jnp.sum(dy, axis=0).astype(params["w"].dtype))
        return {"w": dw}, dy

    return with_compute_dtype(Layer("positional_embedding", init, forward, backward, output_shape), dtype)
