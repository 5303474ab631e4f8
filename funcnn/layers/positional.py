r"""Learned positional embedding: a trainable vector per position, added to the input.

**Forward.** For $x$ of shape `(B, T, F)` and a table $P$ of shape `(L, F)` with $T \le L$
(the longest sequence), position $t$ of every sequence gets row $t$:

$$
y_{bt} = x_{bt} + P_t .
$$

**Cache.** Nothing.

**Backward.** Given $dy$: $dx = dy$, and the first $T$ rows of $dP$ are the sums over the batch,

$$
dP_t = \sum_b dy_{bt} \quad (t < T), \qquad dP_t = 0 \quad (T \le t < L).
$$

**Decoding.** With a state `{"pos": ()}` (from `decode_state`) the $T$ inputs are the positions
`pos, ..., pos + T - 1`, so rows `pos, ..., pos + T - 1` are added and `pos` advances by $T$
(forward-only, as the attention's key/value cache).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core import initializers, prng
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.layer import Layer
from funcnn.core.validate import positive_int


def gpt2_normal(key: jax.Array, shape: tuple[int, ...], fan_in: Any = None, fan_out: Any = None,
                dtype: Any = jnp.float32) -> jax.Array:
    """N(0, 0.02^2) entries of the given shape: GPT-2's initialisation of its position table."""
    return prng.normal(key, shape, dtype, 0.02)


def positional_forward(x: jax.Array, w: jax.Array, start: Any = 0) -> jax.Array:
    """`x` `(B, T, F)` plus the rows `start, ..., start + T - 1` of `w` `(L, F)`: `(B, T, F)`."""
    if isinstance(start, int) and start == 0:
        return x + w[: x.shape[1]]
    return x + jax.lax.dynamic_slice_in_dim(w, start, x.shape[1], axis=0)


def positional_backward(dy: jax.Array, w: jax.Array) -> jax.Array:
    """`dP` `(L, F)`: the batch sums of `dy` `(B, T, F)` in the first `T` rows, zeros below."""
    return jnp.zeros_like(w).at[: dy.shape[1]].set(jnp.sum(dy, axis=0).astype(w.dtype))


def decode_state() -> dict[str, jax.Array]:
    """The decoding state: the position of the next input, `{"pos": 0}`."""
    return {"pos": jnp.zeros((), jnp.int32)}


def PositionalEmbedding(max_len: int, features: int, *, w_init: str | Callable = gpt2_normal,
                        param_dtype: Any = jnp.float32, dtype: Any = None) -> Layer:
    """`y = x + w[:T]` for x of shape `(batch, T, features)`, T <= `max_len`.

    Params `{"w": (max_len, features)}` (N(0, 0.02^2) by default) in `param_dtype`;
    `dtype` is the compute dtype (None: the input's). A state from `decode_state`
    adds the rows from its `pos` on (module docstring).

    **Raises:** `ValueError` for an input that is not (batch, T, features) with T <= max_len.
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

    def forward(params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"PositionalEmbedding: x must be a floating-point array, got dtype {jnp.result_type(x)}")
        if jnp.ndim(x) != 3:
            raise ValueError(f"PositionalEmbedding: x must have shape (batch, time, {features}), got {jnp.shape(x)}")
        check_shape(jnp.shape(x)[1:])
        if state:
            return positional_forward(x, params["w"], state["pos"]), {"pos": state["pos"] + x.shape[1]}, None
        return positional_forward(x, params["w"]), state, None

    def backward(params, cache, dy):
        return {"w": positional_backward(dy, params["w"])}, dy

    return with_compute_dtype(Layer("positional_embedding", init, forward, backward, check_shape), dtype)
