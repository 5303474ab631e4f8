r"""Dense at every position: `(B, T, D)` -> `(B, T, S)`, the transformer's position-wise layer.

**Forward.** The same weights $W$ `(S, D)` and bias $b$ `(S,)` at every position $t$ of
every sequence $b$:

$$
y_{bt} = W x_{bt} + b .
$$

**Cache.** The input $X$, `(B, T, D)`.

**Backward.** Every leading axis is a sample axis, so the Dense layer's gradients sum over
the batch *and* the positions (`funcnn.layers.dense.dense_backward`): with
$\delta_{bt} = \partial L / \partial y_{bt}$,

$$
\frac{\partial L}{\partial W} = \sum_{b,t} \delta_{bt} x_{bt}^\top, \qquad
\frac{\partial L}{\partial b} = \sum_{b,t} \delta_{bt}, \qquad
\frac{\partial L}{\partial x_{bt}} = W^\top \delta_{bt} .
$$
"""
from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from funcnn.core.dtypes import available, with_compute_dtype
from funcnn.core.layer import Layer
from funcnn.layers.dense import dense_backward, dense_forward, dense_options, dense_params, grads_of


def token_dense(features: int, w_init: str | Callable = "glorot_uniform", b_init: str | Callable = "zeros", *,
                use_bias: bool = True, param_dtype: Any = jnp.float32, dtype: Any = None) -> Layer:
    r"""$y = x W^\top + b$ over the last axis of `x` `(..., D)` -> `(..., features)`.

    Params `{"w": (features, D), "b": (features,)}` as `Dense`'s (no `"b"` with
    `use_bias=False`), in `param_dtype`; `dtype` is the compute dtype (None: the input's).

    **Raises:** `ValueError` for a non-positive `features` or an input whose last axis is
    not D; `TypeError` for a non-bool `use_bias`.
    """
    w_init, b_init, param_dtype, dtype = dense_options(features, w_init, b_init, use_bias, param_dtype, dtype,
                                                       "token_dense")

    def init(key, input_shape):
        return dense_params(key, input_shape[-1], features, w_init, b_init, available(param_dtype, "token_dense"),
                            split=False), {}

    def forward(params, state, x, *, key=None, train=False):
        if x.ndim < 2 or x.shape[-1] != params["w"].shape[1]:
            raise ValueError(f"token_dense: x must have shape (..., {params['w'].shape[1]}), got {x.shape}")
        y, cache = dense_forward(x, params["w"], params.get("b"))
        return y, state, cache

    def backward(params, cache, dy):
        dw, db, dx = dense_backward(dy, cache, params["w"], "b" in params)
        return grads_of(dw, db), dx

    layer = Layer("token_dense", init, forward, backward, lambda s: (*tuple(s)[:-1], features))
    return with_compute_dtype(layer, dtype)
