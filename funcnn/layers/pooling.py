r"""Max and average pooling over 1 or 2 spatial axes, and global average pooling.

**Forward.** A window of taps $t$ with stride $s$ slides over the padded input $X_p$
(`_conv_windows`), per example and channel: output position $o$ reads $X_{p;\,o s + t}$.
With $X$ of shape `(N, *S, C)`, every output is `(N, *M, C)` ($M$: `Geometry.out_spatial`):

$$
\text{max:}\quad Y_o = \max_t X_{p;\,o s + t}, \qquad
\text{avg:}\quad Y_o = \frac{1}{c_o} \sum_t X_{p;\,o s + t},
$$

with $c_o$ the number of taps of window $o$ that fall on the input, not on padding
(padding is excluded from the average, as TensorFlow's "SAME" average pooling). Max
pooling pads with $-\infty$, so a padded tap never wins; a padding as wide as the window
would give windows with no input, and raises. The cache (`PoolCache`) holds $X$ and $Y$,
each as above, and (static) the geometry.

**Backward.** Given $\delta = \partial L / \partial Y$ of shape `(N, *M, C)`. Max: $Y_o$
equals one of its inputs, $X_{p;\,o s + t^*(o)}$, where $t^*(o)$ is the first tap holding
the maximum, so locally $\partial Y_o / \partial X_{p;\,i} = [i = o s + t^*(o)]$ and

$$
\frac{\partial L}{\partial X_i} = \sum_{o:\; i = o s + t^*(o)} \delta_o \qquad (N, *S, C):
$$

each window sends its whole gradient to one input (the one `lax.select_and_scatter_add` and
PyTorch pick on ties), and an input that wins several overlapping windows collects them all.
Average: $\partial Y_o / \partial X_{p;\,o s + t} = 1 / c_o$ for every tap, so

$$
\frac{\partial L}{\partial X_i} = \sum_{(o, t):\; o s + t = i} \frac{\delta_o}{c_o} \qquad (N, *S, C).
$$

Every tap is one strided slice of the padded input `(N, *M, C)` (forward: an elementwise
max or sum of the slices); the backward builds each tap's share of $\delta$, `(N, *M, C)`,
and `scatter_windows` adds the shares back, all fused by XLA into a few elementwise loops.
This avoids XLA's `select_and_scatter`, which autodiff of `lax.reduce_window` emits and
which is an order of magnitude slower on CPU for 2x2 pooling (README, "Convolutional
networks").

**Global average pooling** maps `(N, *S, C)` to `(N, C)`: $Y_{n,c} = \frac{1}{|S|} \sum_i
X_{n,i,c}$, so $\partial L / \partial X_{n,i,c} = \delta_{n,c} / |S|$, broadcast back to
`(N, *S, C)`; its cache is $X$ (only its shape is used).

Every pooling layer takes `dtype`: the computation's (None: the input's).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.core.dtypes import float_dtype, with_compute_dtype
from funcnn.core.layer import Layer
from funcnn.core.validate import example_shape, input_rank
from funcnn.layers._conv_windows import (SPATIAL_NAMES, Geometry, as_tuple, check_padding, geometry, pad_to_used,
                                         scatter_windows, window_slices)


def _counts(g: Geometry) -> np.ndarray:
    """Static `(1, *M, 1)` array: how many taps of each window fall on the input."""
    total = np.ones((), np.float64)
    for n, (lo, _), m, s, k in zip(g.in_spatial, g.pads, g.out_spatial, g.stride, g.kernel):
        start = np.arange(m) * s - lo
        per_axis = np.minimum(start + k, n) - np.maximum(start, 0)
        total = np.multiply.outer(total, per_axis)
    return total[None, ..., None]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["x", "y"], meta_fields=["geometry"])
@dataclasses.dataclass(frozen=True)
class PoolCache:
    """What a pooling backward needs.

    - `x`: input, shape `(N, *S, C)`; `y`: output, shape `(N, *M, C)`.
    - `geometry`: the window geometry (static).
    """

    x: jax.Array
    y: jax.Array
    geometry: Geometry


def max_pool_forward(x: jax.Array, g: Geometry) -> tuple[jax.Array, PoolCache]:
    r"""$Y_o = \max_t X_{p;\,o s + t}$ per channel, padding with $-\infty$.

    **Arguments:**

    - `x`: input, shape `(N, *S, C)`.
    - `g`: the window geometry of `x`'s spatial axes (dilation 1).

    **Returns:**

    `(y, cache)`: `y` of shape `(N, *M, C)`; `cache` a `PoolCache` of `x` and `y`.
    """
    y = functools.reduce(jnp.maximum, window_slices(pad_to_used(x, g, -jnp.inf), g))
    return y, PoolCache(x, y, g)


def max_pool_backward(dy: jax.Array, cache: PoolCache) -> jax.Array:
    """Each window's gradient to its first maximal tap (module docstring).

    **Arguments:**

    - `dy`: the output's gradient, shape `(N, *M, C)`.
    - `cache`: the forward's `PoolCache`.

    **Returns:**

    `dx` of shape `(N, *S, C)`.
    """
    x, y, g = cache.x, cache.y, cache.geometry
    parts, taken = [], None
    for xs in window_slices(pad_to_used(x, g, -jnp.inf), g):
        hit = xs == y if taken is None else (xs == y) & ~taken  # first tap holding the max
        taken = hit if taken is None else taken | hit
        parts.append(jnp.where(hit, dy, 0).astype(dy.dtype))
    return scatter_windows(parts, g)


def avg_pool_forward(x: jax.Array, g: Geometry) -> tuple[jax.Array, PoolCache]:
    r"""$Y_o = \frac{1}{c_o} \sum_t X_{p;\,o s + t}$ per channel, padding excluded.

    **Arguments:**

    - `x`: input, shape `(N, *S, C)`.
    - `g`: the window geometry of `x`'s spatial axes (dilation 1).

    **Returns:**

    `(y, cache)`: `y` of shape `(N, *M, C)`; `cache` a `PoolCache` of `x` and `y`.
    """
    total = functools.reduce(jnp.add, window_slices(pad_to_used(x, g), g))
    y = total / _counts(g).astype(x.dtype)
    return y, PoolCache(x, y, g)


def avg_pool_backward(dy: jax.Array, cache: PoolCache) -> jax.Array:
    r"""$\delta_o / c_o$ to every tap of window $o$ (module docstring).

    **Arguments:**

    - `dy`: the output's gradient, shape `(N, *M, C)`.
    - `cache`: the forward's `PoolCache`.

    **Returns:**

    `dx` of shape `(N, *S, C)`.
    """
    g = cache.geometry
    share = dy / _counts(g).astype(dy.dtype)
    return scatter_windows([share] * len(g.taps), g)


def global_avg_pool_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The mean over every spatial axis.

    **Arguments:**

    - `x`: input, shape `(N, *S, C)`.

    **Returns:**

    `(y, cache)`: `y` of shape `(N, C)`; `cache` is `x` (only its shape is used).
    """
    return x.mean(axis=tuple(range(1, x.ndim - 1))), x


