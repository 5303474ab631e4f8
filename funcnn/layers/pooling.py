"""Max and average pooling over 1 or 2 spatial axes, and global average pooling.

For window taps t, stride s and input padding (see ``_conv_windows``), output o reads the
inputs X_pad[o s + t]. Per channel:

    max:  Y[o] = max_t X_pad[o s + t]          dX[i] = sum_{o: i = o s + t*(o)} dY[o]
          where t*(o) is the first tap holding the maximum: each window sends its whole
          gradient to one input (the one ``lax.select_and_scatter_add`` and PyTorch pick on
          ties), and an input that wins several overlapping windows collects them all.
    avg:  Y[o] = (1 / c_o) sum_t X_pad[o s + t]   dX[i] = sum_{(o, t): o s + t = i} dY[o] / c_o
          with c_o the number of taps of window o that fall on the input, not on padding
          (padding is excluded from the average, as TensorFlow's "SAME" average pooling).

Max pooling pads with -inf, so a padded tap never wins; a padding as wide as the window
would give windows with no input, and raises.

Every tap is one strided slice of the padded input (forward: an elementwise max or sum
of the slices); the backward builds each tap's share of dY and ``scatter_windows`` adds the
shares back, all fused by XLA into a few elementwise loops. This avoids XLA's
``select_and_scatter``, which autodiff of ``lax.reduce_window`` emits and which is an
order of magnitude slower on CPU for 2x2 pooling (README, "Convolutional networks").

``GlobalAvgPool`` maps (N, *S, C) to (N, C): Y = mean over S, dX = dY / |S| broadcast.

Every pooling layer takes ``dtype``: the computation's (None: the input's).
"""
from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

from funcnn.core.validate import example_shape, input_rank
from funcnn.core.dtypes import float_dtype, with_compute_dtype
from funcnn.core.layer import Layer
from funcnn.layers._conv_windows import (SPATIAL_NAMES, as_tuple, check_padding, geometry, pad_to_used,
                                         scatter_windows, window_slices)


def _counts(g):
    """Static (1, *M, 1) array: how many taps of each window fall on the input."""
    total = np.ones((), np.float64)
    for n, (lo, _), m, s, k in zip(g.in_spatial, g.pads, g.out_spatial, g.stride, g.kernel):
        start = np.arange(m) * s - lo
        per_axis = np.minimum(start + k, n) - np.maximum(start, 0)
        total = np.multiply.outer(total, per_axis)
    return total[None, ..., None]


def _max_forward(x, g):
    return functools.reduce(jnp.maximum, window_slices(pad_to_used(x, g, -jnp.inf), g))


def _max_backward(x, y, dy, g):
    parts, taken = [], None
    for xs in window_slices(pad_to_used(x, g, -jnp.inf), g):
        hit = xs == y if taken is None else (xs == y) & ~taken  # first tap holding the max
        taken = hit if taken is None else taken | hit
        parts.append(jnp.where(hit, dy, 0).astype(dy.dtype))
    return scatter_windows(parts, g)


def _avg_forward(x, g):
    total = functools.reduce(jnp.add, window_slices(pad_to_used(x, g), g))
    return total / _counts(g).astype(x.dtype)


def _avg_backward(x, y, dy, g):
    share = dy / _counts(g).astype(dy.dtype)
    return scatter_windows([share] * len(g.taps), g)


_KINDS = {"max": (_max_forward, _max_backward), "avg": (_avg_forward, _avg_backward)}


def _pool(kind, ndim, window, stride, padding, dtype=None) -> Layer:
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
        y = pool_forward(x, geom(x.shape[1:-1]))
        return y, state, (x, y)

    def backward(params, cache, dy):
        x, y = cache
        return {}, pool_backward(x, y, dy, geom(x.shape[1:-1]))

    dtype = float_dtype(dtype, "dtype", f"{kind.title()}Pool{ndim}D", allow_none=True)
    return with_compute_dtype(Layer(f"{kind}pool{ndim}d", init, forward, backward, output_shape), dtype)


def MaxPool2D(window, stride=None, padding="VALID", *, dtype=None) -> Layer:
    """Max over (h, w) windows of NHWC input, per channel; ``stride`` defaults to ``window``.

    ``window``/``stride``: an int or an (h, w) pair; ``padding``: "VALID", "SAME", an int or
    ((top, bottom), (left, right)), each side smaller than the window. Raises ``ValueError``
    for a non-4-D input or a window larger than the padded input."""
    return _pool("max", 2, window, stride, padding, dtype)


def AvgPool2D(window, stride=None, padding="VALID", *, dtype=None) -> Layer:
    """Mean over (h, w) windows of NHWC input, per channel, padding excluded from the mean.
    Arguments as ``MaxPool2D``."""
    return _pool("avg", 2, window, stride, padding, dtype)


def MaxPool1D(window, stride=None, padding="VALID", *, dtype=None) -> Layer:
    """Max over windows of (batch, length, channels) input. Arguments as ``MaxPool2D``."""
    return _pool("max", 1, window, stride, padding, dtype)


def AvgPool1D(window, stride=None, padding="VALID", *, dtype=None) -> Layer:
    """Mean over windows of (batch, length, channels) input. Arguments as ``AvgPool2D``."""
    return _pool("avg", 1, window, stride, padding, dtype)


def GlobalAvgPool(*, dtype=None) -> Layer:
    """Mean over every spatial axis: (N, *S, C) -> (N, C) (e.g. NHWC or (N, L, C))."""
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
        return x.mean(axis=tuple(range(1, x.ndim - 1))), state, x  # only x.shape is used

    def backward(params, x, dy):
        shape = x.shape
        spatial = shape[1:-1]
        dx = jnp.broadcast_to(dy.reshape(dy.shape[0], *(1,) * len(spatial), dy.shape[-1]) / math.prod(spatial), shape)
        return {}, dx

    return with_compute_dtype(Layer("global_avg_pool", init, forward, backward, output_shape), dtype)
