r"""Group normalization (Wu & He, 2018): per example, channels split into $G$ groups.

**Forward.** For NHWC input (or any `(N, ..., C)`, channels last) with $C = G c$, each example's
values of one group -- every spatial position and the group's $c$ channels, $m$ values in
all -- are normalised together, then scaled and shifted per channel:

$$
\hat x = (x - \mu_g)\, s_g, \qquad s_g = (\sigma_g^2 + \epsilon)^{-1/2}, \qquad
y = \gamma_{ch} \hat x + \beta_{ch} .
$$

**Cache.** $\hat x$ (the input's shape) and $s_g$ (one per example and group).

**Backward** (LayerNorm's, with the group's $m$ values in place of the $D$ features):

$$
d\beta = \sum_{n, \text{space}} dy, \qquad d\gamma = \sum_{n, \text{space}} dy \odot \hat x, \qquad
dx = s_g \left(g - \overline{g}^{\,g} - \hat x\, \overline{g \hat x}^{\,g}\right), \quad g = \gamma \odot dy ,
$$

the bars $\overline{\cdot}^{\,g}$ being means over each group's $m$ values.

$G = 1$ is LayerNorm over (H, W, C); $G = C$ is instance normalization. The statistics and
the backward run in at least float32 (half-precision inputs are upcast inside).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.validate import positive_int
from funcnn.core.layer import Layer
from funcnn.layers.layernorm import affine_norm_backward, affine_norm_forward, float_input, positive_eps


def channels(shape: Any, groups: int) -> int:
    """The channel count C (last axis) of one example's `shape`; a one-line `ValueError` unless `groups` divides it."""
    shape = tuple(shape)
    if len(shape) < 1 or shape[-1] % groups:
        raise ValueError(f"GroupNorm: the last (channel) axis must be divisible by groups={groups}, "
                         f"got input_shape {shape}")
    return shape[-1]


def group_channels(a: jax.Array, groups: int) -> jax.Array:
    """`(N, ..., C)` -> `(N, S, G, C/G)`, S the product of the spatial axes: the statistics are over axes 1 and 3."""
    return a.reshape(a.shape[0], math.prod(a.shape[1:-1]), groups, a.shape[-1] // groups)


def GroupNorm(groups: int, eps: float = 1e-5, *, gamma_init: str | Callable = "ones",
              beta_init: str | Callable = "zeros", param_dtype: Any = jnp.float32, dtype: Any = None) -> Layer:
    """Normalise each example over groups of channels (channels last), then per-channel affine.

    Input `(batch, ..., C)` with C divisible by `groups` -> the same shape; params
    `{"gamma": (C,), "beta": (C,)}` in `param_dtype`; `dtype` is the compute dtype, the
    statistics always in at least float32 (half-precision inputs are upcast inside).
    Equal to `torch.nn.GroupNorm(groups, C)` on the NCHW transpose.

    **Raises:** `ValueError` for a non-positive `groups` or eps, or channels not divisible
    by `groups`; `TypeError` for a non-float input or dtype.
    """
    positive_int(groups, "groups", "GroupNorm")
    eps = positive_eps(eps, "GroupNorm")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "GroupNorm")
    gamma_init = initializers.get(gamma_init, "gamma_init")
    beta_init = initializers.get(beta_init, "beta_init")
    grouped = functools.partial(group_channels, groups=groups)

    def init(key, input_shape):
        c = channels(input_shape, groups)
        kg, kb = jax.random.split(key)
        return {"gamma": gamma_init(kg, (c,), c, c, dtype=param_dtype),
                "beta": beta_init(kb, (c,), c, c, dtype=param_dtype)}, {}

    def output_shape(input_shape):
        channels(input_shape, groups)
        return tuple(input_shape)

    def forward(params, state, x, *, key=None, train=False):
        float_input(x, "GroupNorm")
        c = params["gamma"].shape[0]
        if jnp.ndim(x) < 2 or jnp.shape(x)[-1] != c:
            raise ValueError(f"GroupNorm: x must have shape (batch, ..., {c}), got {jnp.shape(x)}")
        y, cache = affine_norm_forward(params, x, (1, 3), eps, grouped)
        return y, state, cache

    def backward(params, cache, dy):
        return affine_norm_backward(params, cache, dy, (1, 3), grouped)

    return with_compute_dtype(Layer("groupnorm", init, forward, backward, output_shape), dtype)