def global_avg_pool_backward(dy: jax.Array, cache: jax.Array) -> jax.Array:
    r"""$\delta / |S|$ broadcast over the spatial axes.

    **Arguments:**

    - `dy`: the output's gradient, shape `(N, C)`.
    - `cache`: the forward's input, shape `(N, *S, C)`.

    **Returns:**

    `dx` of shape `(N, *S, C)`.
    """
    shape = cache.shape
    spatial = shape[1:-1]
    return jnp.broadcast_to(dy.reshape(dy.shape[0], *(1,) * len(spatial), dy.shape[-1]) / math.prod(spatial), shape)


_KINDS = {"max": (max_pool_forward, max_pool_backward), "avg": (avg_pool_forward, avg_pool_backward)}


def _pool(kind: str, ndim: int, window, stride, padding, dtype=None) -> Layer:
    """The pooling layer behind `MaxPool1D/2D` and `AvgPool1D/2D`: validation and wiring."""
    where = f"{kind.capitalize()}Pool{ndim}D"
    window = as_tuple(window, ndim, "window", where)
    stride = window if stride is None else as_tuple(stride, ndim, "stride", where)
    padding = check_padding(padding, ndim, where)
    what = SPATIAL_NAMES[ndim][len("(batch, "):-1]
    pool_forward, pool_backward = _KINDS[kind]

    def geom(spatial):
        g = geometry(spatial, window, stride, (1,) * ndim, padding, where)
        if kind == "max" and any(max(p) >= k for p, k in zip(g.pads, window)):
            raise ValueError(f"{where}: padding {g.pads} must be smaller than the window {window} on each side")
        return g

    def init(key, input_shape):
        geom(input_rank(input_shape, ndim + 1, where, what)[:-1])
        return {}, {}

    def output_shape(input_shape):
        shape = input_rank(input_shape, ndim + 1, where, what)
        return (*geom(shape[:-1]).out_spatial, shape[-1])

    def forward(params, state, x, *, key=None, train=False):
        if jnp.ndim(x) != ndim + 2:
            raise ValueError(f"{where}: x must have shape {SPATIAL_NAMES[ndim]}, got {jnp.shape(x)}")
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"{where}: x must be a floating-point array, got dtype {jnp.result_type(x)}")
        y, cache = pool_forward(x, geom(x.shape[1:-1]))
        return y, state, cache

    def backward(params, cache, dy):
        return {}, pool_backward(dy, cache)

    dtype = float_dtype(dtype, "dtype", f"{kind.title()}Pool{ndim}D", allow_none=True)
    return with_compute_dtype(Layer(f"{kind}pool{ndim}d", init, forward, backward, output_shape), dtype)


