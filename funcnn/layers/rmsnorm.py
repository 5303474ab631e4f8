"""RMS normalization (Zhang & Sennrich, 2019): LayerNorm without the centring or the shift.

For one example's feature vector x of length D (the last axis),

    r = sqrt((1/D) sum_i x_i^2 + eps),   xhat_i = x_i / r,   y_i = gamma_i xhat_i.

Backward, given dy: dgamma = sum_n dy_n * xhat_n over every sample axis, and with
g = gamma * dy = dL/dxhat, since d r / d x_j = x_j / (D r),
d xhat_i / d x_j = (delta_ij - xhat_i xhat_j / D) / r, so per example

    dx = (g - xhat mean(g xhat)) / r              (mean over the D features).

The statistic r, xhat and the backward run in at least float32 (float16/bfloat16
inputs are upcast inside, the output and dx cast back).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.sharding import batch_dot_general
from funcnn.core.layer import Layer
from funcnn.layers.layernorm import feature_count, last_axis_input, positive_eps, stats_dtype


def RMSNorm(eps: float = 1e-5, *, gamma_init="ones", param_dtype=jnp.float32, dtype=None) -> Layer:
    """Divide each example by the root mean square of its last axis, then scale by ``gamma``.

    Input (batch, ..., D) -> the same shape; params ``{"gamma": (D,)}`` in ``param_dtype``;
    ``dtype`` is the compute dtype (None: the input's); the statistic runs in at least
    float32 (half-precision inputs are upcast inside, the output cast back). Equal to
    ``torch.nn.functional.rms_norm(x, (D,), gamma, eps)``.

    Raises ``ValueError`` for a non-positive eps or a last axis that is not D,
    ``TypeError`` for a non-float input or dtype.
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
        xf = x.astype(stats_dtype(x))
        inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
        xhat = xf * inv_rms
        return (params["gamma"].astype(xf.dtype) * xhat).astype(x.dtype), state, (xhat, inv_rms)

    def backward(params, cache, dy):
        xhat, inv_rms = cache
        g = dy.astype(xhat.dtype)
        lead, last = tuple(range(g.ndim - 1)), (g.ndim - 1,)
        dgamma = batch_dot_general(g, xhat, ((lead, lead), (last, last)))
        gg = params["gamma"].astype(xhat.dtype) * g
        dx = inv_rms * (gg - xhat * jnp.mean(gg * xhat, axis=-1, keepdims=True))
        return {"gamma": dgamma.astype(params["gamma"].dtype)}, dx.astype(dy.dtype)

    return with_compute_dtype(Layer("rmsnorm", init, forward, backward, output_shape), dtype)
