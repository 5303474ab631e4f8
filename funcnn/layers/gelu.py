r"""GELU, the Gaussian error linear unit (Hendrycks & Gimpel, 2016), with both derivatives.

**Forward, exact form.** With $\Phi$ and $\varphi$ the standard normal CDF and density,

$$
y = x\, \Phi(x), \qquad \Phi(x) = \tfrac12 \left(1 + \operatorname{erf}(x / \sqrt2)\right).
$$

**Forward, tanh approximation** (GPT-2's, torch's `approximate="tanh"`), with $c = \sqrt{2/\pi}$:

$$
u = c\,(x + 0.044715\, x^3), \qquad t = \tanh u, \qquad y = \tfrac12\, x\, (1 + t).
$$

**Cache.** The input $x$.

**Backward.** Elementwise, $dx = dy \odot y'(x)$ with

$$
y'(x) = \Phi(x) + x\, \varphi(x), \quad \varphi(x) = \frac{e^{-x^2/2}}{\sqrt{2\pi}} \qquad \text{(exact)},
$$

$$
y'(x) = \tfrac12 (1 + t) + \tfrac12\, x\, (1 - t^2)\, c\, (1 + 3 \cdot 0.044715\, x^2) \qquad \text{(tanh)}.
$$
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.layer import Layer

_C = math.sqrt(2.0 / math.pi)
_A = 0.044715


def gelu_exact(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""$(x\Phi(x), \Phi(x) + x\varphi(x))$: the exact GELU and its slope, both of `x`'s shape."""
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, cdf + x * pdf


def gelu_tanh(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The tanh-approximated GELU and its slope (module docstring), both of `x`'s shape."""
    t = jnp.tanh(_C * (x + _A * x ** 3))
    return 0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3.0 * _A * x * x)


def gelu_forward(x: jax.Array, approximate: bool = False) -> tuple[jax.Array, jax.Array]:
    """GELU of `x` (any shape): returns `(y, cache)`, `y` of `x`'s shape, `cache` = `x`."""
    return (gelu_tanh if approximate else gelu_exact)(x)[0], x


def gelu_backward(dy: jax.Array, cache: jax.Array, approximate: bool = False) -> jax.Array:
    """`dx = dy * y'(x)`, of `dy`'s shape, from the forward's `cache` (its `x`)."""
    return dy * (gelu_tanh if approximate else gelu_exact)(cache)[1]


def GELU(approximate: bool = False, *, param_dtype: Any = jnp.float32, dtype: Any = None) -> Layer:
    r"""$x\,\Phi(x)$ elementwise (`approximate=True`: the tanh form); any shape -> the same shape.

    No params (`param_dtype` is accepted for a uniform signature); `dtype` is the compute dtype.

    **Raises:** `TypeError` for a non-bool `approximate`, a non-float input or dtype.
    """
    if not isinstance(approximate, bool):
        raise TypeError(f"GELU: approximate must be a bool, got {approximate!r}")
    _, dtype = layer_dtypes(param_dtype, dtype, "GELU")  # param_dtype: validated, GELU has no params

    def forward(params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"GELU: x must be a floating-point array, got dtype {jnp.result_type(x)}")
        y, cache = gelu_forward(x, approximate)
        return y, state, cache

    def backward(params, x, dy):
        return {}, gelu_backward(dy, x, approximate)

    layer = Layer("gelu_tanh" if approximate else "gelu", lambda key, s: ({}, {}), forward, backward,
                  lambda s: tuple(s))
    return with_compute_dtype(layer, dtype)