def MaxPool2D(window: int | tuple[int, ...], stride: int | tuple[int, ...] | None = None,
              padding: str | int | tuple = "VALID", *, dtype: Any = None) -> Layer:
    """Max over `(h, w)` windows of NHWC input, per channel: `(N, H, W, C) -> (N, H', W', C)`.

    **Arguments:**

    - `window`: an int or an `(h, w)` pair.
    - `stride`: an int or an `(h, w)` pair; `None`: the window.
    - `padding`: `"VALID"`, `"SAME"`, an int or `((top, bottom), (left, right))`, each side
      smaller than the window.
    - `dtype`: the computation's dtype (None: the input's).

    **Returns:**

    The `Layer`. Raises `ValueError` for a non-4-D input or a window larger than the padded
    input.
    """
    return _pool("max", 2, window, stride, padding, dtype)


def AvgPool2D(window: int | tuple[int, ...], stride: int | tuple[int, ...] | None = None,
              padding: str | int | tuple = "VALID", *, dtype: Any = None) -> Layer:
    """Mean over `(h, w)` windows of NHWC input, per channel, padding excluded from the mean:
    `(N, H, W, C) -> (N, H', W', C)`. Arguments as `MaxPool2D`.

    **Returns:**

    The `Layer`.
    """
    return _pool("avg", 2, window, stride, padding, dtype)


def MaxPool1D(window: int | tuple[int, ...], stride: int | tuple[int, ...] | None = None,
              padding: str | int | tuple = "VALID", *, dtype: Any = None) -> Layer:
    """Max over windows of `(N, L, C)` input: `-> (N, L', C)`. Arguments as `MaxPool2D`.

    **Returns:**

    The `Layer`.
    """
    return _pool("max", 1, window, stride, padding, dtype)


def AvgPool1D(window: int | tuple[int, ...], stride: int | tuple[int, ...] | None = None,
              padding: str | int | tuple = "VALID", *, dtype: Any = None) -> Layer:
    """Mean over windows of `(N, L, C)` input: `-> (N, L', C)`. Arguments as `AvgPool2D`.

    **Returns:**

    The `Layer`.
    """
    return _pool("avg", 1, window, stride, padding, dtype)


def GlobalAvgPool(*, dtype: Any = None) -> Layer:
    """Mean over every spatial axis: `(N, *S, C) -> (N, C)` (e.g. NHWC or `(N, L, C)`).

    **Arguments:**

    - `dtype`: the computation's dtype (None: the input's).

    **Returns:**

    The `Layer`. Raises `ValueError` for an input without a spatial axis.
    """
    dtype = float_dtype(dtype, "dtype", "GlobalAvgPool", allow_none=True)

    def init(key, input_shape):
        if len(example_shape(input_shape, "GlobalAvgPool")) < 2:
            raise ValueError(f"GlobalAvgPool: input_shape must be (*spatial, channels) with at least one "
                             f"spatial axis, got {tuple(input_shape)}")
        return {}, {}

    def output_shape(input_shape):
        init(None, input_shape)
        return (tuple(input_shape)[-1],)

    def forward(params, state, x, *, key=None, train=False):
        if jnp.ndim(x) < 3:
            raise ValueError(f"GlobalAvgPool: x must have shape (batch, *spatial, channels), got {jnp.shape(x)}")
        y, cache = global_avg_pool_forward(x)
        return y, state, cache

    def backward(params, cache, dy):
        return {}, global_avg_pool_backward(dy, cache)

    return with_compute_dtype(Layer("global_avg_pool", init, forward, backward, output_shape), dtype)
