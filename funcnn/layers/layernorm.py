r"""Layer normalization (Ba, Kiros & Hinton, 2016): each example normalised over its features.

**Forward.** For one example's feature vector $x$ of length $D$ (the last axis; every other
axis is a sample axis),

$$
\mu = \frac1D \sum_i x_i, \qquad \sigma^2 = \frac1D \sum_i (x_i - \mu)^2 \;\text{(biased)}, \qquad
s = (\sigma^2 + \epsilon)^{-1/2},
$$

$$
\hat x_i = (x_i - \mu)\, s, \qquad y_i = \gamma_i \hat x_i + \beta_i
$$

($\beta$ absent with `use_bias=False`).

**Cache.** $\hat x$ (the input's shape) and $s$ (one per example).

**Backward.** Given $dy$. The affine part sums over every sample (batch and time) axis:

$$
d\beta = \sum_n dy_n, \qquad d\gamma = \sum_n dy_n \odot \hat x_n .
$$

The normalisation is BatchNorm's over the other axis: with $g = \gamma \odot dy = \partial L / \partial \hat x$
and $\partial \hat x_i / \partial x_j = s(\delta_{ij} - 1/D) - s\, \hat x_i \hat x_j / D$, per example

$$
dx = s \left(g - \overline{g} - \hat x\, \overline{g \hat x}\right)
\qquad \text{(bars: means over the } D \text{ features).}
$$

The statistics, $\hat x$ and the backward run in at least float32 (float64 stays float64): for
float16/bfloat16 inputs the values are upcast inside and the output and $dx$ cast back, since a
half-precision variance loses most of its digits.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.sharding import batch_dot_general
from funcnn.core.layer import Layer


def stats_dtype(x: Any) -> Any:
    """The dtype normalisation statistics are computed in: at least float32."""
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def positive_eps(eps: Any, where: str) -> float:
    """`eps` as a float, or a one-line `ValueError` naming `where` unless it is a positive number."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"{where}: eps must be a positive number, got {eps!r}")
    return float(eps)


def float_input(x: Any, where: str) -> None:
    """A one-line `TypeError` naming `where` unless `x` is a floating-point array."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{where}: x must be a floating-point array, got dtype {jnp.result_type(x)}")


def normalize(x: jax.Array, axes: Any, eps: float) -> tuple[jax.Array, jax.Array]:
    r"""$(\hat x, s)$: `x` centred and scaled over `axes` (two-pass variance: no cancellation).

    **Returns:** `xhat` of `x`'s shape and `s` with the `axes` kept as size 1.
    """
    mu = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mu
    inv_std = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=axes, keepdims=True) + eps)
    return centred * inv_std, inv_std


def normalize_backward(g: jax.Array, xhat: jax.Array, inv_std: jax.Array, axes: Any) -> jax.Array:
    r"""$dx = s\,(g - \overline{g} - \hat x\, \overline{g \hat x})$, means over `axes`, $g = \partial L/\partial \hat x$.

    **Arguments:** `g`, `xhat` of one shape; `inv_std` $s$ as `normalize` returns it.

    **Returns:** `dx`, the shape of `g`.
    """
    mean_g = jnp.mean(g, axis=axes, keepdims=True)
    mean_gx = jnp.mean(g * xhat, axis=axes, keepdims=True)
    return inv_std * (g - mean_g - xhat * mean_gx)


def affine_grads(dy: jax.Array, xhat: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""$(d\gamma, d\beta)$ of $y = \gamma \hat x + \beta$ over the last axis `(D,)`, from `dy`, `xhat` `(..., D)`:
    sums over every leading (sample) axis, $d\gamma$ as a contraction over the batch."""
    lead = tuple(range(dy.ndim - 1))
    last = (dy.ndim - 1,)
    dgamma = batch_dot_general(dy, xhat, ((lead, lead), (last, last)))
    return dgamma, jnp.sum(dy, axis=lead)


def _same(a: jax.Array) -> jax.Array:
    """The identity: LayerNorm's `group` (no regrouping)."""
    return a


