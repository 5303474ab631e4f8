"""Batch normalization (Ioffe & Szegedy, 2015) with running statistics as state.

Every axis of x except the feature axis is a sample axis: for a Dense output
(N, F) the statistics are over N, for a convolution output (N, H, W, C) over N, H
and W. With m the number of values per feature, for each feature

    mu = (1/m) sum_i x_i,   var = (1/m) sum_i (x_i - mu)^2   (biased),
    xhat_i = (x_i - mu) / sqrt(var + eps),   y_i = gamma xhat_i + beta.

Backward, given dy (sums run over the m values of one feature):

    dbeta  = sum_i dy_i,        dgamma = sum_i dy_i xhat_i,
    dx_i   = gamma / sqrt(var + eps) * (dy_i - dbeta / m - xhat_i dgamma / m).

(Derivation: with g_i = gamma dy_i = dL/dxhat_i and s = (var + eps)^{-1/2},
xhat_i depends on x_j directly, through mu and through var:
d xhat_i / d x_j = s (delta_ij - 1/m) - s xhat_i xhat_j / m, since
d var / d x_j = 2 (x_j - mu) / m. So dx_j = s (g_j - mean(g) - xhat_j mean(g xhat)),
and mean(g) = gamma dbeta / m, mean(g xhat) = gamma dgamma / m.)

Training mode normalises with the batch statistics and returns the running
statistics updated as ``running = momentum * running + (1 - momentum) * batch``,
with the *unbiased* batch variance var * m / (m - 1) in the running variance. Eval
mode normalises with the running statistics, so y is affine in x:
dx = gamma dy / sqrt(running_var + eps). The state is threaded, never
differentiated: its update is under ``jax.lax.stop_gradient``.

Precision: the statistics, xhat and the affine map run in float32 at least
(``stat_dtype``), whatever the compute dtype: a float16 variance of activations
around 256 overflows (the fp16 BatchNorm NaN Haiku's mixed-precision docs show) and a
bfloat16 mean keeps 8 bits. y and dx come back in x's dtype. The running statistics are
stored in ``param_dtype`` or float32, whichever is wider: an exponential average updated
by (1 - momentum) * batch loses the update in bfloat16, so with ``param_dtype`` bfloat16 or
float16 (and only then) params and state differ in width, on purpose.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.validate import example_shape
from funcnn.core.dtypes import available, initialise, layer_dtypes, stat_dtype, with_compute_dtype
from funcnn.core.layer import Layer


class _BatchStats(NamedTuple):
    """Cache of training mode: the statistics depend on x."""

    xhat: jax.Array
    inv_std: jax.Array  # broadcastable against x


class _RunningStats(NamedTuple):
    """Cache of eval mode: the statistics are constants."""

    xhat: jax.Array
    inv_std: jax.Array


def _broadcast_shape(ndim, ax, features):
    """(1, ..., F, ..., 1): a per-feature vector shaped to broadcast against x."""
    return tuple(features if i == ax else 1 for i in range(ndim))


def BatchNorm(*, momentum: float = 0.9, eps: float = 1e-5, axis: int = -1,
              gamma_init="ones", beta_init="zeros", axis_name=None, param_dtype="float32",
              dtype=None) -> Layer:
    """Normalise each feature over the batch, then scale by ``gamma`` and shift by ``beta``.

    Args:
      momentum: weight of the old running statistics in their update, in [0, 1).
      eps: added to the variance before the square root, > 0.
      axis: the feature axis of the batched input x (batch axis first; negative
        counts from the end). ``-1`` suits (N, F) and NHWC (N, H, W, C); ``1`` suits
        NCHW. It may not be the batch axis.
      gamma_init, beta_init: initialisers (a name from ``funcnn.core.initializers`` or a
        callable ``init(key, shape, fan_in, fan_out[, dtype])``) of the scale and the shift.
      param_dtype: the params' dtype; the running statistics are in it or float32,
        whichever is wider (module docstring).
      dtype: the computation's (None: the input's); statistics run in float32 at least.
      axis_name: inside ``shard_map`` over a batch split along this mesh axis, use the
        statistics of the global batch: the means and the backward's sums are averaged
        over the axis (``lax.pmean``; the shards must be of equal size). ``None`` (the
        default) uses the batch the layer sees; under a sharded ``jit`` that is already
        the global batch.

    Params ``{"gamma": (F,), "beta": (F,)}`` (ones, zeros by default); state
    ``{"mean": (F,), "var": (F,)}`` (zeros, ones).

    Raises ``ValueError`` for a momentum outside [0, 1), a non-positive eps, an axis
    that is the batch axis or out of range, an input whose feature axis does not
    have F entries, and, in training mode, a batch with one value per feature (its
    unbiased variance is undefined).
    """
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"BatchNorm: momentum must be a number in [0, 1), got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"BatchNorm: eps must be a positive number, got {eps!r}")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"BatchNorm: axis must be an int, got {axis!r}")
    gamma_init = initializers.get(gamma_init, "gamma_init")
    beta_init = initializers.get(beta_init, "beta_init")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "BatchNorm")

    def _global_mean(local):
        """The mean over the shards of ``axis_name`` (identity without one)."""
        return local if axis_name is None else jax.lax.pmean(local, axis_name)

    def feature_axis(ndim):
        """``axis`` as a non-negative axis of an ``ndim``-axis batched x."""
        if ndim < 2:
            raise ValueError(
                f"BatchNorm: x must have a batch axis and at least one feature axis, got {ndim} axes"
            )
        if not -ndim <= axis < ndim or axis % ndim == 0:
            raise ValueError(
                f"BatchNorm: axis must be a feature axis of x (1..{ndim - 1} or -{ndim - 1}..-1; "
                f"axis 0 is the batch axis), got axis={axis} for {ndim}-axis input"
            )
        return int(axis) % ndim

    def init(key, input_shape):
        shape = example_shape(input_shape, "BatchNorm")
        features = shape[feature_axis(len(shape) + 1) - 1]
        kg, kb = jax.random.split(key)
        params = {"gamma": initialise(gamma_init, kg, (features,), features, features,
                                      available(param_dtype, "BatchNorm")),
                  "beta": initialise(beta_init, kb, (features,), features, features, param_dtype)}
        sd = stat_dtype(param_dtype)
        return params, {"mean": jnp.zeros((features,), sd), "var": jnp.ones((features,), sd)}

    def output_shape(input_shape):
        feature_axis(len(input_shape) + 1)
        return tuple(input_shape)

    def forward(params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"BatchNorm: x must be a floating-point array, got dtype {jnp.result_type(x)}")
        ax = feature_axis(x.ndim)
        features = params["gamma"].shape[0]
        if x.shape[ax] != features:
            raise ValueError(
                f"BatchNorm: x must have {features} features on axis {axis}, got shape {x.shape}"
            )
        bshape = _broadcast_shape(x.ndim, ax, features)
        out_dtype, sd = x.dtype, stat_dtype(x.dtype)
        x = x.astype(sd)
        gamma, beta = params["gamma"].reshape(bshape).astype(sd), params["beta"].reshape(bshape).astype(sd)
        if isinstance(train, jax.core.Tracer):
            raise TypeError("BatchNorm: train must be a Python bool, got a traced value; "
                            "mark it static under jit (static_argnames='train')")
        if train:
            reduce = tuple(i for i in range(x.ndim) if i != ax)
            m = math.prod(x.shape[i] for i in reduce)
            if m < 2:
                raise ValueError(
                    f"BatchNorm: training mode needs more than one value per feature to estimate the "
                    f"variance, got x of shape {x.shape}; use a larger batch or train=False"
                )
            mu = _global_mean(jnp.mean(x, axis=reduce, keepdims=True))
            centred = x - mu
            var = _global_mean(jnp.mean(jnp.square(centred), axis=reduce, keepdims=True))  # two-pass
            m = m if axis_name is None else m * jax.lax.axis_size(axis_name)
            inv_std = jax.lax.rsqrt(var + eps)
            xhat = centred * inv_std
            batch = {"mean": mu.reshape(features), "var": var.reshape(features) * (m / (m - 1))}
            new_state = jax.lax.stop_gradient({
                k: (momentum * state[k] + (1 - momentum) * batch[k]).astype(state[k].dtype) for k in batch})
            cache = _BatchStats(xhat, inv_std)
        else:
            mean, var = jax.lax.stop_gradient((state["mean"], state["var"]))
            inv_std = jax.lax.rsqrt(var.astype(sd) + eps).reshape(bshape)
            xhat = (x - mean.astype(sd).reshape(bshape)) * inv_std
            new_state = state
            cache = _RunningStats(xhat, inv_std)
        return (gamma * xhat + beta).astype(out_dtype), new_state, cache

    def backward(params, cache, dy):
        ax = feature_axis(dy.ndim)
        reduce = tuple(i for i in range(dy.ndim) if i != ax)
        bshape = _broadcast_shape(dy.ndim, ax, dy.shape[ax])
        dx_dtype, dy = dy.dtype, dy.astype(cache.xhat.dtype)
        dbeta = jnp.sum(dy, axis=reduce)
        dgamma = jnp.sum(dy * cache.xhat, axis=reduce)
        if isinstance(cache, _BatchStats):  # the mean and variance depend on x too
            m = dy.size // dy.shape[ax]
            sum_dy, sum_dy_xhat = _global_mean((dbeta, dgamma))  # m: values per feature per shard
            dy = dy - (sum_dy.reshape(bshape) + cache.xhat * sum_dy_xhat.reshape(bshape)) / m
        gamma = params["gamma"].reshape(bshape).astype(dy.dtype)
        dparams = {"gamma": dgamma.astype(params["gamma"].dtype), "beta": dbeta.astype(params["beta"].dtype)}
        return dparams, (gamma * cache.inv_std * dy).astype(dx_dtype)

    return with_compute_dtype(Layer("batchnorm", init, forward, backward, output_shape), dtype)
