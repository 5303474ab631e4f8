"""Layer normalization (Ba, Kiros & Hinton, 2016): each example normalised over its features.

For one example's feature vector x of length D (the last axis; every other axis is
a sample axis),

    mu = (1/D) sum_i x_i,   var = (1/D) sum_i (x_i - mu)^2   (biased),
    s = (var + eps)^{-1/2},   xhat_i = (x_i - mu) s,   y_i = gamma_i xhat_i + beta_i.

Backward, given dy. The affine part sums over every sample (batch and time) axis:

    dbeta = sum_n dy_n,   dgamma = sum_n dy_n * xhat_n.

The normalisation is BatchNorm's over the other axis: with g = gamma * dy = dL/dxhat,
d xhat_i / d x_j = s (delta_ij - 1/D) - s xhat_i xhat_j / D, so per example

    dx = s (g - mean(g) - xhat mean(g xhat))      (means over the D features).

The statistics, xhat and the backward run in at least float32 (float64 stays
float64): for float16/bfloat16 inputs the values are upcast inside and the output
and dx cast back, since a half-precision variance loses most of its digits.
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.sharding import batch_dot_general
from funcnn.core.layer import Layer


def stats_dtype(x):
    """The dtype normalisation statistics are computed in: at least float32."""
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def positive_eps(eps, where):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"{where}: eps must be a positive number, got {eps!r}")
    return float(eps)


def float_input(x, where):
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{where}: x must be a floating-point array, got dtype {jnp.result_type(x)}")


def normalize(x, axes, eps):
    """(xhat, s): x centred and scaled over ``axes`` (two-pass variance: no cancellation)."""
    mu = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mu
    inv_std = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=axes, keepdims=True) + eps)
    return centred * inv_std, inv_std


def normalize_backward(g, xhat, inv_std, axes):
    """dx = s (g - mean(g) - xhat mean(g xhat)), the means over ``axes``; g = dL/dxhat."""
    mean_g = jnp.mean(g, axis=axes, keepdims=True)
    mean_gx = jnp.mean(g * xhat, axis=axes, keepdims=True)
    return inv_std * (g - mean_g - xhat * mean_gx)


def affine_grads(dy, xhat):
    """(dgamma, dbeta) of y = gamma * xhat + beta, gamma and beta over the last axis:
    sums over every leading (sample) axis, dgamma as a contraction over the batch."""
    lead = tuple(range(dy.ndim - 1))
    last = (dy.ndim - 1,)
    dgamma = batch_dot_general(dy, xhat, ((lead, lead), (last, last)))
    return dgamma, jnp.sum(dy, axis=lead)


def _same(a):
    return a


def affine_norm_forward(params, x, axes, eps, group=_same):
    """y = gamma * xhat + beta, xhat = ``x`` normalised over ``axes`` of ``group(x)`` (a
    reshape: GroupNorm's channel groups), in ``stats_dtype``; returns (y, cache)."""
    sd = stats_dtype(x)
    xhat, inv_std = normalize(group(x.astype(sd)), axes, eps)
    xhat = xhat.reshape(x.shape)
    y = params["gamma"].astype(sd) * xhat + params["beta"].astype(sd)
    return y.astype(x.dtype), (xhat, inv_std)


def affine_norm_backward(params, cache, dy, axes, group=_same):
    """(dparams, dx) of ``affine_norm_forward``: dgamma, dbeta from ``affine_grads``, and
    dx = ``normalize_backward`` of g = gamma * dy, over the same ``axes`` of ``group``."""
    xhat, inv_std = cache
    g = dy.astype(xhat.dtype)
    dgamma, dbeta = affine_grads(g, xhat)
    dx = normalize_backward(group(params["gamma"].astype(g.dtype) * g), group(xhat), inv_std, axes)
    return ({"gamma": dgamma.astype(params["gamma"].dtype), "beta": dbeta.astype(params["beta"].dtype)},
            dx.reshape(dy.shape).astype(dy.dtype))


def last_axis_input(x, features, where):
    float_input(x, where)
    if jnp.ndim(x) < 2 or jnp.shape(x)[-1] != features:
        raise ValueError(f"{where}: x must have shape (batch, ..., {features}), got {jnp.shape(x)}")


def feature_count(input_shape, where):
    shape = tuple(input_shape)
    if len(shape) < 1:
        raise ValueError(f"{where}: input_shape must have at least one axis (..., features), got {shape}")
    return shape[-1]


def LayerNorm(eps: float = 1e-5, *, gamma_init="ones", beta_init="zeros",
              param_dtype=jnp.float32, dtype=None) -> Layer:
    """Normalise each example over its last axis, then scale by ``gamma`` and shift by ``beta``.

    Input (batch, ..., D) -> output of the same shape; params ``{"gamma": (D,), "beta": (D,)}``
    (ones, zeros by default; ``gamma_init``/``beta_init`` are ``funcnn.core.initializers`` names or
    callables) in ``param_dtype``; ``dtype`` is the compute dtype (None: the input's), the
    statistics always in at least float32 (module docstring). Equal to ``torch.nn.LayerNorm(D)``.

    Raises ``ValueError`` for a non-positive eps or an input whose last axis is not D,
    ``TypeError`` for a non-float input or dtype.
    """
    eps = positive_eps(eps, "LayerNorm")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "LayerNorm")
    gamma_init = initializers.get(gamma_init, "gamma_init")
    beta_init = initializers.get(beta_init, "beta_init")

    def init(key, input_shape):
        d = feature_count(input_shape, "LayerNorm")
        kg, kb = jax.random.split(key)
        return {"gamma": gamma_init(kg, (d,), d, d, dtype=param_dtype),
                "beta": beta_init(kb, (d,), d, d, dtype=param_dtype)}, {}

    def output_shape(input_shape):
        feature_count(input_shape, "LayerNorm")
        return tuple(input_shape)

    def forward(params, state, x, *, key=None, train=False):
        last_axis_input(x, params["gamma"].shape[0], "LayerNorm")
        y, cache = affine_norm_forward(params, x, -1, eps)
        return y, state, cache

    def backward(params, cache, dy):
        return affine_norm_backward(params, cache, dy, -1)

    return with_compute_dtype(Layer("layernorm", init, forward, backward, output_shape), dtype)
