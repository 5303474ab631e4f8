r"""RMS normalization (Zhang & Sennrich, 2019): LayerNorm without the centring or the shift.

**Forward.** For one example's feature vector $x$ of length $D$ (the last axis),

$$
r = \sqrt{\frac1D \sum_i x_i^2 + \epsilon}, \qquad \hat x_i = x_i / r, \qquad y_i = \gamma_i \hat x_i .
$$

**Cache.** $\hat x$ (the input's shape) and $1/r$ (one per example).

**Backward.** Given $dy$: $d\gamma = \sum_n dy_n \odot \hat x_n$ over every sample axis; with
$g = \gamma \odot dy = \partial L / \partial \hat x$, since $\partial r / \partial x_j = x_j / (D r)$,
$\partial \hat x_i / \partial x_j = (\delta_{ij} - \hat x_i \hat x_j / D) / r$, so per example

$$
dx = \frac{1}{r} \left(g - \hat x\, \overline{g \hat x}\right) \qquad \text{(mean over the } D \text{ features).}
$$

The statistic $r$, $\hat x$ and the backward run in at least float32 (float16/bfloat16 inputs are
upcast inside, the output and $dx$ cast back).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.sharding import batch_dot_general
from funcnn.core.layer import Layer
from funcnn.layers.layernorm import feature_count, last_axis_input, positive_eps, stats_dtype


def rms_forward(gamma: jax.Array, x: jax.Array, eps: float) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    r"""$y = \gamma\, x / r$ over the last axis, in at least float32.

    **Arguments:** `gamma` `(D,)`; `x` `(..., D)`; `eps`.

    **Returns:** `(y, cache)`: `y` of `x`'s shape and dtype; `cache = (xhat (..., D), inv_rms (..., 1))`.
    """
    xf = x.astype(stats_dtype(x))
    inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    xhat = xf * inv_rms
    return (gamma.astype(xf.dtype) * xhat).astype(x.dtype), (xhat, inv_rms)


def rms_backward(gamma: jax.Array, cache: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""$(d\gamma, dx)$ of `rms_forward`: $d\gamma = \sum_n dy_n \hat x_n$, $dx = (g - \hat x \overline{g \hat x}) / r$.

    **Arguments:** `gamma` `(D,)`; the forward's `cache`; `dy` `(..., D)`.

    **Returns:** `(dgamma (D,), dx (..., D))` in `gamma`'s and `dy`'s dtypes.
    """
    xhat, inv_rms = cache
    g = dy.astype(xhat.dtype)
    lead, last = tuple(range(g.ndim - 1)), (g.ndim - 1,)
    dgamma = batch_dot_general(g, xhat, ((lead, lead), (last, last)))
    gg = gamma.astype(xhat.dtype) * g
    dx = inv_rms * (gg - xhat * jnp.mean(gg * xhat, axis=-1, keepdims=True))
    return dgamma.astype(gamma.dtype), dx.astype(dy.dtype)


def RMSNorm(eps: float = 1e-5, *, gamma_init: str | Callable = "ones", param_dtype: Any = jnp.float32,
            dtype: Any = None) -> Layer:
    """Divide each example by the root mean square of its last axis, then scale by `gamma`.

    Input `(batch, ..., D)` -> the same shape; params `{"gamma": (D,)}` in `param_dtype`;
    `dtype` is the compute dtype (None: the input's); the statistic runs in at least
    float32 (half-precision inputs are upcast inside, the output cast back). Equal to
    `torch.nn.functional.rms_norm(x, (D,), gamma, eps)`.

    **Raises:** `ValueError` for a non-positive eps or a last axis that is not D,
    `TypeError` for a non-float input or dtype.
    """
    eps = positive_eps(eps, "RMSNorm")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "RMSNorm")
    gamma_init = initializers.get(gamma_init, "gamma_init")

    def init(key, input_shape):
        d = feature_count(input_shape, "RMSNorm")
        return {"gamma": gamma_init(key, (d,), d, d, dtype=param_dtype)}, {}

    def output_shape(input_shape):
        feature_count(input_shape, "RMSNorm")
        return tuple(input_shape)

    def forward(params, state, x, *, key=None, train=False):
        last_axis_input(x, params["gamma"].shape[0], "RMSNorm")
        y, cache = rms_forward(params["gamma"], x, eps)
        return y, state, cache

    def backward(params, cache, dy):
        dgamma, dx = rms_backward(params["gamma"], cache, dy)
        return {"gamma": dgamma}, dx

    return with_compute_dtype(Layer("rmsnorm", init, forward, backward, output_shape), dtype)