def affine_norm_forward(params: dict, x: jax.Array, axes: Any, eps: float,
                        group: Callable = _same) -> tuple[jax.Array, tuple]:
    r"""$y = \gamma \hat x + \beta$, $\hat x$ = `x` normalised over `axes` of `group(x)` (a reshape:
    GroupNorm's channel groups), in `stats_dtype`; no $\beta$ when `params` has no `"beta"`.

    **Arguments:** `params` `{"gamma": (C,), "beta": (C,)}`; `x` `(..., C)`.

    **Returns:** `(y, cache)`: `y` of `x`'s shape and dtype, `cache = (xhat, inv_std)`.
    """
    sd = stats_dtype(x)
    xhat, inv_std = normalize(group(x.astype(sd)), axes, eps)
    xhat = xhat.reshape(x.shape)
    y = params["gamma"].astype(sd) * xhat
    if "beta" in params:
        y = y + params["beta"].astype(sd)
    return y.astype(x.dtype), (xhat, inv_std)


def affine_norm_backward(params: dict, cache: tuple, dy: jax.Array, axes: Any,
                         group: Callable = _same) -> tuple[dict, jax.Array]:
    r"""`(dparams, dx)` of `affine_norm_forward`: $d\gamma$, $d\beta$ from `affine_grads`, and
    $dx$ = `normalize_backward` of $g = \gamma\, dy$, over the same `axes` of `group`.

    **Arguments:** `params` as the forward's; its `cache`; `dy` of the output's shape.

    **Returns:** `(dparams, dx)`: `dparams` with the structure of `params`, `dx` of `dy`'s shape.
    """
    xhat, inv_std = cache
    g = dy.astype(xhat.dtype)
    dgamma, dbeta = affine_grads(g, xhat)
    dx = normalize_backward(group(params["gamma"].astype(g.dtype) * g), group(xhat), inv_std, axes)
    grads = {"gamma": dgamma.astype(params["gamma"].dtype)}
    if "beta" in params:
        grads["beta"] = dbeta.astype(params["beta"].dtype)
    return grads, dx.reshape(dy.shape).astype(dy.dtype)


def last_axis_input(x: Any, features: int, where: str) -> None:
    """One-line errors unless `x` is a float array `(batch, ..., features)`."""
    float_input(x, where)
    if jnp.ndim(x) < 2 or jnp.shape(x)[-1] != features:
        raise ValueError(f"{where}: x must have shape (batch, ..., {features}), got {jnp.shape(x)}")


def feature_count(input_shape: Any, where: str) -> int:
    """The last axis of one example's shape (a one-line `ValueError` for a shape without axes)."""
    shape = tuple(input_shape)
    if len(shape) < 1:
        raise ValueError(f"{where}: input_shape must have at least one axis (..., features), got {shape}")
    return shape[-1]


def LayerNorm(eps: float = 1e-5, *, gamma_init: str | Callable = "ones", beta_init: str | Callable = "zeros",
              use_bias: bool = True, param_dtype: Any = jnp.float32, dtype: Any = None) -> Layer:
    """Normalise each example over its last axis, then scale by `gamma` and shift by `beta`.

    Input `(batch, ..., D)` -> output of the same shape; params `{"gamma": (D,), "beta": (D,)}`
    (ones, zeros by default; `gamma_init`/`beta_init` are `funcnn.core.initializers` names or
    callables; no `"beta"` with `use_bias=False`) in `param_dtype`; `dtype` is the compute dtype
    (None: the input's), the statistics always in at least float32 (module docstring). Equal to
    `torch.nn.LayerNorm(D, bias=use_bias)`.

    **Raises:** `ValueError` for a non-positive eps or an input whose last axis is not D,
    `TypeError` for a non-float input or dtype or a non-bool `use_bias`.
    """
    eps = positive_eps(eps, "LayerNorm")
    if not isinstance(use_bias, bool):
        raise TypeError(f"LayerNorm: use_bias must be a bool, got {use_bias!r}")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "LayerNorm")
    gamma_init = initializers.get(gamma_init, "gamma_init")
    beta_init = initializers.get(beta_init, "beta_init")

    def init(key, input_shape):
        d = feature_count(input_shape, "LayerNorm")
        kg, kb = jax.random.split(key)
        params = {"gamma": gamma_init(kg, (d,), d, d, dtype=param_dtype)}
        if use_bias:
            params["beta"] = beta_init(kb, (d,), d, d, dtype=param_dtype)
        return params, {}

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
