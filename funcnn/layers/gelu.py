"""GELU, the Gaussian error linear unit (Hendrycks & Gimpel, 2016), with both derivatives.

Exact form, with Phi and phi the standard normal CDF and density:

    y = x Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2,
    dy/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi).

Tanh approximation (GPT-2's, torch's ``approximate="tanh"``), with c = sqrt(2 / pi):

    u = c (x + 0.044715 x^3),   t = tanh u,   y = x (1 + t) / 2,
    dy/dx = (1 + t) / 2 + x (1 - t^2) c (1 + 3 * 0.044715 x^2) / 2.

Elementwise, so the backward is dx = dy * dy/dx.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import erf

from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.layer import Layer

_C = math.sqrt(2.0 / math.pi)
_A = 0.044715


def _exact(x):
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, cdf + x * pdf


def _tanh(x):
    t = jnp.tanh(_C * (x + _A * x ** 3))
    return 0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3.0 * _A * x * x)


def GELU(approximate: bool = False, *, param_dtype=jnp.float32, dtype=None) -> Layer:
    """``x Phi(x)`` elementwise (``approximate=True``: the tanh form). No params
    (``param_dtype`` is accepted for a uniform signature); ``dtype`` is the compute dtype.

    Raises ``TypeError`` for a non-bool ``approximate``, a non-float input or dtype.
    """
    if not isinstance(approximate, bool):
        raise TypeError(f"GELU: approximate must be a bool, got {approximate!r}")
    _, dtype = layer_dtypes(param_dtype, dtype, "GELU")  # param_dtype: validated, GELU has no params
    value_and_slope = _tanh if approximate else _exact

    def forward(params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"GELU: x must be a floating-point array, got dtype {jnp.result_type(x)}")
        y, _ = value_and_slope(x)
        return y, state, x

    def backward(params, x, dy):
        return {}, dy * value_and_slope(x)[1]

    layer = Layer("gelu_tanh" if approximate else "gelu", lambda key, s: ({}, {}), forward, backward,
                  lambda s: tuple(s))
    return with_compute_dtype(layer, dtype)
